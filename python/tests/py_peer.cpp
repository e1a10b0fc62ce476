// py_peer: the C++ process of the Python interop tests (spawned by pytest, never by hand).
//
//   py_peer produce TYPE QUEUE COUNT    pushes value(TYPE, i) for i in [0, COUNT), then closes
//   py_peer consume TYPE QUEUE COUNT    pops until the end of stream, checking each value
//   py_peer produce-hold QUEUE          pushes one bytes message, prints "ready", sleeps (to be killed)
//   py_peer create-typed QUEUE          creates QUEUE with Queue::create<Point> for one producer and
//                                       one consumer (typed fixed slots), persisted; prints "typed=1"
//
// TYPE: i64 (std::int64_t), f64 (double), point (the struct Point below), string
// (std::string), bytes (Producer<> / Consumer<>). The values are the ones
// python/tests/test_interop.py computes. Prints one line "count=N" or "error=...".
// Exit codes: 0 ok; 2 other error; 5 producer_died; 6 a value differs; 8 count differs; 64 usage.
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

// A trivially copyable struct as Python's struct format '<iid' describes it (16 bytes).
// At global scope so its mangled name is "5Point" (Python: cpp_type="Point").
struct Point {
    std::int32_t x;
    std::int32_t y;
    double w;
    bool operator==(const Point&) const = default;
};
static_assert(sizeof(Point) == 16);

namespace {

template <class T>
T value(long i);
template <>
std::int64_t value<std::int64_t>(long i) { return i * 3 - 7; }
template <>
double value<double>(long i) { return static_cast<double>(i) * 0.5; }
template <>
Point value<Point>(long i) { return Point{static_cast<std::int32_t>(i), static_cast<std::int32_t>(-i), static_cast<double>(i) * 0.25}; }
template <>
std::string value<std::string>(long i) { return "msg-" + std::to_string(i); }
template <>
shmpipe::Bytes value<shmpipe::Bytes>(long i) {
    return shmpipe::Bytes(static_cast<std::size_t>(i % 100), std::byte{static_cast<unsigned char>(i & 0xff)});
}

template <class T>
int produce(const std::string& queue, long count) {
    shmpipe::Producer<T> tx(queue);
    for (long i = 0; i < count; ++i) tx.push(value<T>(i));
    tx.close();
    std::printf("count=%ld\n", count);
    return 0;
}

template <class T>
int consume(const std::string& queue, long expect) {
    shmpipe::Consumer<T> rx(queue);
    long n = 0;
    while (auto v = rx.pop()) {
        if (!(*v == value<T>(n))) {
            std::printf("error=message %ld differs\n", n);
            return 6;
        }
        ++n;
    }
    std::printf("count=%ld\n", n);
    return n == expect ? 0 : 8;
}

template <class T>
int run(const std::string& role, const std::string& queue, long count) {
    return role == "produce" ? produce<T>(queue, count) : consume<T>(queue, count);
}

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: py_peer produce|consume i64|f64|point|string|bytes QUEUE COUNT | produce-hold QUEUE | create-typed QUEUE\n");
    std::exit(64);
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> a(argv + 1, argv + argc);
    try {
        if (a.size() == 2 && a[0] == "produce-hold") {
            shmpipe::Producer<> tx(a[1]);
            const std::string m = "held";
            tx.push(std::as_bytes(std::span(m)));
            std::printf("ready\n");
            std::fflush(stdout);
            for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
        }
        if (a.size() == 2 && a[0] == "create-typed") {
            shmpipe::QueueOptions o;
            o.producers = o.consumers = shmpipe::Endpoints::one;
            auto q = shmpipe::Queue::create<Point>(a[1], o);
            q.persist();  // the test removes it
            std::printf("typed=%d\n", q.typed() ? 1 : 0);
            return 0;
        }
        if (a.size() != 4 || (a[0] != "produce" && a[0] != "consume")) usage();
        const long count = std::strtol(a[3].c_str(), nullptr, 10);
        if (a[1] == "i64") return run<std::int64_t>(a[0], a[2], count);
        if (a[1] == "f64") return run<double>(a[0], a[2], count);
        if (a[1] == "point") return run<Point>(a[0], a[2], count);
        if (a[1] == "string") return run<std::string>(a[0], a[2], count);
        if (a[1] == "bytes") return run<shmpipe::Bytes>(a[0], a[2], count);
        usage();
    } catch (const shmpipe::Error& e) {
        std::printf("error=%s\n", e.what());
        return e.code() == shmpipe::make_error_code(shmpipe::errc::producer_died) ? 5 : 2;
    }
}
