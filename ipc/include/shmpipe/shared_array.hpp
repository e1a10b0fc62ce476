// Named shared arrays and values of a trivially copyable T (like multiprocessing.Array and
// multiprocessing.Value).
//
//   auto hits = shmpipe::SharedValue<std::uint64_t>::create("hits");   // zero; owns the name
//   shmpipe::SharedValue<std::uint64_t>::open("hits").fetch_add(1);    // in other processes
//   auto grid = shmpipe::SharedArray<double>::create("grid", 1024);
//
// Element operations (load, store, exchange, compare_exchange, fetch_add/fetch_sub for
// arithmetic T) are atomic:
//   - lock-free (std::atomic_ref<T>, no system call, no lock) when is_lock_free: T of 1, 2,
//     4 or 8 bytes whose atomic_ref is always lock-free;
//   - otherwise under the array's internal robust lock (the same algorithm as
//     shmpipe::Mutex: a holder that dies is recovered from; an element it was writing may
//     be half-written).
// lock()/unlock()/try_lock() take that internal lock for multi-element updates through
// data(); with lock-free T they do not exclude the atomic element operations (which do
// not take the lock), so use one style per array.
// open() checks that the array was created for the same T (size and type tag):
// Error(errc::type_mismatch) otherwise. compare_exchange compares object representations
// (memcmp), as std::atomic does.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

namespace shmpipe {

template <class T>
class SharedArray {
    static_assert(std::is_trivially_copyable_v<T>, "SharedArray<T> needs a trivially copyable T");
    static_assert(alignof(T) <= detail::kCacheLine, "SharedArray<T>: T's alignment is above 64");

public:
    static constexpr bool is_lock_free = (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8) &&
                                         std::atomic_ref<T>::is_always_lock_free &&
                                         std::atomic_ref<T>::required_alignment <= sizeof(T);

    // A zero-filled array of `count` elements. Throws Error: invalid_name, already_exists,
    // invalid_argument (count 0 or too large), permission_denied.
    // Anonymous, like Python's Array(typecode, n): a unique name is picked (name() tells it).
    static SharedArray create(std::size_t count, const SyncOptions& options = {}) {
        return create(detail::anonymous_name("anon-array"), count, options);
    }
    static SharedArray create(std::string_view name, std::size_t count, const SyncOptions& options = {}) {
        validate_name(name, "shared array");
        if (count == 0 || count > (std::uint64_t{1} << 38) / sizeof(T)) {
            throw Error(errc::invalid_argument, detail::describe("create", "shared array", name,
                        "element count " + std::to_string(count) + " is out of range (1.." +
                        std::to_string((std::uint64_t{1} << 38) / sizeof(T)) + ")"));
        }
        const std::uint32_t flags = is_lock_free ? detail::kArrayLockFree : 0;
        auto h = detail::SyncHandle::create(
            name, "shared array", detail::ObjectKind::shared_array, detail::kArrayDataOffset + count * sizeof(T), flags,
            options,
            [&](std::byte* b) {
                auto* body = reinterpret_cast<detail::SharedArrayBody*>(b);
                body->count = count;
                body->data_offset = detail::kArrayDataOffset;
                body->elem_size = sizeof(T);
                body->flags = flags;
            },
            type_tag<T>(), sizeof(T));
        return SharedArray(std::move(h));
    }
    // Throws Error: invalid_name, not_found, wrong_kind, type_mismatch (another T), corrupt.
    static SharedArray open(std::string_view name, const OpenOptions& options = {}) {
        auto h = detail::SyncHandle::open(name, "shared array", detail::ObjectKind::shared_array,
                                          sizeof(detail::SharedArrayBody), options);
        const auto& hdr = h.segment().header();
        const auto& body = h.template body<detail::SharedArrayBody>();
        if (hdr.type_size != sizeof(T) || hdr.type_hash != type_tag<T>() || body.elem_size != sizeof(T)) {
            h.fail(errc::type_mismatch, "open",
                   "it was created for elements of " + std::to_string(hdr.type_size) + " bytes (type tag " +
                       std::to_string(hdr.type_hash) + "), opened as " + typeid(T).name() + " of " +
                       std::to_string(sizeof(T)) + " bytes (type tag " + std::to_string(type_tag<T>()) + ")");
        }
        // A1: the data must lie inside the body (untrusted sizes).
        if (body.data_offset != detail::kArrayDataOffset || body.count == 0 ||
            body.count > (h.segment().body_size() - detail::kArrayDataOffset) / sizeof(T) ||
            ((hdr.flags & detail::kArrayLockFree) != 0) != is_lock_free) {
            h.fail(errc::corrupt, "open", "element count or data offset do not fit the segment (overwritten?)");
        }
        return SharedArray(std::move(h));
    }

    SharedArray() = default;

    std::size_t size() const noexcept { return count_; }

    T load(std::size_t i) const {
        T* p = at(i, "load");
        if constexpr (is_lock_free) {
            return std::atomic_ref<T>(*p).load(std::memory_order_seq_cst);  // A2
        } else {
            Guard g(*this);
            T v;
            std::memcpy(&v, p, sizeof(T));
            return v;
        }
    }
    void store(std::size_t i, const T& v) {
        T* p = at(i, "store");
        if constexpr (is_lock_free) {
            std::atomic_ref<T>(*p).store(v, std::memory_order_seq_cst);  // A2
        } else {
            Guard g(*this);
            std::memcpy(p, &v, sizeof(T));
        }
    }
    T exchange(std::size_t i, const T& v) {
        T* p = at(i, "exchange");
        if constexpr (is_lock_free) {
            return std::atomic_ref<T>(*p).exchange(v, std::memory_order_seq_cst);
        } else {
            Guard g(*this);
            T old;
            std::memcpy(&old, p, sizeof(T));
            std::memcpy(p, &v, sizeof(T));
            return old;
        }
    }
    // Stores desired if the element equals expected (bytewise); else loads it into expected.
    bool compare_exchange(std::size_t i, T& expected, const T& desired) {
        T* p = at(i, "compare_exchange");
        if constexpr (is_lock_free) {
            return std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired, std::memory_order_seq_cst);
        } else {
            Guard g(*this);
            if (std::memcmp(p, &expected, sizeof(T)) == 0) {
                std::memcpy(p, &desired, sizeof(T));
                return true;
            }
            std::memcpy(&expected, p, sizeof(T));
            return false;
        }
    }
    T fetch_add(std::size_t i, T d) requires std::is_arithmetic_v<T> && (!std::is_same_v<T, bool>) {
        T* p = at(i, "fetch_add");
        if constexpr (is_lock_free) {
            return std::atomic_ref<T>(*p).fetch_add(d, std::memory_order_seq_cst);
        } else {
            Guard g(*this);
            T old = *p;
            *p = static_cast<T>(old + d);
            return old;
        }
    }
    T fetch_sub(std::size_t i, T d) requires std::is_arithmetic_v<T> && (!std::is_same_v<T, bool>) {
        T* p = at(i, "fetch_sub");
        if constexpr (is_lock_free) {
            return std::atomic_ref<T>(*p).fetch_sub(d, std::memory_order_seq_cst);
        } else {
            Guard g(*this);
            T old = *p;
            *p = static_cast<T>(old - d);
            return old;
        }
    }

    // The internal lock (robust, owned by the calling thread): for multi-element updates.
    void lock() {
        auto& l = lock_word("lock");
        const auto& me = detail::this_thread_identity();
        if (detail::robust_try_lock_fast(l, me)) return;
        if (detail::robust_owned_by(l, me)) {
            handle_.fail(errc::invalid_state, "lock", "this thread already holds its lock (would deadlock)");
        }
        detail::robust_lock_until(l, me, 0);
    }
    bool try_lock() {
        auto& l = lock_word("try_lock");
        const auto& me = detail::this_thread_identity();
        if (detail::robust_owned_by(l, me)) return false;
        return detail::robust_try_lock(l, me) != detail::LockResult::timeout;
    }
    void unlock() {
        auto& l = lock_word("unlock");
        const auto& me = detail::this_thread_identity();
        if (!detail::robust_owned_by(l, me)) {
            handle_.fail(errc::not_owner, "unlock", "the calling thread does not hold its lock");
        }
        detail::robust_unlock(l, me);
    }
    // Raw elements, for use under lock() (or through your own std::atomic_ref).
    T* data() const {
        handle_.require_open("use shared array");
        return data_;
    }

    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }

private:
    explicit SharedArray(detail::SyncHandle h) : handle_(std::move(h)) {
        const auto& body = handle_.template body<detail::SharedArrayBody>();
        count_ = body.count;
        data_ = reinterpret_cast<T*>(handle_.segment().body() + detail::kArrayDataOffset);
    }
    T* at(std::size_t i, const char* op) const {
        if (!handle_) handle_.require_open("use shared array");
        if (i >= count_) [[unlikely]] {
            handle_.fail(errc::invalid_argument, op,
                         "index " + std::to_string(i) + " is out of range (size " + std::to_string(count_) + ")");
        }
        return data_ + i;
    }
    detail::RobustLock& lock_word(const char* op) const {
        if (!handle_) handle_.require_open(op);
        return handle_.template body<detail::SharedArrayBody>().lock;
    }
    struct Guard {
        explicit Guard(const SharedArray& a) : l(a.lock_word("lock")), me(detail::this_thread_identity()) {
            if (!detail::robust_try_lock_fast(l, me)) detail::robust_lock_until(l, me, 0);
        }
        ~Guard() { detail::robust_unlock(l, me); }
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
        detail::RobustLock& l;
        const detail::ThreadIdentity& me;
    };

    detail::SyncHandle handle_;
    T* data_ = nullptr;
    std::size_t count_ = 0;
};

// One named T: SharedArray<T> of one element with value-style calls.
template <class T>
class SharedValue {
public:
    static constexpr bool is_lock_free = SharedArray<T>::is_lock_free;

    // Anonymous, like Python's Value(typecode, v): a unique name is picked (name() tells it).
    // Constrained so that create("name") never binds here (a string converts to bool).
    static SharedValue create() { return create(detail::anonymous_name("anon-value")); }
    template <class U>
        requires(!std::is_convertible_v<U, std::string_view> && std::is_convertible_v<U, T>)
    static SharedValue create(U&& initial, const SyncOptions& options = {}) {
        return create(detail::anonymous_name("anon-value"), static_cast<T>(std::forward<U>(initial)), options);
    }
    static SharedValue create(std::string_view name, const T& initial = T{}, const SyncOptions& options = {}) {
        SharedValue v(SharedArray<T>::create(name, 1, options));
        v.array_.store(0, initial);
        return v;
    }
    static SharedValue open(std::string_view name, const OpenOptions& options = {}) {
        return SharedValue(SharedArray<T>::open(name, options));
    }

    SharedValue() = default;

    T load() const { return array_.load(0); }
    void store(const T& v) { array_.store(0, v); }
    T exchange(const T& v) { return array_.exchange(0, v); }
    bool compare_exchange(T& expected, const T& desired) { return array_.compare_exchange(0, expected, desired); }
    T fetch_add(T d) requires std::is_arithmetic_v<T> && (!std::is_same_v<T, bool>) { return array_.fetch_add(0, d); }
    T fetch_sub(T d) requires std::is_arithmetic_v<T> && (!std::is_same_v<T, bool>) { return array_.fetch_sub(0, d); }
    void lock() { array_.lock(); }
    bool try_lock() { return array_.try_lock(); }
    void unlock() { array_.unlock(); }
    T* data() const { return array_.data(); }

    void persist() noexcept { array_.persist(); }
    const std::string& name() const noexcept { return array_.name(); }

private:
    explicit SharedValue(SharedArray<T> a) : array_(std::move(a)) {}
    SharedArray<T> array_;
};

}  // namespace shmpipe
