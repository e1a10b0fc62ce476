// Read-only inspection of shmpipe objects: what `inspect-queues` shows and what its `clean`
// removes. Any process may call these functions; they never throw on a bad object.
//
//   for (const auto& o : shmpipe::inspect_all()) std::cout << o.name << ' ' << to_string(o.state) << '\n';
//
// Read-only attach: an object is opened with a PROT_READ mapping (Segment::open_any with
// Access::read_only); inspecting never joins a queue, never takes a lock and never writes
// to the segment. Every value is copied once out of the mapping into a local snapshot and
// validated there (values in shared memory are untrusted: a hostile writer cannot make the
// inspector read outside the mapping, even by changing them while they are being read).
//
// Truncation: a segment shrunk by ftruncate after it was mapped raises SIGBUS on access.
// Before copying, the inspector re-stats the name and refuses a segment smaller than the
// mapping (reported as corrupt). That check is racy against a concurrent ftruncate, so
// with InspectOptions::catch_sigbus the copy also runs under a temporary SIGBUS handler
// (sigaction saved and restored around the copy, sigsetjmp/siglongjmp out of a copy loop
// that owns no objects); the tool turns it on. Library callers that do not want a handler
// installed leave it off: real shmpipe segments never shrink, only foreign writers can.
//
// States (decided in this order):
//   unreadable  the segment exists but we may not open it (permission)
//   corrupt     it fails validation (magic, version, sizes, queue geometry), is too small,
//               or shrank while being read
//   stale       no live process attached: no open endpoint whose process (pid + start
//               time) is alive, and the creator is dead
//   broken      marked broken (kStateBroken)
//   closed      ended cleanly (kStateClosed; a queue: drained and at its end of stream)
//   open        anything else
// A segment removed while it is being inspected is left out of the results.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace shmpipe {

enum class ObjectState { open, closed, broken, stale, corrupt, unreadable };
const char* to_string(ObjectState state) noexcept;  // "open", "closed", ...

struct EndpointInfo {
    std::uint32_t index = 0;         // record in the endpoint table
    std::uint32_t pid = 0;
    std::string role;                // "producer", "consumer", "user"
    std::string state;               // "open", "closed", "dead", "attaching"
    bool alive = false;              // pid + start time name a live process
    std::uint64_t start_time = 0;    // clock ticks since boot (/proc/<pid>/stat field 22)
    std::uint64_t messages = 0;      // through this endpoint, published in batches
    std::uint64_t bytes = 0;
    bool sleeping = false;           // blocked in a futex wait
    std::uint64_t attached_ns = 0;   // CLOCK_REALTIME
    std::optional<std::uint32_t> held_units;  // semaphores that recover holders: units held
};

// Value/owner/waiters of a synchronisation object (layouts in detail/sync_layout.hpp).
struct SyncInfo {
    std::string value_name;          // "locked", "count", "set", "arrived", "notifications", "elements"
    std::uint64_t value = 0;
    std::optional<std::uint64_t> limit;    // semaphore max count, barrier parties
    std::optional<std::uint32_t> owner;    // mutex / shared-array lock: owner thread id (TID)
    std::optional<bool> owner_alive;
    std::uint32_t waiters = 0;
    bool broken = false;             // barrier broken, or a lock recovered from a dead owner and not yet consistent
    std::vector<std::pair<std::string, std::uint64_t>> details;  // generation, recoveries, ...
};

struct ObjectInfo {
    std::string name;                // without the "shmpipe." prefix
    std::string kind = "unknown";    // "spsc-queue", "mpmc-queue", "semaphore", ...
    ObjectState state = ObjectState::corrupt;
    std::string problem;             // why corrupt/unreadable ("" otherwise)
    std::uint64_t file_size = 0;     // bytes of the segment file
    std::uint64_t file_mtime_ns = 0; // CLOCK_REALTIME
    std::uint64_t dev = 0, ino = 0;  // identity of the file that was inspected

    // Header (valid unless corrupt/unreadable).
    std::uint32_t creator_pid = 0;
    bool creator_alive = false;
    std::uint64_t created_ns = 0;    // CLOCK_REALTIME
    std::uint32_t state_bits = 0;    // detail::kState*
    std::uint32_t waiters = 0;       // header: processes sleeping in futex waits
    std::uint32_t died_pid = 0;      // last endpoint found dead (0 = none)
    std::uint32_t permissions = 0;
    std::vector<EndpointInfo> endpoints;  // every record not free, by index
    std::uint32_t sleepers = 0;      // live endpoints blocked in a futex wait
    std::uint32_t live_endpoints = 0;

    // Queues (is_queue): a snapshot, stale as soon as it is taken.
    bool is_queue = false;
    std::uint64_t capacity = 0;      // bytes of message storage
    std::uint64_t max_message = 0;
    std::uint64_t slot_bytes = 0;    // typed SPSC queue (Queue::create<T>): bytes per slot; 0 otherwise
    std::uint64_t depth = 0;         // messages waiting
    std::uint64_t bytes_used = 0;    // ring bytes in use (SPSC: with record headers; MPMC: cells * stride)
    double fill = 0.0;               // 0..1
    std::uint64_t messages_in = 0, messages_out = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::uint32_t producers_waiting = 0, consumers_waiting = 0;
    std::uint32_t expected_producers = 0;
    std::uint64_t abandoned = 0, lost = 0;  // MPMC recovery counts

    std::optional<SyncInfo> sync;    // synchronisation objects whose layout is known
};

struct InspectOptions {
    // Run the copy out of the mapping under a temporary SIGBUS handler (see above).
    bool catch_sigbus = false;
    // Glob patterns (fnmatch) on names; empty = every object.
    std::vector<std::string> patterns;
};

// Names (without prefix) of every "shmpipe.*" entry in /dev/shm, sorted. Entries of other
// prefixes are ignored. Sets ec when /dev/shm cannot be read.
std::vector<std::string> list_object_names(std::error_code& ec);

// Inspects one object. nullopt when it does not exist (or was removed meanwhile); never
// throws except std::bad_alloc.
std::optional<ObjectInfo> inspect_object(std::string_view name, const InspectOptions& options = {});

// Inspects every object matching options.patterns, sorted by name. Throws Error when
// /dev/shm cannot be read.
std::vector<ObjectInfo> inspect_all(const InspectOptions& options = {});

// True when `clean` may remove the object: stale, or (with corrupt) corrupt and older than
// kCorruptGrace (a segment being created is briefly unvalidated). Never an unreadable one,
// one with a live endpoint, or one whose creator is alive.
inline constexpr std::uint64_t kCorruptGraceNs = 2'000'000'000;
bool removable(const ObjectInfo& info, bool corrupt_too) noexcept;

struct CleanResult {
    std::string name;
    ObjectState state = ObjectState::stale;
    std::string reason;   // why it was (or would be) removed, or why it was kept
    bool removed = false; // false with dry_run, or when it changed meanwhile
    std::string error;    // non-empty when unlinking failed
};

// Removes (or with dry_run only reports) every removable object matching options.patterns.
// Each candidate is inspected again right before the unlink, and only unlinked if it is
// still removable and still the same file (device + inode). Throws Error when /dev/shm
// cannot be read. Limit: a process that attaches between that last check and the unlink
// keeps its mapping but loses the name.
std::vector<CleanResult> clean(bool corrupt_too, bool dry_run, const InspectOptions& options = {});

}  // namespace shmpipe
