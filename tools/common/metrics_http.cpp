// The /metrics responder: one non-blocking listening socket and at most kMaxConnections
// connections, each a small state machine (reading the request head, then writing the whole
// response), all driven by one poll() per call. See metrics_http.hpp for the limits.
#include "metrics_http.hpp"

#include "cli_util.hpp"

#include <shmpipe/error.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "metrics_text.hpp"

namespace shmpipe::metrics {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kDrainTimeout{1000};

class Fd {
public:
    explicit Fd(int fd = -1) noexcept : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_;
};

struct Connection {
    Fd fd;
    Clock::time_point deadline;
    std::string in;       // the request head so far
    std::string out;      // the response, once decided
    std::size_t sent = 0;
    bool responding = false;
    // After the response: our side is shut down and what the client still sends is read and
    // dropped until it closes (or the deadline), so that closing never resets the connection
    // before the client has read the response (a 431 leaves unread request bytes behind).
    bool draining = false;
};

std::string response(int status, std::string_view reason, std::string_view content_type, const std::string& body,
                     bool head_only, std::string_view extra_header = {}) {
    std::string r = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
    r += "Content-Type: " + std::string(content_type) + "\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    r += "Connection: close\r\n";
    if (!extra_header.empty()) r.append(extra_header).append("\r\n");
    r += "\r\n";
    if (!head_only) r += body;
    return r;
}

std::string plain(int status, std::string_view reason, std::string_view text, bool head_only = false,
                  std::string_view extra_header = {}) {
    return response(status, reason, "text/plain; charset=utf-8", std::string(text) + "\n", head_only, extra_header);
}

bool is_token_char(char c) {
    return c > 32 && c < 127;
}

}  // namespace

ListenAddress parse_listen_address(std::string_view text) {
    const auto bad = [&](std::string_view why) {
        return cli::UsageError("listen address \"" + std::string(text) + "\": " + std::string(why) +
                               " (expected HOST:PORT, [IPV6]:PORT or :PORT, e.g. 127.0.0.1:9464)");
    };
    ListenAddress a;
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') throw bad("bad brackets");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) throw bad("no port");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) throw bad("an IPv6 address needs brackets");
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535) {
        throw bad("the port must be a number from 0 to 65535");
    }
    a.port = static_cast<std::uint16_t>(value);
    a.host = host.empty() || host == "localhost" ? "127.0.0.1" : std::string(host);
    in_addr v4{};
    in6_addr v6{};
    if (::inet_pton(AF_INET, a.host.c_str(), &v4) == 1) {
        a.loopback = (ntohl(v4.s_addr) >> 24) == 127;
    } else if (::inet_pton(AF_INET6, a.host.c_str(), &v6) == 1) {
        a.loopback = IN6_IS_ADDR_LOOPBACK(&v6);
    } else {
        throw bad("the host must be a numeric IPv4 or IPv6 address, or localhost");
    }
    return a;
}

struct HttpServer::Impl {
    ListenAddress address;
    std::function<std::string()> render;
    Fd listener;
    std::uint16_t bound_port = 0;
    std::vector<Connection> connections;

    void accept_all() {
        for (;;) {
            const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;  // EAGAIN, or a transient error (ECONNABORTED, EMFILE): try next poll
            if (connections.size() >= kMaxConnections) connections.erase(connections.begin());  // oldest
            Connection c;
            c.fd = Fd(fd);
            c.deadline = Clock::now() + kRequestTimeout;
            connections.push_back(std::move(c));
        }
    }

    // Decides the response once the head is complete (or can never be).
    void decide(Connection& c) {
        const auto end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) {
            if (c.in.size() >= kMaxRequest) respond(c, plain(431, "Request Header Fields Too Large", "request too large"));
            return;
        }
        const auto line_end = c.in.find("\r\n");
        const std::string_view line(c.in.data(), line_end);
        const auto sp1 = line.find(' ');
        const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
            respond(c, plain(400, "Bad Request", "malformed request line"));
            return;
        }
        const std::string_view method = line.substr(0, sp1);
        std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        const std::string_view version = line.substr(sp2 + 1);
        for (const char ch : line) {
            if (ch != ' ' && !is_token_char(ch)) {
                respond(c, plain(400, "Bad Request", "malformed request line"));
                return;
            }
        }
        if (version != "HTTP/1.1" && version != "HTTP/1.0") {
            respond(c, plain(505, "HTTP Version Not Supported", "HTTP/1.0 or HTTP/1.1 only"));
            return;
        }
        const bool head = method == "HEAD";
        if (method != "GET" && !head) {
            respond(c, plain(405, "Method Not Allowed", "GET or HEAD only", false, "Allow: GET, HEAD"));
            return;
        }
        if (const auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
        if (target == "/metrics") {
            std::string body;
            try {
                body = render();
            } catch (const std::exception& e) {
                respond(c, plain(500, "Internal Server Error", std::string("could not collect metrics: ") + e.what(), head));
                return;
            }
            respond(c, response(200, "OK", kContentType, body, head));
        } else if (target == "/") {
            respond(c, plain(200, "OK", "shmpipe metrics exporter: see /metrics", head));
        } else {
            respond(c, plain(404, "Not Found", "not found: metrics are at /metrics", head));
        }
    }

    void respond(Connection& c, std::string text) {
        c.out = std::move(text);
        c.responding = true;
        c.in.clear();
        c.in.shrink_to_fit();
    }

    // Reads or writes what the socket allows; false when the connection is done.
    bool step(Connection& c, short revents) {
        if (c.draining) {
            char buf[4096];
            for (;;) {
                const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
                if (n > 0) continue;
                if (n < 0 && errno == EINTR) continue;
                return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // else closed: done
            }
        }
        if (!c.responding && (revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buf[4096];
            for (;;) {
                const std::size_t room = kMaxRequest - c.in.size();
                const ssize_t n = ::recv(c.fd.get(), buf, std::min(sizeof buf, room), 0);
                if (n > 0) {
                    c.in.append(buf, static_cast<std::size_t>(n));
                    if (c.in.size() >= kMaxRequest || c.in.find("\r\n\r\n") != std::string::npos) break;
                    continue;
                }
                if (n == 0) return false;  // closed before a full request
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                return false;
            }
            decide(c);
        }
        if (c.responding) {
            while (c.sent < c.out.size()) {
                const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
                if (n > 0) {
                    c.sent += static_cast<std::size_t>(n);
                    continue;
                }
                if (n < 0 && errno == EINTR) continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
                return false;
            }
            ::shutdown(c.fd.get(), SHUT_WR);
            c.draining = true;
            c.out.clear();
            c.out.shrink_to_fit();
            c.deadline = std::min(c.deadline, Clock::now() + kDrainTimeout);
            return true;
        }
        return true;
    }
};

HttpServer::HttpServer(const ListenAddress& address, std::function<std::string()> render)
    : impl_(std::make_unique<Impl>()) {
    impl_->address = address;
    impl_->render = std::move(render);
    const std::string where = "serve metrics on " + address.host + ":" + std::to_string(address.port);
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    if (address.host.find(':') != std::string::npos) {
        family = AF_INET6;
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(address.port);
        ::inet_pton(AF_INET6, address.host.c_str(), &s6->sin6_addr);
        len = sizeof(sockaddr_in6);
    } else {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET;
        s4->sin_port = htons(address.port);
        ::inet_pton(AF_INET, address.host.c_str(), &s4->sin_addr);
        len = sizeof(sockaddr_in);
    }
    Fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw Error::from_errno(errno, where + ": socket");
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        const int err = errno;
        const char* hint = err == EADDRINUSE       ? " (is another exporter running? choose another port)"
                           : err == EADDRNOTAVAIL ? " (not an address of this machine)"
                           : err == EACCES        ? " (ports below 1024 need privileges)"
                                                  : "";
        throw Error(std::error_code(err, std::generic_category()),
                    where + ": " + std::strerror(err) + hint);
    }
    if (::listen(fd.get(), 64) != 0) throw Error::from_errno(errno, where + ": listen");
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &blen);
    impl_->bound_port = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    impl_->listener = std::move(fd);
}

HttpServer::~HttpServer() = default;

std::string HttpServer::url() const {
    const bool v6 = impl_->address.host.find(':') != std::string::npos;
    return "http://" + (v6 ? "[" + impl_->address.host + "]" : impl_->address.host) + ":" +
           std::to_string(impl_->bound_port) + "/metrics";
}

void HttpServer::poll(std::chrono::milliseconds timeout) {
    auto& conns = impl_->connections;
    // Never sleep past the earliest connection deadline.
    const auto now = Clock::now();
    for (const auto& c : conns) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now);
        timeout = std::max(std::chrono::milliseconds(0), std::min(timeout, left + std::chrono::milliseconds(1)));
    }
    std::vector<pollfd> fds;
    fds.reserve(conns.size() + 1);
    fds.push_back({impl_->listener.get(), POLLIN, 0});
    for (const auto& c : conns) {
        fds.push_back({c.fd.get(), static_cast<short>(c.responding && !c.draining ? POLLOUT : POLLIN), 0});
    }
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    if (n < 0) return;  // EINTR: the caller's loop checks its stop flag and calls again

    // Step existing connections first (indices match fds[1..]), then accept new ones.
    const auto after = Clock::now();
    std::vector<Connection> kept;
    kept.reserve(conns.size());
    for (std::size_t i = 0; i < conns.size(); ++i) {
        auto& c = conns[i];
        const short revents = fds[i + 1].revents;
        bool keep = true;
        if (revents != 0) keep = impl_->step(c, revents);
        if (keep && after >= c.deadline) keep = false;  // too slow: dropped without a word
        if (keep) kept.push_back(std::move(c));
    }
    conns = std::move(kept);
    if ((fds[0].revents & POLLIN) != 0) impl_->accept_all();
}

}  // namespace shmpipe::metrics
