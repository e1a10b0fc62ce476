// Timer: one thread per started timer, sleeping on a condition variable until the deadline
// or cancel(). Locks: TimerState::m guards the flags; the function runs with no lock held.
#include <shmpipe/error.hpp>
#include <shmpipe/timer.hpp>

#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>

namespace shmpipe {

namespace detail {

struct TimerState {
    std::chrono::nanoseconds delay;
    std::function<void()> fn;
    mutable std::mutex m;
    std::condition_variable cv;
    bool started = false;
    bool cancelled = false;
    bool fired = false;
    bool finished = false;
    bool joined = false;
    std::exception_ptr error;
    std::mutex join_m;  // one joiner of `thread` at a time; taken before m
    std::thread thread;

    void run() {
        {
            std::unique_lock lock(m);
            const auto deadline = std::chrono::steady_clock::now() + delay;
            cv.wait_until(lock, deadline, [&] { return cancelled; });  // steady clock: monotonic
            if (!cancelled) fired = true;
        }
        std::exception_ptr e;
        if (fired) {
            try {
                fn();
            } catch (...) {
                e = std::current_exception();
            }
        }
        {
            std::lock_guard lock(m);
            error = std::move(e);
            finished = true;
        }
        cv.notify_all();
    }
};

}  // namespace detail

Timer::Timer(std::chrono::nanoseconds delay, std::function<void()> fn) : s_(std::make_unique<detail::TimerState>()) {
    if (!fn) throw Error(errc::invalid_argument, "Timer: an empty function (pass what to run)");
    s_->delay = delay < std::chrono::nanoseconds::zero() ? std::chrono::nanoseconds::zero() : delay;
    s_->fn = std::move(fn);
}

Timer::Timer(Timer&&) noexcept = default;

Timer& Timer::operator=(Timer&& other) noexcept {
    if (this != &other) {
        Timer old(std::move(*this));  // cancels and joins what we held
        s_ = std::move(other.s_);
    }
    return *this;
}

Timer::~Timer() {
    if (!s_) return;
    cancel();
    {
        std::lock_guard jlock(s_->join_m);
        if (s_->thread.joinable()) s_->thread.join();
    }
    std::lock_guard lock(s_->m);
    if (s_->error && !s_->joined) {
        try {
            std::rethrow_exception(s_->error);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "shmpipe::Timer: the function threw and nobody joined the timer: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "shmpipe::Timer: the function threw a non-std exception and nobody joined the timer\n");
        }
    }
}

void Timer::start() {
    if (!s_) throw Error(errc::invalid_state, "Timer: start() on a moved-from timer");
    {
        std::lock_guard lock(s_->m);
        if (s_->started) throw Error(errc::invalid_state, "Timer: start() called twice (a timer runs once)");
        s_->started = true;
    }
    s_->thread = std::thread([s = s_.get()] { s->run(); });
}

bool Timer::cancel() {
    if (!s_) return false;
    bool stopped = false;
    {
        std::lock_guard lock(s_->m);
        if (!s_->fired && !s_->cancelled) {
            s_->cancelled = true;
            stopped = true;
        }
    }
    s_->cv.notify_all();
    return stopped;
}

void Timer::join() {
    if (!s_) throw Error(errc::invalid_state, "Timer: join() on a moved-from timer");
    {
        std::lock_guard lock(s_->m);
        if (!s_->started) throw Error(errc::invalid_state, "Timer: join() before start()");
    }
    if (s_->thread.get_id() == std::this_thread::get_id()) {
        throw Error(errc::invalid_state, "Timer: join() from the timer's own function (it would wait for itself)");
    }
    {
        std::lock_guard jlock(s_->join_m);
        if (s_->thread.joinable()) s_->thread.join();
    }
    std::exception_ptr e;
    {
        std::lock_guard lock(s_->m);
        if (!s_->joined) e = s_->error;
        s_->joined = true;
    }
    if (e) std::rethrow_exception(e);
}

bool Timer::join_for_ns(std::chrono::nanoseconds d) {
    if (!s_) throw Error(errc::invalid_state, "Timer: join_for() on a moved-from timer");
    {
        std::unique_lock lock(s_->m);
        if (!s_->started) throw Error(errc::invalid_state, "Timer: join_for() before start()");
        if (!s_->cv.wait_for(lock, d, [&] { return s_->finished; })) return false;
    }
    join();
    return true;
}

bool Timer::is_alive() const {
    if (!s_) return false;
    std::lock_guard lock(s_->m);
    return s_->started && !s_->finished;
}

bool Timer::cancelled() const {
    if (!s_) return false;
    std::lock_guard lock(s_->m);
    return s_->cancelled;
}

bool Timer::fired() const {
    if (!s_) return false;
    std::lock_guard lock(s_->m);
    return s_->fired;
}

}  // namespace shmpipe
