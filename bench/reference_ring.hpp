// The benchmark's reference: the smallest useful cross-process SPSC queue, to measure the
// practical ceiling of this machine. Fixed-size slots in a plain shm_open segment, a head
// and a tail on their own cache lines, a cached copy of the peer's index on each side,
// busy polling. Nothing else: no blocking, no end of stream, no crash safety, no checks of
// the shared data. Not for use outside bench/.
//
// I1  tail is written only by the producer, head only by the consumer (64-bit, never wrap).
// I2  0 <= tail - head <= slots; slots in [head, tail) belong to the consumer.
// P1  producer release-stores tail -> consumer acquire-loads tail: the slot is written.
// P2  consumer release-stores head -> producer acquire-loads head: the slot is free.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <new>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bench {

inline constexpr std::size_t kRefCacheLine = 64;

struct RefRingControl {
    alignas(kRefCacheLine) std::atomic<std::uint64_t> tail{0};  // I1: producer
    alignas(kRefCacheLine) std::atomic<std::uint64_t> head{0};  // I1: consumer
    alignas(kRefCacheLine) std::uint64_t slot_size = 0;
    std::uint64_t slot_count = 0;  // a power of two
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(offsetof(RefRingControl, head) - offsetof(RefRingControl, tail) >= kRefCacheLine);
static_assert(sizeof(RefRingControl) % kRefCacheLine == 0);

// How far apart slots are: each on lines of its own (slot_size rounded up to a cache line),
// or packed (rounded up to 8 bytes, as a typed shmpipe queue lays out its slots).
enum class RefStride { line, packed };

// A mapping of the segment "/<name>". create() makes and sizes it (the caller unlinks it
// with remove()); open() maps an existing one. Slots start on a cache line.
class RefRingSegment {
public:
    static RefRingSegment create(const std::string& name, std::size_t slot_size, std::size_t slot_count,
                                 RefStride how = RefStride::line) {
        if (slot_count == 0 || (slot_count & (slot_count - 1)) != 0) throw std::invalid_argument("slot_count must be a power of two");
        const std::size_t unit = how == RefStride::line ? kRefCacheLine : 8;
        const std::size_t stride = (slot_size + unit - 1) / unit * unit;
        const std::size_t bytes = sizeof(RefRingControl) + stride * slot_count;
        const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0) throw std::runtime_error("reference ring: shm_open(" + name + ") failed");
        if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
            ::close(fd);
            throw std::runtime_error("reference ring: ftruncate failed");
        }
        RefRingSegment s(fd, bytes);
        auto* c = new (s.base_) RefRingControl();
        c->slot_size = stride;
        c->slot_count = slot_count;
        return s;
    }
    static RefRingSegment open(const std::string& name) {
        const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
        if (fd < 0) throw std::runtime_error("reference ring: shm_open(" + name + ") failed");
        struct stat st{};
        if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(RefRingControl)) {
            ::close(fd);
            throw std::runtime_error("reference ring: bad segment " + name);
        }
        return RefRingSegment(fd, static_cast<std::size_t>(st.st_size));
    }
    static void remove(const std::string& name) noexcept { ::shm_unlink(("/" + name).c_str()); }

    RefRingSegment(RefRingSegment&& o) noexcept : base_(o.base_), bytes_(o.bytes_) { o.base_ = nullptr; }
    RefRingSegment& operator=(RefRingSegment&&) = delete;
    ~RefRingSegment() {
        if (base_ != nullptr) ::munmap(base_, bytes_);
    }

    RefRingControl& control() const noexcept { return *static_cast<RefRingControl*>(base_); }
    std::byte* slots() const noexcept { return static_cast<std::byte*>(base_) + sizeof(RefRingControl); }

private:
    RefRingSegment(int fd, std::size_t bytes) : bytes_(bytes) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw std::runtime_error("reference ring: mmap failed");
        base_ = p;
    }
    void* base_ = nullptr;
    std::size_t bytes_ = 0;
};

// Producer side: try_reserve() a slot, fill it, commit().
class RefRingProducer {
public:
    explicit RefRingProducer(const RefRingSegment& s) noexcept
        : c_(s.control()), slots_(s.slots()), stride_(c_.slot_size), mask_(c_.slot_count - 1) {}

    std::byte* try_reserve() noexcept {
        if (tail_ - cached_head_ > mask_) {                          // looks full
            cached_head_ = c_.head.load(std::memory_order_acquire);  // P2
            if (tail_ - cached_head_ > mask_) return nullptr;
        }
        return slots_ + (tail_ & mask_) * stride_;  // I2: ours
    }
    void commit() noexcept { c_.tail.store(++tail_, std::memory_order_release); }  // P1

private:
    RefRingControl& c_;
    std::byte* slots_;
    std::uint64_t stride_, mask_;
    std::uint64_t tail_ = 0;  // I1: only we write it, so our copy is exact
    std::uint64_t cached_head_ = 0;
};

// Consumer side: try_peek() the oldest slot, read it in place, release().
class RefRingConsumer {
public:
    explicit RefRingConsumer(const RefRingSegment& s) noexcept
        : c_(s.control()), slots_(s.slots()), stride_(c_.slot_size), mask_(c_.slot_count - 1) {}

    const std::byte* try_peek() noexcept {
        if (head_ == cached_tail_) {
            cached_tail_ = c_.tail.load(std::memory_order_acquire);  // P1
            if (head_ == cached_tail_) return nullptr;
        }
        return slots_ + (head_ & mask_) * stride_;  // I2: ours until release
    }
    void release() noexcept { c_.head.store(++head_, std::memory_order_release); }  // P2

private:
    RefRingControl& c_;
    const std::byte* slots_;
    std::uint64_t stride_, mask_;
    std::uint64_t head_ = 0;  // I1
    std::uint64_t cached_tail_ = 0;
};

}  // namespace bench
