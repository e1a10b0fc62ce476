// Pipe: length-prefixed frames over an AF_UNIX stream socketpair, with read-ahead so a
// small message costs one system call on each side.
#include <shmpipe/detail/demangle.hpp>
#include <shmpipe/pipe.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace shmpipe {
namespace {

// A frame: u32 payload length, u64 type tag (0 = untyped bytes), then the payload.
constexpr std::size_t kLength = sizeof(std::uint32_t);
constexpr std::size_t kHeader = kLength + sizeof(std::uint64_t);
constexpr std::size_t kReadAhead = std::size_t{64} << 10;   // bytes read per system call at most
constexpr std::size_t kKeepBuffer = std::size_t{1} << 20;   // larger buffers are freed after use

void check_max(std::size_t max_message, const char* verb) {
    if (max_message == 0 || max_message > 0xffff'ffffull) {
        throw Error(errc::invalid_argument, std::string(verb) + " pipe: max_message must be 1.." +
                                                std::to_string(0xffff'ffffull) + " bytes, got " +
                                                std::to_string(max_message));
    }
}

}  // namespace

Pipe::Pipe(int fd, std::size_t max_message, bool can_send, bool can_recv)
    : fd_(fd), max_message_(max_message), can_send_(can_send), can_recv_(can_recv) {}

std::pair<Pipe, Pipe> Pipe::create(const PipeOptions& options) {
    check_max(options.max_message, "create");
    int sv[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        throw Error::from_errno(errno, "create pipe: socketpair failed (too many open files?)");
    }
    if (!options.duplex) {
        // Like Python's Pipe(duplex=False): the first end only receives, the second only sends.
        ::shutdown(sv[0], SHUT_WR);
        ::shutdown(sv[1], SHUT_RD);
    }
    return {Pipe(sv[0], options.max_message, options.duplex, true),
            Pipe(sv[1], options.max_message, true, options.duplex)};
}

Pipe Pipe::from_fd(int fd, const PipeOptions& options) {
    check_max(options.max_message, "open");
    const std::string what = "open pipe from descriptor " + std::to_string(fd) + ": ";
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
        throw Error(errc::invalid_argument, what + "it is not an open descriptor (was it inherited? "
                                                   "call set_inheritable(true) before exec)");
    }
    int type = 0;
    int domain = 0;
    socklen_t len = sizeof type;
    const bool is_socket = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    len = sizeof domain;
    if (!is_socket || ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || type != SOCK_STREAM ||
        domain != AF_UNIX) {
        throw Error(errc::invalid_argument, what + "it is not an end of a shmpipe::Pipe (not an AF_UNIX stream socket)");
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // ours now: do not leak it into further children
    return Pipe(fd, options.max_message, true, true);
}

Pipe::Pipe(Pipe&& other) noexcept { *this = std::move(other); }

Pipe& Pipe::operator=(Pipe&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        max_message_ = other.max_message_;
        can_send_ = other.can_send_;
        can_recv_ = other.can_recv_;
        wbuf_ = std::move(other.wbuf_);
        rbuf_ = std::move(other.rbuf_);
        rpos_ = std::exchange(other.rpos_, 0);
        rend_ = std::exchange(other.rend_, 0);
        big_ = std::move(other.big_);
        pending_ = std::exchange(other.pending_, 0);
        pending_big_ = std::exchange(other.pending_big_, false);
        rtag_ = std::exchange(other.rtag_, 0);
    }
    return *this;
}

Pipe::~Pipe() { close(); }

void Pipe::close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    rpos_ = rend_ = pending_ = 0;
    pending_big_ = false;
    rbuf_ = {};
    wbuf_ = {};
    big_ = {};
}

int Pipe::release() noexcept {
    const int fd = std::exchange(fd_, -1);
    close();
    return fd;
}

void Pipe::set_inheritable(bool inheritable) {
    if (fd_ < 0) fail(errc::invalid_state, "set_inheritable on", "this end is closed");
    if (::fcntl(fd_, F_SETFD, inheritable ? 0 : FD_CLOEXEC) != 0) {
        throw Error::from_errno(errno, "set_inheritable on pipe (fd " + std::to_string(fd_) + ")");
    }
}

void Pipe::fail(errc code, const char* verb, const std::string& detail) const {
    throw Error(code, std::string(verb) + " pipe (fd " + std::to_string(fd_) + "): " + detail);
}

std::span<std::byte> Pipe::begin_send(std::size_t n, std::uint64_t tag) {
    if (fd_ < 0) fail(errc::invalid_state, "send on", "this end is closed");
    if (!can_send_) fail(errc::invalid_state, "send on", "this end only receives (Pipe created with duplex = false)");
    if (n > max_message_) {
        fail(errc::message_too_large, "send on", "a message of " + std::to_string(n) +
                                                     " bytes is larger than max_message (" +
                                                     std::to_string(max_message_) + " bytes)");
    }
    if (wbuf_.size() < kHeader + n) wbuf_.resize(std::max(kHeader + n, std::size_t{256}));
    const auto len = static_cast<std::uint32_t>(n);
    std::memcpy(wbuf_.data(), &len, kLength);
    std::memcpy(wbuf_.data() + kLength, &tag, sizeof tag);
    return {wbuf_.data() + kHeader, n};
}

void Pipe::check_type(std::uint64_t want, const char* mangled_name) const {
    if (want == 0 || rtag_ == 0 || want == rtag_) return;
    fail(errc::type_mismatch, "recv on",
         "the message was sent as another type than " + detail::demangle(mangled_name) + " (type tag " +
             std::to_string(rtag_) + ", expected " + std::to_string(want) +
             "); it was discarded (receive it as the type the sender used)");
}

void Pipe::finish_send(std::size_t n) {
    const std::byte* p = wbuf_.data();
    std::size_t left = kHeader + n;
    while (left > 0) {
        const ssize_t w = ::send(fd_, p, left, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE || errno == ECONNRESET) {
                fail(errc::closed, "send on", "the other end was closed or its process died");
            }
            throw Error::from_errno(errno, "send on pipe (fd " + std::to_string(fd_) + ")");
        }
        p += w;
        left -= static_cast<std::size_t>(w);
    }
    if (wbuf_.size() > kKeepBuffer) wbuf_ = {};
}

void Pipe::send_bytes(std::span<const std::byte> bytes) {
    auto out = begin_send(bytes.size(), 0);
    if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    finish_send(bytes.size());
}

// Makes at least `want` unread bytes available in rbuf_. False only at a clean end of
// stream (nothing buffered and not inside a message).
bool Pipe::fill(std::size_t want, bool mid_message) {
    if (rbuf_.size() < kReadAhead) rbuf_.resize(kReadAhead);
    if (rpos_ == rend_) rpos_ = rend_ = 0;
    if (rpos_ + want > rbuf_.size()) {  // compact: move the unread tail to the front
        std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
        rend_ -= rpos_;
        rpos_ = 0;
    }
    while (rend_ - rpos_ < want) {
        const ssize_t r = ::read(fd_, rbuf_.data() + rend_, rbuf_.size() - rend_);
        if (r > 0) {
            rend_ += static_cast<std::size_t>(r);
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 || errno == ECONNRESET) {
            if (!mid_message && rend_ == rpos_) return false;
            fail(errc::closed, "recv on", "the other end closed or died in the middle of a message");
        }
        throw Error::from_errno(errno, "recv on pipe (fd " + std::to_string(fd_) + ")");
    }
    return true;
}

std::span<const std::byte> Pipe::next_message() {
    if (fd_ < 0) fail(errc::invalid_state, "recv on", "this end is closed");
    if (!can_recv_) fail(errc::invalid_state, "recv on", "this end only sends (Pipe created with duplex = false)");
    if (pending_ != 0 || pending_big_) consume_message();
    if (!fill(kHeader, false)) {
        fail(errc::closed, "recv on", "the other end was closed or its process died (no more messages)");
    }
    std::uint32_t n = 0;
    std::memcpy(&n, rbuf_.data() + rpos_, kLength);
    std::memcpy(&rtag_, rbuf_.data() + rpos_ + kLength, sizeof rtag_);
    rpos_ += kHeader;
    if (n > max_message_) {
        // Drop the frame so the stream stays in step, then refuse it.
        std::size_t left = n;
        while (left > 0) {
            if (rpos_ == rend_ && !fill(1, true)) break;
            const std::size_t take = std::min(left, rend_ - rpos_);
            rpos_ += take;
            left -= take;
        }
        fail(errc::message_too_large, "recv on", "received a message of " + std::to_string(n) +
                                                     " bytes, above this end's max_message (" +
                                                     std::to_string(max_message_) + " bytes); it was discarded");
    }
    if (kHeader + n <= kReadAhead) {
        fill(n, true);
        pending_ = n;
        return {rbuf_.data() + rpos_, n};
    }
    // Larger than the read-ahead buffer: assemble it separately.
    big_.resize(n);
    const std::size_t have = std::min<std::size_t>(rend_ - rpos_, n);
    std::memcpy(big_.data(), rbuf_.data() + rpos_, have);
    rpos_ += have;
    std::size_t got = have;
    while (got < n) {
        const ssize_t r = ::read(fd_, big_.data() + got, n - got);
        if (r > 0) {
            got += static_cast<std::size_t>(r);
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 || errno == ECONNRESET) {
            fail(errc::closed, "recv on", "the other end closed or died in the middle of a message");
        }
        throw Error::from_errno(errno, "recv on pipe (fd " + std::to_string(fd_) + ")");
    }
    pending_big_ = true;
    return {big_.data(), n};
}

void Pipe::consume_message() noexcept {
    if (pending_big_) {
        if (big_.capacity() > kKeepBuffer) {
            big_ = {};
        } else {
            big_.clear();
        }
        pending_big_ = false;
    } else {
        rpos_ += pending_;
    }
    pending_ = 0;
}

bool Pipe::poll_ns(std::chrono::nanoseconds timeout) {
    if (fd_ < 0) fail(errc::invalid_state, "poll on", "this end is closed");
    if (pending_ != 0 || pending_big_) consume_message();
    if (rend_ > rpos_) return true;
    pollfd p{fd_, POLLIN, 0};
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout.count() >= 0) {
        ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
        tsp = &ts;
    }
    for (;;) {
        const int r = ::ppoll(&p, 1, tsp, nullptr);
        if (r >= 0) return r > 0;
        if (errno != EINTR) throw Error::from_errno(errno, "poll on pipe (fd " + std::to_string(fd_) + ")");
    }
}

}  // namespace shmpipe
