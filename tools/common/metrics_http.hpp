// A small HTTP/1.1 responder that serves one document, the metrics text, at /metrics: what
// Prometheus scrapes. Single-threaded and poll()-driven, so a tool runs it between its own
// work (pipeline-launch between supervision steps) or alone (inspect-queues serve).
//
// Requests are untrusted input: a request head is at most kMaxRequest bytes and must arrive
// within kRequestTimeout of the connection; at most kMaxConnections are served at once (the
// oldest is dropped for a new one). Only GET and HEAD are answered; every response closes the
// connection (HTTP/1.1 permits it, and a scraper reconnects each time). A bad request gets a
// 4xx status and is closed; no request can make the server block, grow without bound or stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace shmpipe::metrics {

struct ListenAddress {
    std::string host;   // numeric IPv4 or IPv6 ("localhost" becomes 127.0.0.1)
    std::uint16_t port = 0;
    bool loopback = false;
};

// Parses "HOST:PORT", "[V6]:PORT" or ":PORT" (loopback). Throws cli::UsageError naming the
// address and the expected form.
ListenAddress parse_listen_address(std::string_view text);

class HttpServer {
public:
    static constexpr std::size_t kMaxRequest = 8192;
    static constexpr std::size_t kMaxConnections = 16;
    static constexpr std::chrono::milliseconds kRequestTimeout{5000};

    // render() builds the metrics text for each GET /metrics. Binds and listens at once;
    // throws Error naming the address when it cannot (in use, not a local address, ...).
    HttpServer(const ListenAddress& address, std::function<std::string()> render);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // "http://HOST:PORT/metrics" with the port actually bound (for port 0).
    std::string url() const;

    // Serves whatever is ready, waiting up to `timeout` for something to happen. Never throws
    // for a client's behaviour.
    void poll(std::chrono::milliseconds timeout);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpipe::metrics
