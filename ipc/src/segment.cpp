#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/error.hpp>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

Error errno_error(int err, std::string_view verb, std::string_view what, std::string_view name) {
    const std::string shm = segment_name(name);
    std::string detail;
    std::error_code ec(err, std::generic_category());
    switch (err) {
        case ENOENT:
            detail = "shared memory \"" + shm + "\" does not exist (is the creator running?)";
            ec = make_error_code(errc::not_found);
            break;
        case EEXIST:
            detail = "shared memory \"" + shm + "\" already exists (another run still alive? "
                     "`inspect-queues clean` removes stale objects)";
            ec = make_error_code(errc::already_exists);
            break;
        case EACCES:
        case EPERM:
            detail = "permission denied on \"" + shm + "\" (created by another user or with a stricter mode)";
            ec = make_error_code(errc::permission_denied);
            break;
        case ENOSPC:
        case ENOMEM:
            detail = "not enough space for \"" + shm + "\" in /dev/shm: " + std::strerror(err);
            break;
        default:
            detail = "\"" + shm + "\": " + std::strerror(err);
    }
    return Error(ec, describe(verb, what, name, detail));
}

}  // namespace

std::string describe(std::string_view verb, std::string_view what, std::string_view name,
                     std::string_view detail) {
    std::string s;
    s.reserve(verb.size() + what.size() + name.size() + detail.size() + 8);
    s.append(verb).append(" ").append(what).append(" \"").append(name).append("\": ").append(detail);
    return s;
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
    }
    return "unknown";
}

bool kind_known(std::uint32_t kind) noexcept {
    return kind >= static_cast<std::uint32_t>(ObjectKind::spsc_queue) &&
           kind <= static_cast<std::uint32_t>(ObjectKind::shared_array);
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
    if (fd < 0) throw errno_error(errno, "create", p.what, p.name);
    auto fail = [&](int err) {
        ::close(fd);
        ::shm_unlink(shm.c_str());
        throw errno_error(err, "create", p.what, p.name);
    };
    // shm_open applies the umask; the caller's mode is what they asked for.
    if (::fchmod(fd, p.permissions & 0777) != 0) fail(errno);
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) fail(errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(errno);
    void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) fail(errno);
    ::close(fd);

    Segment s;
    s.base_ = base;
    s.size_ = total;
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

Segment Segment::open_any(std::string_view name, Access access, std::error_code& ec,
                          std::string* message) noexcept {
    auto fail = [&](std::error_code code, const std::string& text) {
        ec = code;
        if (message != nullptr) *message = text;
        return Segment{};
    };
    try {
        validate_name(name, "object");
    } catch (const Error& e) {
        return fail(e.code(), e.what());
    }
    const std::string shm = shm_path(name);
    const bool rw = access == Access::read_write;
    const int fd = ::shm_open(shm.c_str(), (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0) {
        const Error e = errno_error(errno, "open", "object", name);
        return fail(e.code(), e.what());
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const Error e = errno_error(errno, "open", "object", name);
        ::close(fd);
        return fail(e.code(), e.what());
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const std::string where = "shared memory \"" + segment_name(name) + "\" ";
    if (size < sizeof(SegmentHeader)) {
        ::close(fd);
        return fail(make_error_code(errc::corrupt),
                    where + "is " + std::to_string(size) + " bytes, too small to be a shmpipe object "
                    "(truncated, or not made by shmpipe; `inspect-queues clean --corrupt` removes it)");
    }
    void* base = ::mmap(nullptr, size, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    const int map_err = errno;
    ::close(fd);
    if (base == MAP_FAILED) {
        const Error e = errno_error(map_err, "map", "object", name);
        return fail(e.code(), e.what());
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
        return fail(make_error_code(errc::corrupt),
                    where + "is corrupt: " + why + " (not made by this shmpipe, or overwritten; "
                    "`inspect-queues clean --corrupt` removes it)");
    };
    if (magic == 0) return corrupt("never initialised (its creator died while creating it?)");
    if (magic != kMagic) return corrupt("bad magic number");
    if (h.version != kLayoutVersion) {
        return fail(make_error_code(errc::version_mismatch),
                    where + "has layout version " + std::to_string(h.version) + ", this shmpipe reads version " +
                    std::to_string(kLayoutVersion) + " (mixing shmpipe releases?)");
    }
    if (!kind_known(h.kind)) return corrupt("unknown object kind " + std::to_string(h.kind));
    if (h.total_size != size) {
        return corrupt("header says " + std::to_string(h.total_size) + " bytes, segment has " + std::to_string(size));
    }
    if (h.header_size != sizeof(SegmentHeader)) return corrupt("bad header size");
    if (h.endpoint_count > kMaxEndpoints) return corrupt("endpoint count out of range");
    if (h.endpoint_offset < sizeof(SegmentHeader) || h.endpoint_offset % alignof(EndpointRecord) != 0 ||
        h.endpoint_offset > size ||
        std::uint64_t{h.endpoint_count} * sizeof(EndpointRecord) > size - h.endpoint_offset) {
        return corrupt("endpoint table outside the segment");
    }
    if (h.body_offset < h.endpoint_offset + std::uint64_t{h.endpoint_count} * sizeof(EndpointRecord) ||
        h.body_offset % kCacheLine != 0 || h.body_offset > size || h.body_size > size - h.body_offset) {
        return corrupt("body outside the segment");
    }
    if (rw) s.owner_pid_ = 0;
    ec.clear();
    return s;
}

Segment Segment::open(std::string_view name, std::string_view what, ObjectKind kind, Access access) {
    validate_name(name, what);
    std::error_code ec;
    std::string message;
    Segment s = open_any(name, access, ec, &message);
    if (ec) {
        // Re-phrase with what the caller thinks it opens.
        const std::string prefix = "open object \"" + std::string(name) + "\": ";
        if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
        throw Error(ec, describe("open", what, name, message));
    }
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
    if (index >= endpoint_count()) return false;
    auto& r = endpoints()[index];
    std::uint64_t w = r.word.load(std::memory_order_acquire);
    while (EndpointRecord::state_of(w) == EndpointState::open) {
        const std::uint64_t closed = EndpointRecord::pack(EndpointRecord::pid_of(w), EndpointRecord::role_of(w),
                                                          EndpointState::closed);
        if (r.word.compare_exchange_weak(w, closed, std::memory_order_acq_rel)) return true;
    }
    return false;
}

bool Segment::reap_if_dead(std::uint32_t index) noexcept {
    if (index >= endpoint_count()) return false;
    auto& r = endpoints()[index];
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
