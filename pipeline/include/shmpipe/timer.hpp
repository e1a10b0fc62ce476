// Timer: run a function once after a delay, on its own thread (threading.Timer).
//
//   shmpipe::Timer t(2.5s, [] { std::puts("late"); });   // any std::chrono::duration
//   t.start();
//   if (changed_our_mind) t.cancel();                    // it will not run
//   t.join();
//
// start() starts the thread (once; a second start() throws Error(errc::invalid_state), as
// Python raises RuntimeError); the delay counts from start(), on the monotonic clock.
// cancel() stops a timer still waiting (any thread, any time; harmless after it fired).
// join() waits for the thread to end and rethrows the function's exception, if it threw
// (once); join_for(d) says whether it ended in time. Destroying a Timer cancels it and
// joins it; an exception nobody joined is reported on stderr, not lost.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace shmpipe {

namespace detail {
struct TimerState;  // timer.cpp
}

class Timer {
public:
    template <class Rep, class Period, class F>
        requires std::is_invocable_v<std::decay_t<F>&>
    Timer(std::chrono::duration<Rep, Period> delay, F&& fn)
        : Timer(std::chrono::ceil<std::chrono::nanoseconds>(delay),
                // shared: the function may be move-only, std::function copies
                std::function<void()>([f = std::make_shared<std::decay_t<F>>(std::forward<F>(fn))] { (*f)(); })) {}
    Timer(std::chrono::nanoseconds delay, std::function<void()> fn);
    Timer(Timer&&) noexcept;
    Timer& operator=(Timer&&) noexcept;
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    ~Timer();

    void start();
    // True when this call stopped the function from running (it had not started yet).
    bool cancel();
    void join();
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> d) {
        return join_for_ns(std::chrono::ceil<std::chrono::nanoseconds>(d));
    }
    bool is_alive() const;   // started and not yet finished (waiting or running)
    bool cancelled() const;  // cancel() came before the function started
    bool fired() const;      // the function started (and maybe finished)

private:
    bool join_for_ns(std::chrono::nanoseconds d);
    std::unique_ptr<detail::TimerState> s_;
};

}  // namespace shmpipe
