// A two-ended message pipe between related processes (like multiprocessing.Pipe()).
//
//   auto [a, b] = shmpipe::Pipe::create();          // duplex: both ends send and receive
//   if (fork() == 0) { a.close(); b.send(to_upper(b.recv<std::string>())); _exit(0); }
//   b.close();  a.send(std::string("hello"));  a.recv<std::string>();  // "HELLO"
//
// Messages are framed (u32 length, u64 type tag, then the Codec<T> encoding, see codec.hpp)
// over an AF_UNIX stream socketpair, so the kernel reports a peer that closed or died:
// recv() then throws Error(errc::closed). Values of any codable T; the receiver names the
// type it expects, and recv<T>() of a message sent as another type throws
// Error(errc::type_mismatch) (the message is consumed: the next recv gets the next one).
// The tag is type_tag<T>() (both ends must be built by one compiler, as for queues);
// send_bytes / recv_bytes are untyped (tag 0) and pair with any type, as raw bytes.
//
// Across fork: both processes hold both ends; close the end you do not use (the peer only
// sees "closed" once every copy of the other end is closed). Across exec: make an end
// inheritable (set_inheritable(true)), pass fd() to the child program (argv or env), and
// rebuild it there with Pipe::from_fd(fd). Ends are close-on-exec by default.
//
// Limits: messages above max_message (default 64 MiB) are refused by send() with
// errc::message_too_large; a receiver with a smaller max_message discards such a frame and
// throws the same error (the stream stays in step). One end is not thread-safe; use one
// per thread (like a Python Connection).
// Not a named object: a pipe lives in the kernel, not in /dev/shm.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/deadline.hpp>
#include <shmpipe/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace shmpipe {

inline constexpr std::size_t kPipeDefaultMaxMessage = std::size_t{64} << 20;

struct PipeOptions {
    bool duplex = true;                            // false: first end receives, second sends
    std::size_t max_message = kPipeDefaultMaxMessage;  // 1 .. 2^32 - 1 bytes
};

class Pipe {
public:
    // Two connected ends. Throws Error (errno-based) if the socketpair cannot be made,
    // invalid_argument for a bad max_message.
    static std::pair<Pipe, Pipe> create(const PipeOptions& options = {});
    // Takes ownership of an inherited descriptor (a socket made by create()). Throws
    // Error(invalid_argument) if fd is not an AF_UNIX stream socket.
    static Pipe from_fd(int fd, const PipeOptions& options = {});

    Pipe() = default;
    Pipe(Pipe&& other) noexcept;
    Pipe& operator=(Pipe&& other) noexcept;
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
    ~Pipe();

    // Blocks while the socket buffer is full. Throws Error: closed (the other end is gone),
    // message_too_large, invalid_state (this end is closed or receive-only).
    template <class T>
    void send(const T& value) {
        static_assert(is_codable_v<T>, "Pipe::send: no shmpipe::Codec for this type");
        const std::size_t n = Codec<T>::size(value);
        auto out = begin_send(n, tag_of<T>());
        Codec<T>::encode(value, out);
        finish_send(n);
    }
    void send_bytes(std::span<const std::byte> bytes);

    // Blocks until a whole message arrives. Throws Error: closed (the other end closed or
    // died, and everything it sent has been received), message_too_large, type_mismatch
    // (sent as another type, or decode failed), invalid_state.
    template <class T>
    T recv() {
        static_assert(is_codable_v<T>, "Pipe::recv: no shmpipe::Codec for this type");
        const auto in = next_message();
        struct Consume {  // the message is gone even if decoding throws
            Pipe* pipe;
            ~Consume() { pipe->consume_message(); }
        } consume{this};
        check_type(tag_of<T>(), typeid(T).name());
        return Codec<T>::decode(in);
    }
    Bytes recv_bytes() { return recv<Bytes>(); }

    // Whether recv() would not block (a message, or the end of the stream, is ready).
    bool poll() { return poll_ns(std::chrono::nanoseconds(0)); }
    template <class Rep, class Period>
    bool poll(std::chrono::duration<Rep, Period> timeout) {
        return poll_ns(detail::timeout_ns(timeout));
    }

    void close() noexcept;
    bool closed() const noexcept { return fd_ < 0; }
    int fd() const noexcept { return fd_; }
    // Clears (true) or sets (false) close-on-exec on fd().
    void set_inheritable(bool inheritable);
    // Gives up ownership of the descriptor (returns it; this end becomes closed).
    int release() noexcept;
    bool can_send() const noexcept { return fd_ >= 0 && can_send_; }
    bool can_recv() const noexcept { return fd_ >= 0 && can_recv_; }
    std::size_t max_message() const noexcept { return max_message_; }

private:
    template <class T>
    static std::uint64_t tag_of() noexcept {
        return std::is_same_v<T, Bytes> ? 0 : type_tag<T>();
    }
    Pipe(int fd, std::size_t max_message, bool can_send, bool can_recv);
    std::span<std::byte> begin_send(std::size_t n, std::uint64_t tag);
    // Throws Error(type_mismatch) when the current message was sent as another type.
    void check_type(std::uint64_t want, const char* mangled_name) const;
    void finish_send(std::size_t n);
    std::span<const std::byte> next_message();
    void consume_message() noexcept;
    bool poll_ns(std::chrono::nanoseconds timeout);
    bool fill(std::size_t want, bool mid_message);
    [[noreturn]] void fail(errc code, const char* verb, const std::string& detail) const;

    int fd_ = -1;
    std::size_t max_message_ = kPipeDefaultMaxMessage;
    bool can_send_ = true;
    bool can_recv_ = true;
    std::vector<std::byte> wbuf_;      // header + encoded message being sent
    std::vector<std::byte> rbuf_;      // bytes read ahead from the socket
    std::size_t rpos_ = 0;             // first unread byte in rbuf_
    std::size_t rend_ = 0;             // end of read bytes in rbuf_
    std::vector<std::byte> big_;       // a message larger than rbuf_
    std::size_t pending_ = 0;          // bytes of the current message to drop from rbuf_
    bool pending_big_ = false;
    std::uint64_t rtag_ = 0;           // type tag of the current message
};

}  // namespace shmpipe
