// The bridge protocol's single frame decoder and its encoders (frame.hpp has the format).
#include <shmpipe/net/frame.hpp>

#include <cstring>

namespace shmpipe::net {

std::string_view to_string(FrameType t) noexcept {
    switch (t) {
    case FrameType::hello: return "hello";
    case FrameType::data: return "data";
    case FrameType::end: return "end";
    case FrameType::credit: return "credit";
    case FrameType::heartbeat: return "heartbeat";
    case FrameType::refuse: return "refuse";
    case FrameType::status: return "status";
    }
    return "unknown";
}

namespace {

// Reads fixed-width little-endian fields from an untrusted buffer; every read checks what
// is left first, and the first failure sticks (later reads return 0, ok() stays false).
class Reader {
public:
    explicit Reader(std::span<const std::byte> b) : b_(b) {}
    bool ok() const noexcept { return ok_; }
    std::size_t left() const noexcept { return b_.size() - pos_; }

    template <class T>
    T get() noexcept {
        if (!ok_ || left() < sizeof(T)) {
            ok_ = false;
            return 0;
        }
        T v = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i)
            v = static_cast<T>(v | static_cast<T>(static_cast<T>(b_[pos_ + i]) << (8 * i)));
        pos_ += sizeof(T);
        return v;
    }
    std::span<const std::byte> bytes(std::size_t n) noexcept {
        if (!ok_ || left() < n) {
            ok_ = false;
            return {};
        }
        auto s = b_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::string_view short_string() noexcept {
        const auto n = get<std::uint8_t>();
        auto s = bytes(n);
        return {reinterpret_cast<const char*>(s.data()), s.size()};
    }

private:
    std::span<const std::byte> b_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

template <class T>
void put(std::vector<std::byte>& out, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
}

void put_header(std::vector<std::byte>& out, FrameType t) {
    out.clear();
    put<std::uint16_t>(out, kFrameMagic);
    put<std::uint8_t>(out, kProtocolVersion);
    put<std::uint8_t>(out, static_cast<std::uint8_t>(t));
}

void put_short_string(std::vector<std::byte>& out, std::string_view s) {
    const auto n = s.size() > 255 ? std::size_t{255} : s.size();
    put<std::uint8_t>(out, static_cast<std::uint8_t>(n));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + n);
}

DecodeResult bad(std::string reason) { return {false, std::move(reason)}; }

bool printable_name(std::string_view s) {
    if (s.empty() || s.size() > kMaxNameLength) return false;
    for (char c : s)
        if (c < 0x21 || c > 0x7e) return false;
    return true;
}

}  // namespace

DecodeResult decode_frame(std::span<const std::byte> bytes, Frame& out, std::size_t max_message,
                          std::size_t max_messages) {
    Reader r(bytes);
    const auto magic = r.get<std::uint16_t>();
    const auto version = r.get<std::uint8_t>();
    const auto type = r.get<std::uint8_t>();
    if (!r.ok()) return bad("frame of " + std::to_string(bytes.size()) + " bytes is shorter than its header");
    if (magic != kFrameMagic) return bad("bad magic " + std::to_string(magic) + " (not a shmpipe bridge peer?)");
    if (version != kProtocolVersion)
        return bad("protocol version " + std::to_string(version) + ", expected " + std::to_string(kProtocolVersion));
    if (type < static_cast<std::uint8_t>(FrameType::hello) || type > static_cast<std::uint8_t>(FrameType::status))
        return bad("unknown frame type " + std::to_string(type));
    out.type = static_cast<FrameType>(type);
    out.messages.clear();
    const std::string what(to_string(out.type));
    switch (out.type) {
    case FrameType::hello:
        out.sender_id = r.get<std::uint64_t>();
        out.host = r.short_string();
        out.queue = r.short_string();
        if (r.ok() && (!printable_name(out.host) || !printable_name(out.queue)))
            return bad("hello: host or queue name empty, too long or not printable");
        break;
    case FrameType::data: {
        out.seq = r.get<std::uint64_t>();
        const auto count = r.get<std::uint32_t>();
        if (!r.ok()) break;
        if (count == 0) return bad("data frame without messages");
        if (count > max_messages)
            return bad("data frame of " + std::to_string(count) + " messages, more than the " +
                       std::to_string(max_messages) + " allowed");
        // Each message takes at least its 4-byte length: a count the frame cannot hold is
        // refused before anything is reserved for it.
        if (count > r.left() / kPerMessageOverhead)
            return bad("data frame claims " + std::to_string(count) + " messages in " + std::to_string(r.left()) + " bytes");
        out.messages.reserve(count);
        for (std::uint32_t i = 0; i < count; ++i) {
            const auto len = r.get<std::uint32_t>();
            if (r.ok() && len > max_message)
                return bad("data message " + std::to_string(i + 1) + " of " + std::to_string(count) + ": " +
                           std::to_string(len) + " bytes, more than the queue's max_message " + std::to_string(max_message));
            auto m = r.bytes(len);
            if (!r.ok())
                return bad("data message " + std::to_string(i + 1) + " of " + std::to_string(count) + ": length " +
                           std::to_string(len) + " past the frame end");
            out.messages.push_back(m);
        }
        break;
    }
    case FrameType::end: out.seq = r.get<std::uint64_t>(); break;
    case FrameType::credit:
        out.acked_seq = r.get<std::uint64_t>();
        out.credit_limit = r.get<std::uint64_t>();
        break;
    case FrameType::heartbeat: break;
    case FrameType::refuse: out.reason = r.short_string(); break;
    case FrameType::status:
        out.host = r.short_string();
        out.run = r.short_string();
        out.state = r.get<std::uint8_t>();
        out.reason = r.short_string();
        if (r.ok() && (!printable_name(out.host) || !printable_name(out.run)))
            return bad("status: host or run name empty, too long or not printable");
        break;
    }
    if (!r.ok()) return bad(what + " frame truncated (" + std::to_string(bytes.size()) + " bytes)");
    if (r.left() != 0) return bad(what + " frame has " + std::to_string(r.left()) + " trailing bytes");
    return {true, {}};
}

void encode_hello(std::vector<std::byte>& out, std::uint64_t sender_id, std::string_view host, std::string_view queue) {
    put_header(out, FrameType::hello);
    put<std::uint64_t>(out, sender_id);
    put_short_string(out, host);
    put_short_string(out, queue);
}

void encode_credit(std::vector<std::byte>& out, std::uint64_t acked_seq, std::uint64_t credit_limit) {
    put_header(out, FrameType::credit);
    put<std::uint64_t>(out, acked_seq);
    put<std::uint64_t>(out, credit_limit);
}

void encode_end(std::vector<std::byte>& out, std::uint64_t seq) {
    put_header(out, FrameType::end);
    put<std::uint64_t>(out, seq);
}

void encode_heartbeat(std::vector<std::byte>& out) { put_header(out, FrameType::heartbeat); }

void encode_refuse(std::vector<std::byte>& out, std::string_view reason) {
    put_header(out, FrameType::refuse);
    put_short_string(out, reason);
}

void encode_status(std::vector<std::byte>& out, std::string_view host, std::string_view run, std::uint8_t state,
                   std::string_view reason) {
    put_header(out, FrameType::status);
    put_short_string(out, host);
    put_short_string(out, run);
    put<std::uint8_t>(out, state);
    put_short_string(out, reason);
}

void DataFrameBuilder::begin(std::uint64_t seq) {
    put_header(buf_, FrameType::data);
    put<std::uint64_t>(buf_, seq);
    put<std::uint32_t>(buf_, 0);  // the count, patched by finish()
    count_ = 0;
}

void DataFrameBuilder::add(std::span<const std::byte> message) {
    put<std::uint32_t>(buf_, static_cast<std::uint32_t>(message.size()));
    buf_.insert(buf_.end(), message.begin(), message.end());
    ++count_;
}

std::span<const std::byte> DataFrameBuilder::finish() {
    for (std::size_t i = 0; i < 4; ++i)
        buf_[kFrameHeader + 8 + i] = static_cast<std::byte>((count_ >> (8 * i)) & 0xff);
    return buf_;
}

}  // namespace shmpipe::net
