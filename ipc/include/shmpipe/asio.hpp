// Boost.Asio adapter (optional: not part of <shmpipe/shmpipe.hpp>; needs only Boost's headers).
//
//   namespace sa = shmpipe::asio;
//   asio::awaitable<void> drain(shmpipe::Consumer<Job>& rx) {
//       while (auto job = co_await sa::async_pop(rx, asio::use_awaitable)) run(*job);  // nullopt: end
//   }
//   sa::async_push(tx, job, [](std::exception_ptr e) { ... });                        // a callback
//   std::future<int> code = sa::async_wait(process, asio::use_future);                 // exit code
//   co_await sa::async_wait(event, asio::use_awaitable);                               // set
//
// Every operation follows Asio's completion-token conventions (async_initiate through
// async_compose), so callbacks, asio::use_future, asio::use_awaitable (C++20 coroutines),
// asio::deferred and the rest work. Completion signatures carry a std::exception_ptr first
// (as asio::co_spawn does), so a shmpipe::Error such as producer_died reaches co_await,
// future.get() or the callback as itself, with its code and message:
//   async_pop(consumer, token)          void(std::exception_ptr, std::optional<T>)  nullopt: end of stream
//   async_push(producer, value, token)  void(std::exception_ptr)
//   async_wait(process, token)          void(std::exception_ptr, int)  exit code (-N: signal N), reaped
//   async_wait(event, token)            void(std::exception_ptr)
// The operations wait on the objects' readiness descriptors (Consumer::fd, Producer::fd,
// Process::sentinel; an Event through a watching thread, detail/event_watch.hpp): no thread
// per consumer, no polling. They run on the completion handler's associated executor: a
// coroutine's executor, or the one given with asio::bind_executor; without one, Asio's
// system executor. The consumer, producer, process or event must outlive the operation and
// take part in one operation at a time (as an Asio socket does). Destroying the
// io_context abandons pending operations (their handlers are destroyed, never called).
#pragma once

#include <shmpipe/detail/event_watch.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/queue.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/system/system_error.hpp>

#include <cerrno>
#include <concepts>
#include <exception>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <utility>

namespace shmpipe::asio {

namespace detail {

namespace net = boost::asio;

// A descriptor object on a duplicate of `fd`: the original stays with its owner, and each
// operation registers its own copy with the reactor.
template <class Executor>
std::shared_ptr<net::posix::stream_descriptor> watch_descriptor(const Executor& ex, int fd) {
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) throw Error::from_errno(errno, "shmpipe::asio: duplicate descriptor " + std::to_string(fd));
    return std::make_shared<net::posix::stream_descriptor>(net::any_io_executor(ex), copy);
}

// The loop every operation shares: attempt the non-blocking step; when it cannot finish,
// wait for the descriptor to become readable and attempt again. Asio re-arms its edge-
// triggered registration with EPOLL_CTL_MOD at every async_wait, which re-reports a
// descriptor that is readable already, so a ring between the attempt and the wait is not
// lost. The handler is called outside every try block: a throwing callback propagates.
template <class Step>
struct ReadinessLoop {
    Step step;
    std::shared_ptr<net::posix::stream_descriptor> descriptor;
    bool initiated = false;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
        if (!initiated) {
            // Never complete inside the initiating call: a loop whose every operation finds
            // its message at once would resume its coroutine (or callback) one stack frame
            // deeper each time. The first attempt runs from the executor instead.
            initiated = true;
            auto ex = self.get_io_executor();
            net::post(ex, std::move(self));
            return;
        }
        std::exception_ptr error;
        bool done = false;
        if (ec) {
            error = std::make_exception_ptr(boost::system::system_error(ec, "shmpipe::asio: wait on a descriptor"));
        } else {
            try {
                done = step.attempt();
                if (!done && !descriptor) descriptor = watch_descriptor(self.get_executor(), step.fd());
            } catch (...) {
                error = std::current_exception();
            }
        }
        if (error || done) {
            step.finish(self, std::move(error));
            return;
        }
        auto d = descriptor;  // keeps it alive while `self` moves into its own wait
        d->async_wait(net::posix::descriptor_base::wait_read, std::move(self));
    }
};

template <class T>
struct PopStep {
    Consumer<T>* rx;
    std::optional<T> out;
    int fd() { return rx->fd(); }
    bool attempt() {
        (void)rx->fd();  // made before the first look, so an empty try_pop arms it
        out = rx->try_pop();
        return out.has_value() || rx->ended();
    }
    template <class Self>
    void finish(Self& self, std::exception_ptr e) {
        self.complete(std::move(e), std::move(out));
    }
};

template <class T>
struct PushStep {
    Producer<T>* tx;
    T value;
    int fd() { return tx->fd(); }
    bool attempt() {
        (void)tx->fd();
        return tx->try_push(value);
    }
    template <class Self>
    void finish(Self& self, std::exception_ptr e) {
        self.complete(std::move(e));
    }
};

template <class P>
struct ExitStep {
    P* process;
    int code = -1;
    int fd() { return process->sentinel(); }
    bool attempt() {
        if (!process->poll_exit()) return false;  // never blocks, never reaps
        code = process->join();                   // exited: the reap does not block
        return true;
    }
    template <class Self>
    void finish(Self& self, std::exception_ptr e) {
        self.complete(std::move(e), code);
    }
};

struct EventStep {
    const Event* event;
    std::shared_ptr<shmpipe::detail::EventWatch> watch;
    int fd() {
        if (!watch) watch = std::make_shared<shmpipe::detail::EventWatch>(*event);
        return watch->fd();
    }
    bool attempt() { return event->is_set(); }
    template <class Self>
    void finish(Self& self, std::exception_ptr e) {
        watch.reset();  // its thread leaves on its own
        self.complete(std::move(e));
    }
};

template <class P>
concept ProcessLike = requires(P& p) {
    { p.sentinel() } -> std::convertible_to<int>;
    { p.join() } -> std::convertible_to<int>;
    p.poll_exit();
};

}  // namespace detail

// The next message of `rx`, or nullopt at the end of stream. A dead producer, a broken
// queue or a message that does not decode complete with the shmpipe::Error pop() throws.
template <class T, class CompletionToken>
auto async_pop(Consumer<T>& rx, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::exception_ptr, std::optional<T>)>(
        detail::ReadinessLoop<detail::PopStep<T>>{detail::PopStep<T>{&rx, std::nullopt}, nullptr}, token);
}

// Pushes a copy of `value` when there is room. Errors as push() throws them.
template <class T, class CompletionToken>
auto async_push(Producer<T>& tx, T value, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::exception_ptr)>(
        detail::ReadinessLoop<detail::PushStep<T>>{detail::PushStep<T>{&tx, std::move(value)}, nullptr}, token);
}

// Completes with the exit code once the child has exited (and reaps it), like join().
// Takes shmpipe::Process (from <shmpipe/process.hpp>, shmpipe::pipeline).
template <detail::ProcessLike P, class CompletionToken>
auto async_wait(P& process, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::exception_ptr, int)>(
        detail::ReadinessLoop<detail::ExitStep<P>>{detail::ExitStep<P>{&process, -1}, nullptr}, token);
}

// Completes once the event is set (at once if it is).
template <class CompletionToken>
auto async_wait(const Event& event, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::exception_ptr)>(
        detail::ReadinessLoop<detail::EventStep>{detail::EventStep{&event, nullptr}, nullptr}, token);
}

}  // namespace shmpipe::asio
