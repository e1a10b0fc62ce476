// The segment layer: one POSIX shared-memory segment per named object, with a common,
// validated header and a table of attached endpoints. Queues, pipes and synchronisation
// objects put their own layout in the body; inspect-queues reads header and table.
//
// Layout (offsets from the start of the mapping, all checked against its size on open):
//   [0, header_size)                          SegmentHeader
//   [endpoint_offset, + endpoint_count * 64)  EndpointRecord table
//   [body_offset, body_offset + body_size)    kind-specific body
//
// Creation: the creator makes the segment with O_EXCL, sizes it, reserves its memory
// (posix_fallocate: a full /dev/shm fails here with errc::no_space, never later with SIGBUS),
// fills it, and publishes `magic` last with a release store; an opener that sees magic == 0
// waits briefly (the creator is still initialising) and then refuses the segment.
// Opening: the header's geometry (kind, endpoint table, body) is copied once into the
// handle, validated there and never read from shared memory again: a process that can write
// the segment cannot steer an attached process outside its mapping. The segment must belong
// to the calling user (st_uid == geteuid()) unless OpenOptions::allow_foreign_owner.
// A peer that dies leaves the segment: the header names the creator (pid + start time) and
// every endpoint record names its process, so liveness can be decided by anyone.
// The big picture (all layouts, the wake-up protocol, crash semantics): docs/architecture.md.
#pragma once

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/object.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

namespace shmpipe::detail {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::uint64_t kMagic = 0x3145504950'4d4853ull;  // "SHMPIPE1" read as little-endian bytes
inline constexpr std::uint32_t kLayoutVersion = 5;  // 2: queue seal, JoinableQueue; 3: two-line EndpointRecord (doorbell); 4: SPSC statistics lines; 5: typed SPSC queues
inline constexpr std::uint32_t kMaxEndpoints = 1024;

enum class ObjectKind : std::uint32_t {
    spsc_queue = 1,
    mpmc_queue = 2,
    pipe = 3,
    semaphore = 4,
    mutex = 5,
    event = 6,
    barrier = 7,
    condition = 8,
    shared_array = 9,
    bridge_status = 10,  // a bridged queue's remote side, published by pipeline-launch --host
};
const char* kind_name(ObjectKind kind) noexcept;   // "spsc-queue", "semaphore", ...; "unknown"
bool kind_known(std::uint32_t kind) noexcept;

// attaching: claimed, fields being written (readers skip it; a dead claimer's record is
// recycled by pid check alone).
enum class EndpointState : std::uint32_t { free = 0, open = 1, closed = 2, dead = 3, attaching = 4 };
enum class EndpointRole : std::uint32_t { none = 0, producer = 1, consumer = 2, user = 3 };
const char* role_name(EndpointRole role) noexcept;  // "producer", "consumer", "user"

// State bits of the whole object (SegmentHeader::state).
inline constexpr std::uint32_t kStateClosed = 1u << 0;   // ended cleanly (e.g. all producers closed)
inline constexpr std::uint32_t kStateBroken = 1u << 1;   // marked broken: every waiter gives up
inline constexpr std::uint32_t kStatePeerDied = 1u << 2; // an endpoint died without closing

// One attached endpoint. The record's owner writes it; anyone may read it; a process that
// finds the owner dead may move `word` from open to dead with a CAS (once).
struct alignas(kCacheLine) EndpointRecord {
    // pid (bits 32-63) | role (bits 8-15) | state (bits 0-7): claimed with one CAS, so a
    // record never names a process that did not claim it.
    std::atomic<std::uint64_t> word;
    std::atomic<std::uint64_t> start_time;   // of the process in `word`
    std::atomic<std::uint64_t> messages;     // moved through this endpoint, published in batches
    std::atomic<std::uint64_t> bytes;
    std::atomic<std::uint64_t> intent;       // kind-specific (MPMC: position being claimed)
    std::atomic<std::uint64_t> attached_ns;  // CLOCK_REALTIME
    std::atomic<std::uint32_t> sleeping;     // 1 while blocked in a futex wait
    std::atomic<std::uint32_t> generation;   // bumped on every claim of this record
    std::atomic<std::uint64_t> aux;          // kind-specific (joinable queue: messages taken, not yet done)
    // Second line: written by wakers too (they clear the armed bit), so kept off the line the
    // owner writes on every message (intent, counters).
    alignas(kCacheLine) std::atomic<std::uint64_t> doorbell;  // queues: readiness doorbell (D1 in queue_layout.hpp)
    std::uint64_t reserved[7];               // zero; room for later fields without a new table size

    static std::uint64_t pack(std::uint32_t pid, EndpointRole role, EndpointState state) noexcept {
        return (std::uint64_t{pid} << 32) | (std::uint64_t{static_cast<std::uint32_t>(role)} << 8) |
               static_cast<std::uint32_t>(state);
    }
    static std::uint32_t pid_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
    static EndpointRole role_of(std::uint64_t w) noexcept { return static_cast<EndpointRole>((w >> 8) & 0xff); }
    static EndpointState state_of(std::uint64_t w) noexcept { return static_cast<EndpointState>(w & 0xff); }
};
static_assert(sizeof(EndpointRecord) == 2 * kCacheLine && alignof(EndpointRecord) == kCacheLine);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

struct alignas(kCacheLine) SegmentHeader {
    // Identity: written once by the creator before `magic` is published.
    std::atomic<std::uint64_t> magic;
    std::uint32_t version;
    std::uint32_t kind;                // ObjectKind
    std::uint64_t total_size;          // bytes of the segment
    std::uint32_t header_size;         // sizeof(SegmentHeader)
    std::uint32_t endpoint_count;      // records in the table
    std::uint64_t endpoint_offset;
    std::uint64_t body_offset;
    std::uint64_t body_size;
    std::uint32_t creator_pid;
    std::uint32_t permissions;         // mode asked for at creation
    std::uint64_t creator_start_time;
    std::uint64_t created_ns;          // CLOCK_REALTIME
    std::uint64_t type_hash;           // creation-time type tag (0 = none; queues keep theirs in QueueControl)
    std::uint32_t type_size;           // element size for fixed-size types (0 = variable or untyped)
    std::uint32_t flags;               // kind-specific creation flags
    char name[208];                    // the user name, NUL-terminated (informational)

    // Live state, on its own cache line.
    alignas(kCacheLine) std::atomic<std::uint32_t> state;  // kState* bits
    std::atomic<std::uint32_t> waiters;                    // processes sleeping in futex waits
    std::atomic<std::uint32_t> died_pid;                   // last endpoint found dead
    std::atomic<std::uint32_t> state_seq;                  // futex word: bumped on state changes
    std::uint8_t reserved[kCacheLine - 16];
};
static_assert(sizeof(SegmentHeader) % kCacheLine == 0);

enum class Access { read_write, read_only };

// The geometry of a segment, copied from its header once and validated (open), or written
// by the creator (create). Process-local: never re-read from shared memory.
struct SegmentGeometry {
    ObjectKind kind = ObjectKind::spsc_queue;
    std::uint32_t endpoint_count = 0;
    std::uint64_t endpoint_offset = 0;
    std::uint64_t body_offset = 0;
    std::uint64_t body_size = 0;
    std::uint32_t flags = 0;  // kind-specific creation flags
};

// Why an open was refused, as structure; callers compose the sentence (describe_problem),
// the inspector shows `reason` alone. Never parse a message back.
struct OpenProblem {
    std::error_code code;
    std::string reason;  // what is wrong, without the object's name: "bad magic number"
    std::string hint;    // what to do about it (may be empty)
};

// A mapped segment. Move-only. The creating handle owns the name and unlinks it on
// destruction (unless persist()), only in the creating process and only if the name still
// refers to the same segment.
class Segment {
public:
    struct CreateParams {
        std::string_view name;
        std::string_view what = "object";  // "queue", "semaphore": for messages
        ObjectKind kind = ObjectKind::spsc_queue;
        std::uint64_t body_size = 0;
        std::uint32_t endpoint_count = 0;
        mode_t permissions = kDefaultPermissions;
        std::uint64_t type_hash = 0;
        std::uint32_t type_size = 0;
        std::uint32_t flags = 0;
    };

    Segment() = default;
    Segment(Segment&& other) noexcept;
    Segment& operator=(Segment&& other) noexcept;
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;
    ~Segment();

    // Creates and maps a new segment; `init(body)` fills the body before magic is published.
    // Throws Error: invalid_name, already_exists, permission_denied, invalid_argument.
    template <class Init>
    static Segment create(const CreateParams& params, Init&& init) {
        Segment s = create_unpublished(params);
        init(s.body());
        s.publish();
        return s;
    }

    // Opens and validates an existing segment of `kind`. Throws Error: invalid_name,
    // not_found ("is the creator running?"), permission_denied (mode, or another user owns
    // it), corrupt, version_mismatch, wrong_kind.
    static Segment open(std::string_view name, std::string_view what, ObjectKind kind,
                        Access access = Access::read_write, const OpenOptions& options = {});
    // Opens any kind (the inspector, the queue layer); the same validation, the reason as
    // structure instead of an exception.
    static Segment open_any(std::string_view name, Access access, OpenProblem& problem,
                            const OpenOptions& options = {}) noexcept;

    explicit operator bool() const noexcept { return base_ != nullptr; }
    // The header's live part (state, waiters, died_pid) and identity. Its geometry fields are
    // untrusted: use geometry(), body(), endpoints() instead.
    SegmentHeader& header() const noexcept { return *static_cast<SegmentHeader*>(base_); }
    std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
    const SegmentGeometry& geometry() const noexcept { return geo_; }
    std::byte* body() const noexcept { return base() + geo_.body_offset; }
    std::uint64_t body_size() const noexcept { return geo_.body_size; }
    EndpointRecord* endpoints() const noexcept {
        return reinterpret_cast<EndpointRecord*>(base() + geo_.endpoint_offset);
    }
    std::uint32_t endpoint_count() const noexcept { return geo_.endpoint_count; }
    // Record `index`, or nullptr when the index is outside the validated table.
    EndpointRecord* endpoint(std::uint32_t index) const noexcept {
        return index < geo_.endpoint_count ? endpoints() + index : nullptr;
    }
    std::size_t size() const noexcept { return size_; }
    const std::string& name() const noexcept { return name_; }
    ObjectKind kind() const noexcept { return geo_.kind; }
    std::uint32_t flags() const noexcept { return geo_.flags; }
    bool owns_name() const noexcept { return owner_pid_ != 0; }

    // Keep the segment after this handle is destroyed.
    void persist() noexcept { owner_pid_ = 0; }
    // Unlinks now if this handle owns the name (and the name still refers to our segment).
    void unlink_if_owner() noexcept;

    // Claims a free endpoint record for this process, else recycles a closed or dead one.
    // Before recycling it calls make_room(), which should reap dead records with the
    // kind's own accounting (a queue counts dead producers); without make_room the segment
    // reaps open records of dead processes itself. Returns the index; throws
    // Error(too_many_endpoints) when every record belongs to a live process.
    // on_claimed() runs while the record is `attaching` (readers already see it as live),
    // before it opens: a kind counts the attach there, so no kill can separate the two.
    std::uint32_t attach_endpoint(EndpointRole role, std::string_view what,
                                  const std::function<void()>& make_room = {},
                                  const std::function<void()>& on_claimed = {});
    // Marks an open record closed (clean detach). Returns true for the one caller that moved
    // it from open to closed (false: already closed, or reaped as dead).
    bool close_endpoint(std::uint32_t index) noexcept;
    // If the process of an open record is dead, moves it to dead (one winner) and returns
    // true for the winner. Also sets kStatePeerDied and died_pid.
    bool reap_if_dead(std::uint32_t index) noexcept;

    // Sets state bits and wakes everyone sleeping on state_seq.
    void set_state(std::uint32_t bits) noexcept;

private:
    static Segment create_unpublished(const CreateParams& params);
    void publish() noexcept;
    void reset() noexcept;

    void* base_ = nullptr;
    std::size_t size_ = 0;
    SegmentGeometry geo_{};
    std::string name_;
    std::uint32_t owner_pid_ = 0;  // the creating process while it owns the name
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// Builds "<verb> <what> \"<name>\": <detail>" messages consistently.
std::string describe(std::string_view verb, std::string_view what, std::string_view name,
                     std::string_view detail);
// "<verb> <what> \"<name>\": shared memory \"shmpipe.<name>\" <reason> (<hint>)", with
// "is corrupt: " before the reason of a corrupt segment.
std::string describe_problem(std::string_view verb, std::string_view what, std::string_view name,
                             const OpenProblem& problem);
// Throws Error(problem.code) with describe_problem's sentence.
[[noreturn]] void throw_problem(std::string_view verb, std::string_view what, std::string_view name,
                                const OpenProblem& problem);

}  // namespace shmpipe::detail
