#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/error.hpp>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace shmpipe {

void validate_name(std::string_view name, std::string_view what) {
    auto fail = [&](const std::string& detail) {
        throw Error(errc::invalid_name, std::string(what) + " name \"" + std::string(name) + "\": " + detail +
                                            " (names are 1-200 characters of A-Z a-z 0-9 . _ -)");
    };
    if (name.empty()) fail("is empty");
    if (name.size() > kMaxNameLength) fail("is " + std::to_string(name.size()) + " characters long");
    if (name == "." || name == "..") fail("is not a valid name");
    for (std::size_t i = 0; i < name.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(name[i]);
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '.' || c == '_' || c == '-';
        if (!ok) {
            char shown[16];
            if (c >= 0x20 && c < 0x7f) {
                std::snprintf(shown, sizeof shown, "'%c'", c);
            } else {
                std::snprintf(shown, sizeof shown, "byte 0x%02x", c);
            }
            fail("character " + std::string(shown) + " at position " + std::to_string(i + 1) + " is not allowed");
        }
    }
}

std::string segment_name(std::string_view name) {
    std::string s(kSegmentPrefix);
    s.append(name);
    return s;
}

namespace {
// Built with append(): GCC 12 warns falsely (-Wrestrict) on `"/" + std::string` at -O2.
std::string shm_path(std::string_view name) {
    std::string s("/");
    s.append(kSegmentPrefix).append(name);
    return s;
}
std::string dev_shm_path(std::string_view name) {
    std::string s("/dev/shm/");
    s.append(kSegmentPrefix).append(name);
    return s;
}
}  // namespace

bool remove(std::string_view name, std::error_code& ec) noexcept {
    try {
        validate_name(name, "object");
        const std::string shm = shm_path(name);
        if (::shm_unlink(shm.c_str()) != 0) {
            ec = std::error_code(errno, std::generic_category());
            return false;
        }
        ec.clear();
        return true;
    } catch (const Error& e) {
        ec = e.code();
    } catch (...) {
        ec = std::make_error_code(std::errc::not_enough_memory);
    }
    return false;
}

bool remove(std::string_view name) noexcept {
    std::error_code ec;
    return remove(name, ec);
}

bool exists(std::string_view name) noexcept {
    try {
        validate_name(name, "object");
        const std::string path = dev_shm_path(name);
        struct stat st {};
        return ::stat(path.c_str(), &st) == 0;
    } catch (...) {
        return false;
    }
}

}  // namespace shmpipe

namespace shmpipe::detail {
using shmpipe::shm_path;
using shmpipe::dev_shm_path;
namespace {

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

constexpr const char* kNoSpaceHint =
    "containers: raise it with `docker run --shm-size=...`; `inspect-queues clean` removes stale objects";

// The structure of an errno from shm_open/fstat/mmap: code, reason, hint.
OpenProblem errno_problem(int err) {
    switch (err) {
        case ENOENT: return {make_error_code(errc::not_found), "does not exist", "is the creator running?"};
        case EEXIST:
            return {make_error_code(errc::already_exists), "already exists",
                    "another run still alive? `inspect-queues clean` removes stale objects"};
        case EACCES:
        case EPERM:
            return {make_error_code(errc::permission_denied), "is not accessible: permission denied",
                    "created by another user or with a stricter mode"};
        case ENOSPC:
            return {make_error_code(errc::no_space), "does not fit in /dev/shm: " + std::string(std::strerror(err)),
                    kNoSpaceHint};
        default:
            return {std::error_code(err, std::generic_category()), std::strerror(err), ""};
    }
}

std::string bytes_text(std::uint64_t n) {
    std::string s = std::to_string(n) + " bytes";
    if (n >= (std::uint64_t{1} << 20)) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " (%.1f MiB)", static_cast<double>(n) / (1024.0 * 1024.0));
        s += buf;
    }
    return s;
}

// Bytes free for an unprivileged writer on the file system of fd (0 when unknown).
std::uint64_t free_bytes(int fd) noexcept {
    struct statvfs vfs {};
    if (::fstatvfs(fd, &vfs) != 0) return 0;
    return std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
}

}  // namespace

std::string describe(std::string_view verb, std::string_view what, std::string_view name,
                     std::string_view detail) {
    std::string s;
    s.reserve(verb.size() + what.size() + name.size() + detail.size() + 8);
    s.append(verb).append(" ").append(what).append(" \"").append(name).append("\": ").append(detail);
    return s;
}

std::string describe_problem(std::string_view verb, std::string_view what, std::string_view name,
                             const OpenProblem& problem) {
    std::string detail = "shared memory \"" + segment_name(name) + "\" ";
    if (problem.code == errc::corrupt) detail += "is corrupt: ";
    detail += problem.reason;
    if (!problem.hint.empty()) detail.append(" (").append(problem.hint).append(")");
    return describe(verb, what, name, detail);
}

void throw_problem(std::string_view verb, std::string_view what, std::string_view name, const OpenProblem& problem) {
    throw Error(problem.code, describe_problem(verb, what, name, problem));
}

const char* kind_name(ObjectKind kind) noexcept {
    switch (kind) {
        case ObjectKind::spsc_queue: return "spsc-queue";
        case ObjectKind::mpmc_queue: return "mpmc-queue";
        case ObjectKind::pipe: return "pipe";
        case ObjectKind::semaphore: return "semaphore";
        case ObjectKind::mutex: return "mutex";
        case ObjectKind::event: return "event";
        case ObjectKind::barrier: return "barrier";
        case ObjectKind::condition: return "condition";
        case ObjectKind::shared_array: return "shared-array";
        case ObjectKind::bridge_status: return "bridge-status";
    }
    return "unknown";
}

bool kind_known(std::uint32_t kind) noexcept {
    return kind >= static_cast<std::uint32_t>(ObjectKind::spsc_queue) &&
           kind <= static_cast<std::uint32_t>(ObjectKind::bridge_status);
}

const char* role_name(EndpointRole role) noexcept {
    switch (role) {
        case EndpointRole::producer: return "producer";
        case EndpointRole::consumer: return "consumer";
        case EndpointRole::user: return "user";
        case EndpointRole::none: break;
    }
    return "none";
}

Segment::Segment(Segment&& other) noexcept { *this = std::move(other); }

Segment& Segment::operator=(Segment&& other) noexcept {
    if (this != &other) {
        reset();
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
        name_ = std::move(other.name_);
        owner_pid_ = std::exchange(other.owner_pid_, 0);
        geo_ = other.geo_;
        dev_ = other.dev_;
        ino_ = other.ino_;
    }
    return *this;
}

Segment::~Segment() { reset(); }

void Segment::reset() noexcept {
    unlink_if_owner();
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
}

void Segment::unlink_if_owner() noexcept {
    if (owner_pid_ == 0 || owner_pid_ != static_cast<std::uint32_t>(::getpid())) return;
    owner_pid_ = 0;
    // Unlink only if the name still refers to the segment we created.
    const std::string path = dev_shm_path(name_);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
        ::shm_unlink(shm_path(name_).c_str());
    }
}

Segment Segment::create_unpublished(const CreateParams& p) {
    validate_name(p.name, p.what);
    if (p.endpoint_count > kMaxEndpoints) {
        throw Error(errc::invalid_argument, describe("create", p.what, p.name,
                    "at most " + std::to_string(kMaxEndpoints) + " endpoints"));
    }
    const std::uint64_t endpoint_offset = sizeof(SegmentHeader);
    const std::uint64_t body_offset =
        align_up(endpoint_offset + std::uint64_t{p.endpoint_count} * sizeof(EndpointRecord), 4096);
    const std::uint64_t total = align_up(body_offset + p.body_size, 4096);
    if (p.body_size > (std::uint64_t{1} << 40)) {
        throw Error(errc::invalid_argument, describe("create", p.what, p.name, "size too large"));
    }

    const std::string shm = shm_path(p.name);
    const int fd = ::shm_open(shm.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, p.permissions & 0777);
    if (fd < 0) throw_problem("create", p.what, p.name, errno_problem(errno));
    auto fail_with = [&](const OpenProblem& problem) {
        ::close(fd);
        ::shm_unlink(shm.c_str());
        throw_problem("create", p.what, p.name, problem);
    };
    auto fail = [&](int err) { fail_with(errno_problem(err)); };
    // shm_open applies the umask; the caller's mode is what they asked for.
    if (::fchmod(fd, p.permissions & 0777) != 0) fail(errno);
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) fail(errno);
    // Reserve every page now: ftruncate alone leaves a sparse file, and on a full tmpfs the
    // first store to an unbacked page raises SIGBUS, possibly much later and in a peer.
    const std::uint64_t available = free_bytes(fd);
    int err = 0;
    do {
        err = ::posix_fallocate(fd, 0, static_cast<off_t>(total));
    } while (err == EINTR);
    if (err == ENOSPC || err == ENOMEM || err == EFBIG) {
        fail_with({make_error_code(errc::no_space),
                   "does not fit in /dev/shm: " + bytes_text(total) + " asked, " + bytes_text(available) + " free",
                   std::string(kNoSpaceHint) + "; or ask for a smaller size"});
    }
    if (err != 0) fail(err);
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(errno);
    void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) fail(errno);
    ::close(fd);

    Segment s;
    s.base_ = base;
    s.size_ = total;
    s.geo_ = {p.kind, p.endpoint_count, endpoint_offset, body_offset, p.body_size, p.flags};
    s.name_ = std::string(p.name);
    s.owner_pid_ = static_cast<std::uint32_t>(::getpid());
    s.dev_ = st.st_dev;
    s.ino_ = st.st_ino;

    // ftruncate zero-fills: every atomic starts at 0, which is the value they need.
    auto& h = s.header();
    const ProcessId me = self_process();
    h.version = kLayoutVersion;
    h.kind = static_cast<std::uint32_t>(p.kind);
    h.total_size = total;
    h.header_size = sizeof(SegmentHeader);
    h.endpoint_count = p.endpoint_count;
    h.endpoint_offset = endpoint_offset;
    h.body_offset = body_offset;
    h.body_size = p.body_size;
    h.creator_pid = me.pid;
    h.permissions = static_cast<std::uint32_t>(p.permissions & 0777);
    h.creator_start_time = me.start_time;
    h.created_ns = realtime_ns();
    h.type_hash = p.type_hash;
    h.type_size = p.type_size;
    h.flags = p.flags;
    const std::size_t n = std::min(p.name.size(), sizeof(h.name) - 1);
    std::memcpy(h.name, p.name.data(), n);
    h.name[n] = '\0';
    return s;
}

void Segment::publish() noexcept {
    header().magic.store(kMagic, std::memory_order_release);  // pairs with the opener's acquire
}

Segment Segment::open_any(std::string_view name, Access access, OpenProblem& problem,
                          const OpenOptions& options) noexcept {
    auto fail = [&](std::error_code code, std::string reason, std::string hint) {
        problem = {code, std::move(reason), std::move(hint)};
        return Segment{};
    };
    constexpr const char* kCleanHint = "`inspect-queues clean --corrupt` removes it";
    try {
        validate_name(name, "object");
    } catch (const Error& e) {
        return fail(e.code(), e.what(), "");
    }
    const std::string shm = shm_path(name);
    const bool rw = access == Access::read_write;
    const int fd = ::shm_open(shm.c_str(), (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0) {
        problem = errno_problem(errno);
        return Segment{};
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        problem = errno_problem(errno);
        ::close(fd);
        return Segment{};
    }
    if (!options.allow_foreign_owner && st.st_uid != ::geteuid()) {
        ::close(fd);
        return fail(make_error_code(errc::permission_denied),
                    "belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
                        std::to_string(::geteuid()) + ")",
                    "another user may have taken the name first; pass OpenOptions::allow_foreign_owner "
                    "to accept a segment of another user");
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size < sizeof(SegmentHeader)) {
        ::close(fd);
        return fail(make_error_code(errc::corrupt),
                    std::to_string(size) + " bytes, too small to be a shmpipe object",
                    std::string("truncated, or not made by shmpipe; ") + kCleanHint);
    }
    void* base = ::mmap(nullptr, size, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    const int map_err = errno;
    ::close(fd);
    if (base == MAP_FAILED) {
        problem = errno_problem(map_err);
        return Segment{};
    }
    Segment s;
    s.base_ = base;
    s.size_ = size;
    s.name_ = std::string(name);
    s.dev_ = st.st_dev;
    s.ino_ = st.st_ino;

    const auto& h = s.header();
    // A creator still initialising has not published magic yet: give it a moment.
    std::uint64_t magic = h.magic.load(std::memory_order_acquire);
    for (int i = 0; magic == 0 && i < 100; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        magic = h.magic.load(std::memory_order_acquire);
    }
    auto corrupt = [&](const std::string& why) {
        return fail(make_error_code(errc::corrupt), why,
                    std::string("not made by this shmpipe, or overwritten; ") + kCleanHint);
    };
    if (magic == 0) return corrupt("never initialised (its creator died while creating it?)");
    if (magic != kMagic) return corrupt("bad magic number");
    // Every value is loaded once into a local, validated there, and only the locals are
    // used: a writer changing the header meanwhile cannot slip a value past the checks.
    const std::uint32_t version = h.version;
    const std::uint32_t kind = h.kind;
    const std::uint64_t total_size = h.total_size;
    const std::uint32_t header_size = h.header_size;
    SegmentGeometry g;
    g.endpoint_count = h.endpoint_count;
    g.endpoint_offset = h.endpoint_offset;
    g.body_offset = h.body_offset;
    g.body_size = h.body_size;
    g.flags = h.flags;
    if (version != kLayoutVersion) {
        return fail(make_error_code(errc::version_mismatch),
                    "has layout version " + std::to_string(version) + ", this shmpipe reads version " +
                        std::to_string(kLayoutVersion),
                    "mixing shmpipe releases?");
    }
    if (!kind_known(kind)) return corrupt("unknown object kind " + std::to_string(kind));
    g.kind = static_cast<ObjectKind>(kind);
    if (total_size != size) {
        return corrupt("header says " + std::to_string(total_size) + " bytes, segment has " + std::to_string(size));
    }
    if (header_size != sizeof(SegmentHeader)) return corrupt("bad header size");
    if (g.endpoint_count > kMaxEndpoints) return corrupt("endpoint count out of range");
    const std::uint64_t table = std::uint64_t{g.endpoint_count} * sizeof(EndpointRecord);
    if (g.endpoint_offset < sizeof(SegmentHeader) || g.endpoint_offset % alignof(EndpointRecord) != 0 ||
        g.endpoint_offset > size || table > size - g.endpoint_offset) {
        return corrupt("endpoint table outside the segment");
    }
    if (g.body_offset < g.endpoint_offset + table || g.body_offset % kCacheLine != 0 || g.body_offset > size ||
        g.body_size > size - g.body_offset) {
        return corrupt("body outside the segment");
    }
    s.geo_ = g;
    problem = {};
    return s;
}

Segment Segment::open(std::string_view name, std::string_view what, ObjectKind kind, Access access,
                      const OpenOptions& options) {
    validate_name(name, what);
    OpenProblem problem;
    Segment s = open_any(name, access, problem, options);
    if (problem.code) throw_problem("open", what, name, problem);
    if (s.kind() != kind) {
        throw Error(errc::wrong_kind, describe("open", what, name,
                    std::string("it is a ") + kind_name(s.kind()) + ", not a " + kind_name(kind)));
    }
    return s;
}

std::uint32_t Segment::attach_endpoint(EndpointRole role, std::string_view what,
                                       const std::function<void()>& make_room,
                                       const std::function<void()>& on_claimed) {
    const ProcessId me = self_process();
    EndpointRecord* table = endpoints();
    const std::uint32_t n = endpoint_count();
    for (int pass = 0; pass < 2; ++pass) {
        for (std::uint32_t i = 0; i < n; ++i) {
            auto& r = table[i];
            std::uint64_t w = r.word.load(std::memory_order_acquire);
            const auto st = EndpointRecord::state_of(w);
            // Pass 0 takes free records; pass 1 also recycles closed and dead ones (their
            // counters are folded into nothing: the inspector shows live ones).
            const bool usable =
                st == EndpointState::free ||
                (pass == 1 && (st == EndpointState::closed || st == EndpointState::dead ||
                               (st == EndpointState::attaching &&
                                !process_alive(EndpointRecord::pid_of(w), 0))));
            if (!usable) continue;
            // Claim as `attaching` first: a reaper ignores the record until start_time is ours.
            const std::uint64_t claiming = EndpointRecord::pack(me.pid, role, EndpointState::attaching);
            if (r.word.compare_exchange_strong(w, claiming, std::memory_order_acq_rel)) {
                r.start_time.store(me.start_time, std::memory_order_relaxed);
                r.messages.store(0, std::memory_order_relaxed);
                r.bytes.store(0, std::memory_order_relaxed);
                r.intent.store(~std::uint64_t{0}, std::memory_order_relaxed);
                r.attached_ns.store(realtime_ns(), std::memory_order_relaxed);
                r.sleeping.store(0, std::memory_order_relaxed);
                r.generation.fetch_add(1, std::memory_order_relaxed);
                if (on_claimed) on_claimed();
                // Release: a reader that sees `open` sees the fields above.
                r.word.store(EndpointRecord::pack(me.pid, role, EndpointState::open), std::memory_order_release);
                return i;
            }
        }
        // Before recycling, reap records whose processes died (with the kind's accounting).
        if (pass == 0) {
            if (make_room) {
                make_room();
            } else {
                for (std::uint32_t i = 0; i < n; ++i) reap_if_dead(i);
            }
        }
    }
    throw Error(errc::too_many_endpoints,
                describe("attach to", what, name_, "all " + std::to_string(n) +
                         " endpoint slots are in use by live processes"));
}

bool Segment::close_endpoint(std::uint32_t index) noexcept {
    EndpointRecord* rec = endpoint(index);
    if (rec == nullptr) return false;
    auto& r = *rec;
    std::uint64_t w = r.word.load(std::memory_order_acquire);
    while (EndpointRecord::state_of(w) == EndpointState::open) {
        const std::uint64_t closed = EndpointRecord::pack(EndpointRecord::pid_of(w), EndpointRecord::role_of(w),
                                                          EndpointState::closed);
        if (r.word.compare_exchange_weak(w, closed, std::memory_order_acq_rel)) return true;
    }
    return false;
}

bool Segment::reap_if_dead(std::uint32_t index) noexcept {
    EndpointRecord* rec = endpoint(index);
    if (rec == nullptr) return false;
    auto& r = *rec;
    std::uint64_t w = r.word.load(std::memory_order_acquire);
    if (EndpointRecord::state_of(w) != EndpointState::open) return false;
    const std::uint32_t pid = EndpointRecord::pid_of(w);
    if (process_alive(pid, r.start_time.load(std::memory_order_relaxed))) return false;
    const std::uint64_t dead = EndpointRecord::pack(pid, EndpointRecord::role_of(w), EndpointState::dead);
    if (!r.word.compare_exchange_strong(w, dead, std::memory_order_acq_rel)) return false;
    header().died_pid.store(pid, std::memory_order_relaxed);
    set_state(kStatePeerDied);
    return true;
}

void Segment::set_state(std::uint32_t bits) noexcept {
    auto& h = header();
    h.state.fetch_or(bits, std::memory_order_acq_rel);
    h.state_seq.fetch_add(1, std::memory_order_acq_rel);
    futex_wake(h.state_seq, INT_MAX);
}

}  // namespace shmpipe::detail
