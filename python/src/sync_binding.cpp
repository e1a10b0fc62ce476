// Named synchronisation objects for shmpipe/_sync.py: the C++ objects, with every blocking
// call going through blocking_call() (Ctrl-C and other threads keep working).
#include "bindings.hpp"
#include "blocking.hpp"

#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

namespace py = pybind11;

namespace shmpipe::python {
namespace {

using std::chrono::nanoseconds;

nanoseconds until(std::uint64_t deadline_ns) {
    const std::uint64_t now = detail::monotonic_ns();
    return nanoseconds(deadline_ns > now ? static_cast<std::int64_t>(deadline_ns - now) : 0);
}

SyncOptions sync_options(unsigned permissions) {
    SyncOptions o;
    o.permissions = static_cast<mode_t>(permissions);
    return o;
}

// acquire(block, timeout) for any lock-like C++ object with try_lock / try_lock_for.
template <class L>
bool lock_acquire(L& l, bool block, std::optional<double> timeout) {
    if constexpr (std::is_same_v<L, Mutex>) {
        if (l.owned_by_this_thread()) {
            throw Error(errc::invalid_state, "acquire lock \"" + l.name() +
                                                 "\": this thread already holds it (it would deadlock; an RLock "
                                                 "may be re-entered)");
        }
    }
    if (!block) return l.try_lock();
    return blocking_call(deadline_of(timeout), [&](std::uint64_t slice) { return l.try_lock_for(until(slice)); });
}

// Barrier waits cannot be cut into slices (a timed-out arrival breaks the barrier), so the
// arrival runs on a helper thread while this thread waits in slices; Ctrl-C aborts the
// barrier (as a timeout does in Python: the barrier is then broken) and joins the helper.
std::uint32_t barrier_wait(Barrier& b, std::optional<double> timeout) {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::uint32_t index = 0;
    std::exception_ptr error;
    const std::optional<nanoseconds> limit =
        timeout ? std::optional(nanoseconds(static_cast<std::int64_t>(std::max(0.0, *timeout) * 1e9))) : std::nullopt;
    std::thread helper([&] {
        try {
            index = limit ? b.arrive_and_wait_for(*limit) : b.arrive_and_wait();
        } catch (...) {
            error = std::current_exception();
        }
        std::lock_guard g(m);
        done = true;
        cv.notify_all();
    });
    auto join = [&] {
        py::gil_scoped_release nogil;
        helper.join();
    };
    try {
        blocking_call(0, [&](std::uint64_t slice) {
            std::unique_lock g(m);
            return cv.wait_for(g, until(slice), [&] { return done; });
        });
    } catch (...) {
        b.abort();
        join();
        throw;
    }
    join();
    if (error) std::rethrow_exception(error);
    return index;
}

template <class L>
py::class_<L> register_lock(py::module_& m, const char* name) {
    return py::class_<L>(m, name)
        .def_static("create", [](const std::string& n, unsigned perm) { return L::create(n, sync_options(perm)); })
        .def_static("open", [](const std::string& n) { return L::open(n); })
        .def("acquire", &lock_acquire<L>, py::arg("block"), py::arg("timeout"))
        .def("release", &L::unlock)
        .def("owned", &L::owned_by_this_thread)
        .def_property_readonly("owner_died", &L::owner_died)
        .def("mark_consistent", &L::mark_consistent)
        .def_property_readonly("name", &L::name)
        .def("persist", &L::persist);
}

template <class T>
void register_array(py::module_& m, const char* name) {
    using A = SharedArray<T>;
    py::class_<A>(m, name, py::buffer_protocol())
        .def_static("create", [](const std::string& n, std::size_t count, unsigned perm) {
            return A::create(n, count, sync_options(perm));
        })
        .def_static("open", [](const std::string& n) { return A::open(n); })
        .def_property_readonly("name", &A::name)
        .def("__len__", &A::size)
        .def("load", &A::load)
        .def("store", &A::store)
        .def("fetch_add", [](A& a, std::size_t i, T d) { return a.fetch_add(i, d); })
        .def("acquire",
             [](A& a, bool block, std::optional<double> timeout) {
                 if (!block) return a.try_lock();
                 // The array's lock has no timed form: poll try_lock within each slice.
                 return blocking_call(deadline_of(timeout), [&](std::uint64_t slice) {
                     while (!a.try_lock()) {
                         if (detail::monotonic_ns() >= slice) return false;
                         std::this_thread::sleep_for(std::chrono::microseconds(200));
                     }
                     return true;
                 });
             })
        .def("release", &A::unlock)
        .def("persist", &A::persist)
        .def_buffer([](const A& a) {
            return py::buffer_info(a.data(), static_cast<py::ssize_t>(sizeof(T)), py::format_descriptor<T>::format(), 1,
                                   {static_cast<py::ssize_t>(a.size())}, {static_cast<py::ssize_t>(sizeof(T))});
        });
}

}  // namespace

void register_sync(py::module_& m) {
    register_lock<Mutex>(m, "Mutex");
    register_lock<RecursiveMutex>(m, "RecursiveMutex").def_property_readonly("depth", &RecursiveMutex::depth);

    py::class_<Semaphore>(m, "Semaphore")
        .def_static("create",
                    [](const std::string& n, std::int64_t initial, std::int64_t max_count, unsigned perm) {
                        SemaphoreOptions o;
                        o.max_count = max_count;
                        o.permissions = static_cast<mode_t>(perm);
                        return Semaphore::create(n, initial, o);
                    })
        .def_static("open", [](const std::string& n) { return Semaphore::open(n); })
        .def("acquire",
             [](Semaphore& s, bool block, std::optional<double> timeout) {
                 if (!block) return s.try_acquire();
                 return blocking_call(deadline_of(timeout),
                                      [&](std::uint64_t slice) { return s.try_acquire_for(until(slice)); });
             })
        .def("release", &Semaphore::release, py::arg("n") = 1)
        .def_property_readonly("value", &Semaphore::value_approx)
        .def_property_readonly("max_count", &Semaphore::max_count)
        .def_property_readonly("name", &Semaphore::name)
        .def("persist", &Semaphore::persist);

    py::class_<Event>(m, "Event")
        .def_static("create", [](const std::string& n, unsigned perm) { return Event::create(n, sync_options(perm)); })
        .def_static("open", [](const std::string& n) { return Event::open(n); })
        .def("set", &Event::set)
        .def("clear", &Event::clear)
        .def("is_set", &Event::is_set)
        .def("wait",
             [](const Event& e, std::optional<double> timeout) {
                 return blocking_call(deadline_of(timeout), [&](std::uint64_t slice) { return e.wait_for(until(slice)); });
             })
        .def_property_readonly("name", &Event::name)
        .def("persist", &Event::persist);

    py::class_<Condition>(m, "Condition")
        .def_static("create",
                    [](const std::string& n, unsigned perm) { return Condition::create(n, sync_options(perm)); })
        .def_static("open", [](const std::string& n) { return Condition::open(n); })
        // The caller holds `lock`. Between slices the lock is held again (a timed-out
        // wait_for reacquires it), so a notify, which is sent under the lock, is not missed.
        .def("wait",
             [](Condition& c, Mutex& lock, std::optional<double> timeout) {
                 return blocking_call(deadline_of(timeout),
                                      [&](std::uint64_t slice) { return c.wait_for(lock, until(slice)); });
             })
        .def("notify",
             [](Condition& c, int n) {
                 for (int i = 0; i < n; ++i) c.notify_one();
             },
             py::arg("n") = 1)
        .def("notify_all", &Condition::notify_all)
        .def_property_readonly("name", &Condition::name)
        .def("persist", &Condition::persist);

    py::class_<Barrier>(m, "Barrier")
        .def_static("create", [](const std::string& n, std::uint32_t parties,
                                 unsigned perm) { return Barrier::create(n, parties, sync_options(perm)); })
        .def_static("open", [](const std::string& n) { return Barrier::open(n); })
        .def("wait", &barrier_wait, py::arg("timeout"))
        .def("abort", &Barrier::abort)
        .def("reset", &Barrier::reset)
        .def_property_readonly("broken", &Barrier::broken)
        .def_property_readonly("parties", &Barrier::parties)
        .def_property_readonly("n_waiting", &Barrier::n_waiting)
        .def_property_readonly("name", &Barrier::name)
        .def("persist", &Barrier::persist);

    register_array<std::int8_t>(m, "Array_b");
    register_array<std::uint8_t>(m, "Array_B");
    register_array<std::int16_t>(m, "Array_h");
    register_array<std::uint16_t>(m, "Array_H");
    register_array<std::int32_t>(m, "Array_i");
    register_array<std::uint32_t>(m, "Array_I");
    register_array<std::int64_t>(m, "Array_q");
    register_array<std::uint64_t>(m, "Array_Q");
    register_array<float>(m, "Array_f");
    register_array<double>(m, "Array_d");
}

}  // namespace shmpipe::python
