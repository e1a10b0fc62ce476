// Doorbells: the readiness descriptors behind Consumer::fd() and Producer::fd().
//
// A doorbell is an AF_UNIX datagram socket bound to the abstract address
// "\0shmpipe.bell.<16 hex digits>" (no file, gone with its last descriptor, so a killed
// process leaves nothing behind). Any process in the same network namespace rings it by
// sending one byte to that address: no descriptor passing, no shared file. The id is in
// the endpoint's record in the segment (EndpointRecord::doorbell, D1 in queue_layout.hpp),
// so a waker needs nothing but the segment.
//
// What the user polls is not the socket but an epoll set holding the socket and one pidfd
// per live peer endpoint (the other side of the queue): a peer that dies makes the set
// readable at once, without a thread and without a timer. Where pidfd_open is missing
// (Linux < 5.3) or fails, a one-shot 100 ms timerfd stands in, re-armed at every arm, the
// same bound a futex sleeper has for its re-check.
//
// An abstract socket has no permissions: another process in the namespace could ring it.
// That only costs a spurious wake-up, which level-style use (drain until empty, wait again)
// absorbs.
#pragma once

#include <shmpipe/detail/process_id.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace shmpipe::detail {

// D1 in queue_layout.hpp: the doorbell word is id | armed bit | counted bit.
inline constexpr std::uint64_t kBellArmed = std::uint64_t{1} << 63;    // set by the endpoint, cleared by a waker
inline constexpr std::uint64_t kBellCounted = std::uint64_t{1} << 62;  // the arm added one to consumers_waiting
inline constexpr std::uint64_t kBellIdMask = kBellCounted - 1;

// Rings doorbell `id` (any process, any thread): one non-blocking datagram. Never throws and
// never blocks: a doorbell that is gone is nobody's, one whose socket is full is readable already.
void ring_doorbell(std::uint64_t id) noexcept;

// One endpoint's doorbell. Move-only; owned by the endpoint core, used by one thread at a time.
class Doorbell {
public:
    Doorbell() = default;
    Doorbell(Doorbell&& other) noexcept;
    Doorbell& operator=(Doorbell&& other) noexcept;
    Doorbell(const Doorbell&) = delete;
    Doorbell& operator=(const Doorbell&) = delete;
    ~Doorbell() { reset(); }

    // Binds a fresh doorbell. Throws Error naming `verb` the queue `name` (descriptors exhausted, ...).
    static Doorbell open(std::string_view verb, std::string_view name);

    bool is_open() const noexcept { return epoll_ >= 0; }
    int fd() const noexcept { return epoll_; }            // the epoll set the user polls
    std::uint64_t id() const noexcept { return id_; }     // never 0, within kBellIdMask
    void ring() noexcept { ring_doorbell(id_); }          // makes fd() readable (level: until drained)

    // Empties the socket and the fallback timer. Returns true when a watched peer exited.
    bool drain() noexcept;
    // Watches exactly `peers` (pid + start time): new ones get a pidfd, gone ones are dropped.
    // Returns true when one of them is not alive any more (or its pid names another process).
    bool watch(std::span<const ProcessId> peers) noexcept;
    void reset() noexcept;

private:
    struct Watched {
        ProcessId who;
        int pidfd;  // -1: watched by the fallback timer
    };
    int epoll_ = -1, socket_ = -1, timer_ = -1;
    std::uint64_t id_ = 0;
    std::vector<Watched> watched_;
};

}  // namespace shmpipe::detail
