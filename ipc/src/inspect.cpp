// Read-only inspection of shmpipe objects (see inspect.hpp for the rules).
//
// The order of work for one object:
//   1. lstat the name (identity, size, age; a non-regular file is corrupt);
//   2. Segment::open_any(read_only): validated header, PROT_READ mapping;
//   3. re-stat: same file, not smaller than the mapping (else: replaced or truncated);
//   4. copy_raw(): every value we need is loaded once from the mapping into a plain
//      RawSnapshot, re-validating the header and the queue geometry from the copied values
//      before any offset is used (optionally under a SIGBUS guard);
//   5. build(): derive depth, fill, totals and liveness from the snapshot only.
// Nothing here writes to the segment: the mapping is PROT_READ, so a stray store would fault.
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/queue_state.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/sigbus_guard.hpp>
#include <shmpipe/detail/sync_layout.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/inspect.hpp>
#include <shmpipe/object.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <memory>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shmpipe {
namespace {

using detail::EndpointRecord;
using detail::EndpointRole;
using detail::EndpointState;
using detail::kMaxEndpoints;
using detail::ObjectKind;
using detail::SegmentHeader;

struct RawEndpoint {
    std::uint64_t word;
    std::uint64_t start_time;
    std::uint64_t messages;
    std::uint64_t bytes;
    std::uint64_t attached_ns;
    std::uint64_t intent;
    std::uint32_t sleeping;
};

struct RawLock {
    std::uint32_t word, inconsistent, depth, waiters, died_tid;
    std::uint64_t owner, recoveries;
};

// Everything read from a mapping, copied once. Trivially destructible: copy_raw() may be
// left by siglongjmp.
struct RawSnapshot {
    std::uint32_t kind;
    std::uint32_t creator_pid;
    std::uint32_t permissions;
    std::uint32_t endpoint_count;
    std::uint64_t creator_start_time;
    std::uint64_t created_ns;
    std::uint64_t body_size;
    std::uint32_t state;
    std::uint32_t waiters;
    std::uint32_t died_pid;
    bool is_queue;
    detail::QueueGeometry geometry;
    std::uint32_t expected_producers;
    detail::ProducerCounts producers;
    std::uint64_t abandoned, lost;
    detail::RingCounts ring;
    std::uint32_t consumers_waiting, producers_waiting;
    std::uint32_t flags;  // header: kind-specific creation flags
    bool has_sync;
    RawLock lock;  // mutex, shared array
    std::uint32_t sem_count, sem_waiters, sem_max, sem_initial, sem_died_pid;
    std::uint64_t sem_recovered;
    std::uint32_t ev_flag, ev_waiters;
    std::uint64_t ev_sets;
    std::uint32_t bar_parties, bar_reason, bar_pid, bar_waiters;
    std::uint64_t bar_state;
    std::uint32_t cond_seq, cond_waiters;
    std::uint64_t cond_notifies;
    std::uint64_t arr_count, arr_data_offset;
    std::uint32_t arr_elem_size, arr_flags;
    const char* problem;  // why the copy was refused (static string)
    RawEndpoint endpoints[kMaxEndpoints];
};


// [offset, offset + length) lies inside [0, size), without overflow.
bool fits(std::uint64_t offset, std::uint64_t length, std::uint64_t size) noexcept {
    return offset <= size && length <= size - offset;
}

bool is_queue_kind(std::uint32_t kind) noexcept {
    return kind == static_cast<std::uint32_t>(ObjectKind::spsc_queue) ||
           kind == static_cast<std::uint32_t>(ObjectKind::mpmc_queue);
}

void copy_lock(const detail::RobustLock& l, RawLock& out) noexcept {
    out.word = l.word.load(std::memory_order_relaxed);  // informational: no data is read under it
    out.inconsistent = l.inconsistent.load(std::memory_order_relaxed);
    out.owner = l.owner.load(std::memory_order_relaxed);
    out.depth = l.depth.load(std::memory_order_relaxed);
    out.waiters = l.waiters.load(std::memory_order_relaxed);
    out.recoveries = l.recoveries.load(std::memory_order_relaxed);
    out.died_tid = l.died_tid.load(std::memory_order_relaxed);
}

// Synchronisation bodies (sync_layout.hpp): plain loads of value/owner/waiters, after
// checking that the body is large enough for the kind's struct. Unknown sizes: no details.
bool copy_sync(const std::byte* body, std::uint64_t body_size, RawSnapshot& s) noexcept {
    s.has_sync = false;
    switch (static_cast<ObjectKind>(s.kind)) {
        case ObjectKind::mutex: {
            if (body_size < sizeof(detail::MutexBody)) break;
            copy_lock(reinterpret_cast<const detail::MutexBody*>(body)->lock, s.lock);
            s.has_sync = true;
            break;
        }
        case ObjectKind::semaphore: {
            if (body_size < sizeof(detail::SemaphoreBody)) break;
            const auto& b = *reinterpret_cast<const detail::SemaphoreBody*>(body);
            s.sem_count = b.count.load(std::memory_order_relaxed);
            s.sem_waiters = b.waiters.load(std::memory_order_relaxed);
            s.sem_max = b.max_count;
            s.sem_initial = b.initial;
            s.sem_recovered = b.recovered.load(std::memory_order_relaxed);
            s.sem_died_pid = b.died_pid.load(std::memory_order_relaxed);
            s.has_sync = true;
            break;
        }
        case ObjectKind::event: {
            if (body_size < sizeof(detail::EventBody)) break;
            const auto& b = *reinterpret_cast<const detail::EventBody*>(body);
            s.ev_flag = b.flag.load(std::memory_order_relaxed);
            s.ev_waiters = b.waiters.load(std::memory_order_relaxed);
            s.ev_sets = b.sets.load(std::memory_order_relaxed);
            s.has_sync = true;
            break;
        }
        case ObjectKind::barrier: {
            if (body_size < sizeof(detail::BarrierBody)) break;
            const auto& b = *reinterpret_cast<const detail::BarrierBody*>(body);
            s.bar_parties = b.parties;
            s.bar_state = b.state.load(std::memory_order_acquire);  // BP1: reason written before the break
            s.bar_reason = b.broken_reason.load(std::memory_order_relaxed);
            s.bar_pid = b.broken_pid.load(std::memory_order_relaxed);
            s.bar_waiters = b.waiters.load(std::memory_order_relaxed);
            s.has_sync = true;
            break;
        }
        case ObjectKind::condition: {
            if (body_size < sizeof(detail::ConditionBody)) break;
            const auto& b = *reinterpret_cast<const detail::ConditionBody*>(body);
            s.cond_seq = b.seq.load(std::memory_order_relaxed);
            s.cond_waiters = b.waiters.load(std::memory_order_relaxed);
            s.cond_notifies = b.notifies.load(std::memory_order_relaxed);
            s.has_sync = true;
            break;
        }
        case ObjectKind::shared_array: {
            if (body_size < sizeof(detail::SharedArrayBody)) break;
            const auto& b = *reinterpret_cast<const detail::SharedArrayBody*>(body);
            s.arr_count = b.count;
            s.arr_data_offset = b.data_offset;
            s.arr_elem_size = b.elem_size;
            s.arr_flags = b.flags;
            copy_lock(b.lock, s.lock);
            s.has_sync = true;
            break;
        }
        default:
            break;
    }
    return true;
}

// Loads what the inspector needs from the mapping [base, base + size). Every offset is
// checked against `size` using the copied value, never re-read: a writer changing the
// header meanwhile cannot steer a read outside the mapping. Loads are acquire where a
// writer publishes with release (endpoint word: the record's fields; ring indices), relaxed
// for counters (informational, may trail; a snapshot is stale as soon as it is taken).
bool copy_raw(const std::byte* base, std::uint64_t size, RawSnapshot& s) noexcept {
    if (size < sizeof(SegmentHeader)) {
        s.problem = "smaller than a segment header";
        return false;
    }
    const auto& h = *reinterpret_cast<const SegmentHeader*>(base);
    if (h.magic.load(std::memory_order_acquire) != detail::kMagic) {
        s.problem = "bad magic number";
        return false;
    }
    s.kind = h.kind;
    s.creator_pid = h.creator_pid;
    s.permissions = h.permissions;
    s.creator_start_time = h.creator_start_time;
    s.created_ns = h.created_ns;
    s.flags = h.flags;
    const std::uint64_t total = h.total_size;
    const std::uint32_t endpoint_count = h.endpoint_count;
    const std::uint64_t endpoint_offset = h.endpoint_offset;
    const std::uint64_t body_offset = h.body_offset;
    const std::uint64_t body_size = h.body_size;
    if (total != size) {
        s.problem = "header size does not match the segment";
        return false;
    }
    if (endpoint_count > kMaxEndpoints || endpoint_offset < sizeof(SegmentHeader) ||
        endpoint_offset % alignof(EndpointRecord) != 0 ||
        !fits(endpoint_offset, std::uint64_t{endpoint_count} * sizeof(EndpointRecord), size)) {
        s.problem = "endpoint table outside the segment";
        return false;
    }
    if (body_offset % detail::kCacheLine != 0 ||
        body_offset < endpoint_offset + std::uint64_t{endpoint_count} * sizeof(EndpointRecord) ||
        !fits(body_offset, body_size, size)) {
        s.problem = "body outside the segment";
        return false;
    }
    s.endpoint_count = endpoint_count;
    s.body_size = body_size;
    s.state = h.state.load(std::memory_order_acquire);
    s.waiters = h.waiters.load(std::memory_order_relaxed);
    s.died_pid = h.died_pid.load(std::memory_order_relaxed);

    const auto* table = reinterpret_cast<const EndpointRecord*>(base + endpoint_offset);
    for (std::uint32_t i = 0; i < endpoint_count; ++i) {
        const auto& r = table[i];
        auto& e = s.endpoints[i];
        e.word = r.word.load(std::memory_order_acquire);  // the owner's release store of `open`
        e.start_time = r.start_time.load(std::memory_order_relaxed);
        e.messages = r.messages.load(std::memory_order_relaxed);
        e.bytes = r.bytes.load(std::memory_order_relaxed);
        e.attached_ns = r.attached_ns.load(std::memory_order_relaxed);
        e.intent = r.intent.load(std::memory_order_relaxed);
        e.sleeping = r.sleeping.load(std::memory_order_relaxed);
    }

    s.is_queue = is_queue_kind(s.kind);
    if (!s.is_queue) return copy_sync(base + body_offset, body_size, s);
    if (body_size < sizeof(detail::QueueControl)) {
        s.problem = "queue body smaller than its control block";
        return false;
    }
    const std::byte* body = base + body_offset;
    const auto& ctl = *reinterpret_cast<const detail::QueueControl*>(body);
    // One copy of the geometry, validated by the library's own rule (queue_state.hpp)
    // before any offset in it is used.
    s.geometry = detail::copy_geometry(ctl, s.kind == static_cast<std::uint32_t>(ObjectKind::spsc_queue));
    s.expected_producers = ctl.expected_producers;
    s.producers = detail::load_producer_counts(ctl);
    s.abandoned = ctl.messages_abandoned.load(std::memory_order_relaxed);
    s.lost = ctl.messages_lost.load(std::memory_order_relaxed);
    if (const char* why = detail::validate_queue_geometry(s.geometry, body_size)) {
        s.problem = why;
        return false;
    }
    const auto& ring = *reinterpret_cast<const detail::RingIndices*>(body + s.geometry.ring_offset);
    s.ring = detail::load_ring_counts(ring);
    s.consumers_waiting = ring.consumers_waiting.load(std::memory_order_relaxed);
    s.producers_waiting = ring.producers_waiting.load(std::memory_order_relaxed);
    return true;
}

// copy_raw() under the SIGBUS guard (sigbus_guard.hpp); copy_raw stores plain values only.
bool guarded_copy(const std::byte* base, std::uint64_t size, RawSnapshot& s) noexcept {
    bool ok = false;
    if (detail::sigbus_guarded([&]() noexcept { ok = copy_raw(base, size, s); })) return ok;
    s.problem = "shrank while being read (SIGBUS)";
    return false;
}

std::string shm_path(std::string_view name) { return "/dev/shm/" + std::string(kSegmentPrefix) + std::string(name); }

std::uint64_t mtime_ns(const struct stat& st) noexcept {
    return static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull +
           static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
}

const char* endpoint_state_name(EndpointState st) noexcept {
    switch (st) {
        case EndpointState::free: return "free";
        case EndpointState::open: return "open";
        case EndpointState::closed: return "closed";
        case EndpointState::dead: return "dead";
        case EndpointState::attaching: return "attaching";
    }
    return "invalid";
}

void add_endpoint(ObjectInfo& info, std::uint32_t index, const RawEndpoint& e, bool held_units = false) {
    const EndpointState st = EndpointRecord::state_of(e.word);
    if (st == EndpointState::free) return;
    EndpointInfo ep;
    ep.index = index;
    ep.pid = EndpointRecord::pid_of(e.word);
    const auto role = EndpointRecord::role_of(e.word);
    ep.role = static_cast<std::uint32_t>(role) <= static_cast<std::uint32_t>(EndpointRole::user)
                  ? detail::role_name(role)
                  : "role-" + std::to_string(static_cast<std::uint32_t>(role));
    ep.start_time = e.start_time;
    // While attaching the start time is not written yet: the pid alone decides.
    ep.alive = ep.pid != 0 && detail::process_alive(ep.pid, st == EndpointState::attaching ? 0 : e.start_time);
    ep.state = endpoint_state_name(st);
    const bool live_state = st == EndpointState::open || st == EndpointState::attaching;
    if (st == EndpointState::open && !ep.alive) ep.state = "dead";  // died without closing, not reaped yet
    ep.messages = e.messages;
    ep.bytes = e.bytes;
    ep.sleeping = e.sleeping != 0;
    ep.attached_ns = e.attached_ns;
    if (held_units) ep.held_units = static_cast<std::uint32_t>(e.intent & detail::kHeldMask);
    if (live_state && ep.alive) {
        ++info.live_endpoints;
        if (ep.sleeping) ++info.sleepers;
    }
    info.endpoints.push_back(std::move(ep));
}

void lock_info(const RawLock& l, SyncInfo& out) {
    out.value_name = "locked";
    out.value = l.word != 0 ? 1 : 0;
    out.waiters = l.waiters;
    if (l.word != 0) {
        const std::uint32_t tid = l.word & detail::kLockTidMask;
        out.owner = tid;
        // L3: the owner field may still name the previous locker; trust its start time only
        // when it names the same TID as the word.
        const bool same = detail::owner_tid(l.owner) == tid;
        out.owner_alive = detail::process_alive(tid, same ? detail::owner_start(l.owner) : 0);
    }
    out.broken = l.inconsistent != 0;
    if (l.depth > 1) out.details.emplace_back("depth", l.depth);
    out.details.emplace_back("recoveries", l.recoveries);
    if (l.died_tid != 0) out.details.emplace_back("died_tid", l.died_tid);
}

SyncInfo build_sync(const RawSnapshot& s) {
    SyncInfo out;
    switch (static_cast<ObjectKind>(s.kind)) {
        case ObjectKind::mutex:
            lock_info(s.lock, out);
            break;
        case ObjectKind::semaphore:
            out.value_name = "count";
            out.value = s.sem_count;
            out.limit = s.sem_max;
            out.waiters = s.sem_waiters;
            out.details.emplace_back("initial", s.sem_initial);
            out.details.emplace_back("recovered", s.sem_recovered);
            if (s.sem_died_pid != 0) out.details.emplace_back("died_pid", s.sem_died_pid);
            break;
        case ObjectKind::event:
            out.value_name = "set";
            out.value = s.ev_flag != 0 ? 1 : 0;
            out.waiters = s.ev_waiters;
            out.details.emplace_back("sets", s.ev_sets);
            break;
        case ObjectKind::barrier:
            out.value_name = "arrived";
            out.value = detail::BarrierBody::count(s.bar_state);
            out.limit = s.bar_parties;
            out.waiters = s.bar_waiters;
            out.broken = detail::BarrierBody::broken(s.bar_state);
            out.details.emplace_back("generation", detail::BarrierBody::generation(s.bar_state));
            if (out.broken) {
                out.details.emplace_back("broken_reason", s.bar_reason);
                out.details.emplace_back("broken_pid", s.bar_pid);
            }
            break;
        case ObjectKind::condition:
            out.value_name = "notifications";
            out.value = s.cond_notifies;
            out.waiters = s.cond_waiters;
            out.details.emplace_back("seq", s.cond_seq);
            break;
        case ObjectKind::shared_array:
            lock_info(s.lock, out);
            out.value_name = "elements";
            out.value = s.arr_count;
            out.details.emplace_back("elem_size", s.arr_elem_size);
            out.details.emplace_back("lock_free", (s.arr_flags & detail::kArrayLockFree) != 0 ? 1 : 0);
            out.details.emplace_back("locked", s.lock.word != 0 ? 1 : 0);
            break;
        default:
            break;
    }
    return out;
}

void build(ObjectInfo& info, const RawSnapshot& s) {
    info.kind = detail::kind_known(s.kind) ? detail::kind_name(static_cast<ObjectKind>(s.kind)) : "unknown";
    info.creator_pid = s.creator_pid;
    info.creator_alive = s.creator_pid != 0 && detail::process_alive(s.creator_pid, s.creator_start_time);
    info.created_ns = s.created_ns;
    info.state_bits = s.state;
    info.waiters = s.waiters;
    info.died_pid = s.died_pid;
    info.permissions = s.permissions;
    const bool holders = s.kind == static_cast<std::uint32_t>(ObjectKind::semaphore) &&
                         (s.flags & detail::kSemaphoreRecoverHolders) != 0;
    for (std::uint32_t i = 0; i < s.endpoint_count; ++i) add_endpoint(info, i, s.endpoints[i], holders);

    bool ended = false;  // a queue: drained, and the end-of-stream rule holds
    if (s.is_queue) {
        info.is_queue = true;
        info.capacity = s.geometry.capacity;
        info.max_message = s.geometry.max_message;
        if (s.geometry.typed) info.slot_bytes = s.geometry.cell_stride;
        info.expected_producers = s.expected_producers;
        info.abandoned = s.abandoned;
        info.lost = s.lost;
        info.producers_waiting = s.producers_waiting;
        info.consumers_waiting = s.consumers_waiting;
        // MPMC bytes live in the endpoint records (published in batches, so they trail a little).
        std::uint64_t bytes_in = 0, bytes_out = 0;
        for (std::uint32_t i = 0; i < s.endpoint_count; ++i) {
            const auto& e = s.endpoints[i];
            if (EndpointRecord::state_of(e.word) == EndpointState::free) continue;
            const auto role = EndpointRecord::role_of(e.word);
            if (role == EndpointRole::producer) {
                bytes_in += e.bytes;
            } else if (role == EndpointRole::consumer) {
                bytes_out += e.bytes;
            }
        }
        const detail::QueueTotals t = detail::queue_totals(s.geometry, s.ring, bytes_in, bytes_out);
        detail::copy_totals(t, info);
        info.fill = s.geometry.spsc ? static_cast<double>(t.bytes_used) / static_cast<double>(s.geometry.capacity)
                                    : static_cast<double>(t.depth) / static_cast<double>(s.geometry.cell_count);
        ended = t.depth == 0 && detail::stream_ended(s.producers);
    }

    if (s.has_sync) info.sync = build_sync(s);
    if (info.live_endpoints == 0 && !info.creator_alive) {
        info.state = ObjectState::stale;
    } else if ((s.state & detail::kStateBroken) != 0 || (info.sync && info.sync->broken && s.kind == static_cast<std::uint32_t>(ObjectKind::barrier))) {
        info.state = ObjectState::broken;
    } else if ((s.state & detail::kStateClosed) != 0 || ended) {
        info.state = ObjectState::closed;
    } else {
        info.state = ObjectState::open;
    }
}

// For a segment that failed validation: read its header (and endpoint table) with pread,
// which cannot fault, to learn whether a live process still claims it. `clean --corrupt`
// must not remove an object a live process made or uses, even a damaged one.
void probe_liveness(const std::string& path, ObjectInfo& info) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    alignas(SegmentHeader) std::byte buf[sizeof(SegmentHeader)];
    if (::pread(fd, buf, sizeof buf, 0) == static_cast<ssize_t>(sizeof buf)) {
        SegmentHeader h;
        std::memcpy(static_cast<void*>(&h), buf, sizeof h);  // plain bytes: no shared access
        if (h.magic.load(std::memory_order_relaxed) == detail::kMagic) {
            info.creator_pid = h.creator_pid;
            info.creator_alive = h.creator_pid != 0 && detail::process_alive(h.creator_pid, h.creator_start_time);
            info.created_ns = h.created_ns;
            if (h.endpoint_count <= kMaxEndpoints && h.endpoint_offset >= sizeof(SegmentHeader) &&
                h.endpoint_offset < (std::uint64_t{1} << 40)) {
                for (std::uint32_t i = 0; i < h.endpoint_count; ++i) {
                    alignas(EndpointRecord) std::byte rb[sizeof(EndpointRecord)];
                    const auto off = static_cast<off_t>(h.endpoint_offset + std::uint64_t{i} * sizeof(EndpointRecord));
                    if (::pread(fd, rb, sizeof rb, off) != static_cast<ssize_t>(sizeof rb)) break;
                    EndpointRecord r;
                    std::memcpy(static_cast<void*>(&r), rb, sizeof r);
                    RawEndpoint e{r.word.load(std::memory_order_relaxed), r.start_time.load(std::memory_order_relaxed),
                                  r.messages.load(std::memory_order_relaxed), r.bytes.load(std::memory_order_relaxed),
                                  r.attached_ns.load(std::memory_order_relaxed), 0, r.sleeping.load(std::memory_order_relaxed)};
                    add_endpoint(info, i, e);
                }
            }
        }
    }
    ::close(fd);
}

bool matches(const std::string& name, const std::vector<std::string>& patterns) {
    if (patterns.empty()) return true;
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& p) { return ::fnmatch(p.c_str(), name.c_str(), 0) == 0; });
}

std::optional<ObjectInfo> inspect_once(std::string_view name, const InspectOptions& options, int attempt) {
    ObjectInfo info;
    info.name = std::string(name);
    const std::string path = shm_path(name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return std::nullopt;
        info.state = ObjectState::unreadable;
        info.problem = std::strerror(errno);
        return info;
    }
    info.file_size = static_cast<std::uint64_t>(st.st_size);
    info.file_mtime_ns = mtime_ns(st);
    info.dev = st.st_dev;
    info.ino = st.st_ino;
    if (!S_ISREG(st.st_mode)) {
        info.problem = "not a regular file";
        return info;
    }

    // The inspector only reads: it looks at every user's objects, as `ls /dev/shm` would.
    OpenOptions any_owner;
    any_owner.allow_foreign_owner = true;
    detail::OpenProblem problem;
    detail::Segment seg = detail::Segment::open_any(name, detail::Access::read_only, problem, any_owner);
    if (const std::error_code ec = problem.code) {
        if (ec == errc::not_found) return std::nullopt;  // removed meanwhile
        if (ec == errc::permission_denied) {
            info.state = ObjectState::unreadable;
            info.problem = "permission denied";
            return info;
        }
        info.state = ObjectState::corrupt;
        info.problem = ec == errc::invalid_name ? "not a valid shmpipe name" : problem.reason;
        probe_liveness(path, info);
        return info;
    }

    struct stat again {};
    if (::stat(path.c_str(), &again) != 0) return std::nullopt;  // removed meanwhile
    if (again.st_ino != st.st_ino || again.st_dev != st.st_dev) {
        // Replaced between lstat and open: look at the new one (once more at most).
        if (attempt == 0) return inspect_once(name, options, 1);
        return std::nullopt;
    }
    if (static_cast<std::uint64_t>(again.st_size) < seg.size()) {
        info.problem = "shrank to " + std::to_string(again.st_size) + " bytes after it was mapped";
        info.file_size = static_cast<std::uint64_t>(again.st_size);
        probe_liveness(path, info);
        return info;
    }

    auto snap = std::make_unique<RawSnapshot>();
    snap->problem = nullptr;
    const bool ok = options.catch_sigbus ? guarded_copy(seg.base(), seg.size(), *snap)
                                         : copy_raw(seg.base(), seg.size(), *snap);
    if (!ok) {
        info.state = ObjectState::corrupt;
        info.problem = snap->problem != nullptr ? snap->problem : "failed validation";
        probe_liveness(path, info);
        return info;
    }
    build(info, *snap);
    return info;
}

}  // namespace

const char* to_string(ObjectState state) noexcept {
    switch (state) {
        case ObjectState::open: return "open";
        case ObjectState::closed: return "closed";
        case ObjectState::broken: return "broken";
        case ObjectState::stale: return "stale";
        case ObjectState::corrupt: return "corrupt";
        case ObjectState::unreadable: return "unreadable";
    }
    return "unknown";
}

std::vector<std::string> list_object_names(std::error_code& ec) {
    std::vector<std::string> names;
    DIR* dir = ::opendir("/dev/shm");
    if (dir == nullptr) {
        ec = std::error_code(errno, std::generic_category());
        return names;
    }
    while (const dirent* e = ::readdir(dir)) {
        const std::string_view n = e->d_name;
        if (n.size() > kSegmentPrefix.size() && n.substr(0, kSegmentPrefix.size()) == kSegmentPrefix) {
            names.emplace_back(n.substr(kSegmentPrefix.size()));
        }
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    ec.clear();
    return names;
}

std::optional<ObjectInfo> inspect_object(std::string_view name, const InspectOptions& options) {
    return inspect_once(name, options, 0);
}

std::vector<ObjectInfo> inspect_all(const InspectOptions& options) {
    std::error_code ec;
    const auto names = list_object_names(ec);
    if (ec) throw Error(ec, "list shared memory objects: cannot read /dev/shm: " + ec.message());
    std::vector<ObjectInfo> result;
    for (const auto& n : names) {
        if (!matches(n, options.patterns)) continue;
        if (auto info = inspect_object(n, options)) result.push_back(std::move(*info));
    }
    return result;
}

bool removable(const ObjectInfo& info, bool corrupt_too) noexcept {
    switch (info.state) {
        case ObjectState::stale: return info.live_endpoints == 0 && !info.creator_alive;
        case ObjectState::corrupt: {
            if (!corrupt_too || info.live_endpoints != 0 || info.creator_alive) return false;
            const std::uint64_t now = detail::realtime_ns();
            return info.file_mtime_ns + kCorruptGraceNs <= now;
        }
        default: return false;
    }
}

std::vector<CleanResult> clean(bool corrupt_too, bool dry_run, const InspectOptions& options) {
    std::vector<CleanResult> results;
    for (const auto& info : inspect_all(options)) {
        if (!removable(info, corrupt_too)) continue;
        CleanResult r;
        r.name = info.name;
        r.state = info.state;
        if (info.state == ObjectState::stale) {
            r.reason = "stale: creator pid " + std::to_string(info.creator_pid) + " is gone and no live process is attached";
        } else {
            r.reason = "corrupt: " + info.problem;
        }
        if (!dry_run) {
            // Look again right before unlinking: it must still be removable and the same file.
            const auto now = inspect_object(info.name, options);
            if (!now) {
                r.reason = "already gone";
            } else if (now->dev != info.dev || now->ino != info.ino || !removable(*now, corrupt_too)) {
                r.reason = "kept: it changed while cleaning (now " + std::string(to_string(now->state)) + ")";
            } else {
                const std::string shm = "/" + std::string(kSegmentPrefix) + info.name;
                if (::shm_unlink(shm.c_str()) == 0) {
                    r.removed = true;
                } else if (errno != ENOENT) {
                    r.error = std::strerror(errno);
                } else {
                    r.reason = "already gone";
                }
            }
        }
        results.push_back(std::move(r));
    }
    return results;
}

}  // namespace shmpipe
