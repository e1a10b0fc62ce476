// The bridge protocol's frames: one encoder and one decoder, shared by both ends.
//
// Every frame is one ZeroMQ message (the ROUTER side also sees the peer's routing id in
// front). All integers are little-endian, fixed width. A frame opens with a 4-byte header:
//   u16 magic 0x5350 ("SP") | u8 version (kProtocolVersion) | u8 type
// then, by type (docs/architecture.md, "Bridge protocol", draws the state machine):
//   hello      sender -> receiver   u64 sender_id | u8 n + host | u8 n + edge name
//   data       sender -> receiver   u64 seq | u32 count | count x (u32 len | len bytes)
//   end        sender -> receiver   u64 seq           (after every data batch before it)
//   credit     receiver -> sender   u64 acked_seq | u64 credit_limit
//   heartbeat  both ways            (no body)
//   refuse     receiver -> sender   u8 n + reason
//   status     launcher -> launcher u8 n + host | u8 n + run | u8 state | u8 n + reason
//              (Link, link.hpp: liveness and the run-wide state, sent with every heartbeat)
// Network input is untrusted: decode_frame() checks every length against what is left and
// the whole frame is consumed exactly; anything else is a malformed frame with a reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe::net {

inline constexpr std::uint16_t kFrameMagic = 0x5350;
inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kFrameHeader = 4;
inline constexpr std::size_t kMaxNameLength = 200;  // host and queue names

enum class FrameType : std::uint8_t { hello = 1, data, end, credit, heartbeat, refuse, status };
std::string_view to_string(FrameType t) noexcept;

// A decoded frame. Views point into the buffer given to decode_frame(); they live as long
// as it does. Only the fields of `type` are meaningful.
struct Frame {
    FrameType type = FrameType::heartbeat;
    std::uint64_t sender_id = 0;            // hello
    std::string_view host, queue, reason;   // hello (host, queue), refuse (reason), status (host, reason)
    std::string_view run;                   // status
    std::uint8_t state = 0;                 // status: a RunState (link.hpp), checked by the Link
    std::uint64_t seq = 0;                  // data, end
    std::uint64_t acked_seq = 0, credit_limit = 0;        // credit
    std::vector<std::span<const std::byte>> messages;     // data
};

// The outcome of decoding: ok, or the reason a frame was malformed.
struct DecodeResult {
    bool ok = false;
    std::string reason;  // empty when ok, e.g. "data message 3 of 5: length 900 past the frame end"
};

// Decodes `bytes` into `out` (reusing its vector's storage). Never throws on bad input and
// never reads outside `bytes`. A data frame with more than `max_messages` messages or a
// message longer than `max_message` bytes is malformed.
DecodeResult decode_frame(std::span<const std::byte> bytes, Frame& out, std::size_t max_message,
                          std::size_t max_messages);

// Encoders append one whole frame to `out` (cleared first).
void encode_hello(std::vector<std::byte>& out, std::uint64_t sender_id, std::string_view host,
                  std::string_view queue);
void encode_credit(std::vector<std::byte>& out, std::uint64_t acked_seq, std::uint64_t credit_limit);
void encode_end(std::vector<std::byte>& out, std::uint64_t seq);
void encode_heartbeat(std::vector<std::byte>& out);
void encode_refuse(std::vector<std::byte>& out, std::string_view reason);
void encode_status(std::vector<std::byte>& out, std::string_view host, std::string_view run, std::uint8_t state,
                   std::string_view reason);

// A data frame built message by message: begin, add, finish (which patches the count).
class DataFrameBuilder {
public:
    void begin(std::uint64_t seq);
    void add(std::span<const std::byte> message);
    std::span<const std::byte> finish();
    std::uint32_t count() const noexcept { return count_; }
    std::size_t size() const noexcept { return buf_.size(); }
    std::vector<std::byte>& buffer() noexcept { return buf_; }

private:
    std::vector<std::byte> buf_;
    std::uint32_t count_ = 0;
};

// Bytes a data frame of messages of these sizes takes, header included.
inline constexpr std::size_t kDataFrameOverhead = kFrameHeader + 8 + 4;
inline constexpr std::size_t kPerMessageOverhead = 4;

}  // namespace shmpipe::net
