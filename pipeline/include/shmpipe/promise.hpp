// Promise<R>: a Future<R> completed by hand, for work that is not a pool task (a callback
// from another library, an event loop, a thread of your own), so it mixes with pool futures
// in shmpipe::wait and shmpipe::as_completed.
//
//   shmpipe::Promise<int> p;
//   auto f = p.get_future();                   // any number of handles, one shared state
//   std::thread([p = std::move(p)]() mutable { p.set_value(42); }).detach();
//   auto [done, not_done] = shmpipe::wait(std::vector{f, pool.submit(square, 7)});
//
// set_value / set_exception complete the future once; a second completion throws
// Error(errc::invalid_state). Like a Python Future made by hand, the future can be
// cancelled while no value is set (set_value then throws invalid_state). A Promise
// destroyed without a value completes its future with Error(errc::broken) (like
// std::promise's broken_promise), so a waiter never waits for a value that cannot come.
// Done-callbacks run in the thread that completes the promise.
#pragma once

#include <shmpipe/error.hpp>
#include <shmpipe/future.hpp>

#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace shmpipe {

template <class R>
class Promise {
public:
    Promise() : state_(std::make_shared<detail::TaskState>()) {
        state_->what = "promise";
        state_->may_cancel = [](std::uint64_t) { return true; };  // nothing runs it: always cancellable
    }
    Promise(Promise&&) noexcept = default;
    Promise& operator=(Promise&& other) noexcept {
        if (this != &other) {
            abandon();
            state_ = std::move(other.state_);
        }
        return *this;
    }
    Promise(const Promise&) = delete;
    Promise& operator=(const Promise&) = delete;
    ~Promise() { abandon(); }

    Future<R> get_future() const { return Future<R>(checked()); }

    // Completes the future with a value. Error(invalid_state) if it is already complete.
    template <class V = R>
        requires(!std::is_void_v<R> && std::is_constructible_v<R, V &&>)
    void set_value(V&& v) {
        finish(detail::TaskStatus::ok, nullptr, std::make_shared<R>(std::forward<V>(v)));
    }
    void set_value()
        requires std::is_void_v<R>
    {
        finish(detail::TaskStatus::ok, nullptr, nullptr);
    }
    // Completes the future with an exception: result() rethrows it as it is.
    void set_exception(std::exception_ptr e) {
        if (!e) throw Error(errc::invalid_argument, "promise: set_exception(nullptr) (pass the exception to raise)");
        finish(detail::TaskStatus::failed, std::move(e), nullptr);
    }

private:
    const std::shared_ptr<detail::TaskState>& checked() const {
        if (!state_) throw Error(errc::invalid_state, "promise: used after it was moved from");
        return state_;
    }
    void finish(detail::TaskStatus s, std::exception_ptr e, std::shared_ptr<void> v) {
        if (!checked()->complete(s, {}, std::move(e), std::move(v))) {
            throw Error(errc::invalid_state, state_->finished() && cancelled()
                                                 ? "promise: its future was cancelled (the value is not wanted)"
                                                 : "promise: the value was already set (a promise completes once)");
        }
    }
    bool cancelled() const {
        std::lock_guard lock(state_->m);
        return state_->status == detail::TaskStatus::cancelled;
    }
    void abandon() noexcept {
        if (!state_) return;
        try {
            state_->complete(detail::TaskStatus::failed, {},
                             std::make_exception_ptr(Error(errc::broken, "promise destroyed before a value was set")));
        } catch (...) {  // allocation failure: the waiters cannot be told; nothing else to do
        }
    }

    std::shared_ptr<detail::TaskState> state_;
};

}  // namespace shmpipe
