// The engine of ThreadPool and ThreadPoolExecutor: a mutex-protected deque of jobs and
// `n` threads that take them in order.
//
// Locks: m_ guards jobs_ and the flags; lifecycle_m_ (join) is taken before m_ and never
// held by a pool thread. Jobs run, and are abandoned, with no lock held: a job completes its
// task, which runs done-callbacks, and a callback may submit again.
#include <shmpipe/thread_pool.hpp>

#include <condition_variable>
#include <deque>
#include <string>
#include <thread>

namespace shmpipe::detail {

class ThreadPoolCore {
public:
    ThreadPoolCore(ThreadPoolOptions options, const char* face)
        : face_(face), initializer_(std::move(options.initializer)) {
        const unsigned n = options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
        threads_.reserve(n);
        try {
            for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
        } catch (const std::system_error& e) {
            terminate();
            join_threads();
            throw Error(errc::spawn_failed, std::string(face_) + ": starting thread " +
                                                std::to_string(threads_.size() + 1) + " of " + std::to_string(n) +
                                                " failed: " + e.what() + " (ask for fewer threads)");
        }
    }
    ThreadPoolCore(const ThreadPoolCore&) = delete;
    ThreadPoolCore& operator=(const ThreadPoolCore&) = delete;

    std::shared_ptr<TaskState> new_state(const char* kind) {
        auto s = std::make_shared<TaskState>();
        s->id = next_id_.fetch_add(1, std::memory_order_relaxed);  // only unique, orders nothing
        s->what = std::string(kind) + " task " + std::to_string(s->id);
        return s;
    }

    void post(std::unique_ptr<ThreadJob> job, const char* kind) {
        {
            std::lock_guard lock(m_);
            if (closed_ || terminating_) {
                throw Error(errc::invalid_state, std::string(face_) + ": " + kind + " after " +
                                                     (terminating_ ? "terminate()" : "close() or shutdown()") +
                                                     " (submit before closing the pool)");
            }
            jobs_.push_back(std::move(job));
        }
        cv_.notify_one();
    }

    void close() {
        {
            std::lock_guard lock(m_);
            closed_ = true;
        }
        cv_.notify_all();
    }

    void cancel_queued(const char* why) {
        std::deque<std::unique_ptr<ThreadJob>> dropped;
        {
            std::lock_guard lock(m_);
            dropped.swap(jobs_);
        }
        if (dropped.empty()) return;
        const auto e = std::make_exception_ptr(Error(errc::cancelled, std::string(face_) + ": " + why));
        for (auto& job : dropped) job->abandon(e);
    }

    void terminate() {
        {
            std::lock_guard lock(m_);
            terminating_ = true;
        }
        cv_.notify_all();
        cancel_queued("terminated before the task started");
    }

    void join() {
        if (is_pool_thread()) {
            throw Error(errc::invalid_state, std::string(face_) + ": join() from one of its own threads "
                                                                  "(it would wait for itself)");
        }
        {
            std::lock_guard lock(m_);
            if (!closed_ && !terminating_) {
                throw Error(errc::invalid_state,
                            std::string(face_) + ": join() before close() or terminate() (close the pool first)");
            }
        }
        join_threads();
    }

    bool joined() {
        std::lock_guard lock(lifecycle_m_);
        return joined_;
    }

    unsigned size() const noexcept { return static_cast<unsigned>(threads_.size()); }

private:
    void work() {
        std::exception_ptr init_error;
        if (initializer_) {
            try {
                initializer_();
            } catch (...) {
                init_error = std::current_exception();
            }
        }
        for (;;) {
            std::unique_ptr<ThreadJob> job;
            {
                std::unique_lock lock(m_);
                cv_.wait(lock, [&] { return !jobs_.empty() || closed_ || terminating_; });
                if (terminating_ || jobs_.empty()) return;  // terminated, or closed and drained
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            if (init_error) {
                job->abandon(init_error);  // every task of this thread fails with the initializer's error
            } else {
                job->run();
            }
        }
    }

    bool is_pool_thread() const {
        const auto self = std::this_thread::get_id();
        return std::any_of(threads_.begin(), threads_.end(), [&](const std::thread& t) { return t.get_id() == self; });
    }

    void join_threads() {
        std::lock_guard lock(lifecycle_m_);
        for (auto& t : threads_) {
            if (t.joinable()) t.join();
        }
        joined_ = true;
    }

    const char* face_;
    std::function<void()> initializer_;
    std::mutex lifecycle_m_;
    bool joined_ = false;
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<ThreadJob>> jobs_;
    bool closed_ = false;
    bool terminating_ = false;
    std::atomic<std::uint64_t> next_id_{1};
    std::vector<std::thread> threads_;  // fixed after the constructor
};

std::shared_ptr<ThreadPoolCore> make_thread_pool_core(ThreadPoolOptions options, const char* face) {
    return std::make_shared<ThreadPoolCore>(std::move(options), face);
}
std::shared_ptr<TaskState> thread_task_state(ThreadPoolCore& core, const char* kind) { return core.new_state(kind); }
void thread_pool_post(ThreadPoolCore& core, std::unique_ptr<ThreadJob> job, const char* kind) {
    core.post(std::move(job), kind);
}
unsigned thread_pool_size(const ThreadPoolCore& core) noexcept { return core.size(); }
void thread_pool_close(ThreadPoolCore& core) { core.close(); }
void thread_pool_join(ThreadPoolCore& core) { core.join(); }
void thread_pool_terminate(ThreadPoolCore& core) { core.terminate(); }
void thread_pool_shutdown(ThreadPoolCore& core, bool wait, bool cancel_futures) {
    core.close();
    if (cancel_futures) core.cancel_queued("shut down with cancel_futures before the task started");
    if (wait) core.join();
}

}  // namespace shmpipe::detail

namespace shmpipe {

ThreadPool::~ThreadPool() {
    if (!core_ || core_->joined()) return;
    try {
        core_->terminate();
        core_->join();
    } catch (...) {  // only join() from a pool thread throws: a task that destroys its own pool
        std::terminate();
    }
}

}  // namespace shmpipe
