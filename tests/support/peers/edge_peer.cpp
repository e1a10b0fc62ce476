// edge_peer: the hostile or constrained side of the segment edge tests
// (tests/multiprocess/segment_edges.cpp). Never uses Catch2; reports through its exit code
// and one line per finding on stderr.
//
//   edge_peer small-shm <name>
//       In a private mount namespace (unshare(CLONE_NEWNS), needs CAP_SYS_ADMIN) mounts a
//       1 MiB tmpfs on /dev/shm and checks that creating what does not fit fails with
//       errc::no_space at create (never SIGBUS later), and that what fits works. The mount
//       disappears with the process. Prints every no_space message on stdout.
//   edge_peer hostile <name> <queue|sync> <rounds>
//       Maps the segment of <name> read-write, bypassing shmpipe, and for <rounds> rounds
//       rewrites each header (and queue control) field in turn with hostile values, holding
//       each for a moment and then restoring it.
//
// Exit codes: 0 every check held; 4 a check failed; 64 usage; 77 the environment cannot run
// the check (no mount namespace, not root): the test reports a skip, never a pass.
#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/queue.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <sched.h>
#include <string>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace sp = shmpipe;
using namespace std::chrono_literals;

namespace {

int failures = 0;

void fail(const std::string& what) {
    std::cerr << "edge_peer: FAILED: " << what << "\n";
    ++failures;
}

std::uint64_t free_in_dev_shm() {
    struct statvfs v {};
    if (::statvfs("/dev/shm", &v) != 0) return 0;
    return std::uint64_t{v.f_bavail} * v.f_frsize;
}

// Runs `create` and expects Error(no_space) whose message names /dev/shm and the sizes.
template <class F>
void expect_no_space(const std::string& what, F&& create) {
    try {
        create();
        fail(what + ": created although /dev/shm cannot hold it");
    } catch (const sp::Error& e) {
        if (e.code() != sp::errc::no_space) {
            fail(what + ": expected no_space, got: " + e.what());
            return;
        }
        const std::string m = e.what();
        if (m.find("/dev/shm") == std::string::npos || m.find("asked") == std::string::npos ||
            m.find("free") == std::string::npos || m.find("--shm-size") == std::string::npos ||
            m.find("inspect-queues clean") == std::string::npos) {
            fail(what + ": the message lacks /dev/shm, the sizes or the hints: " + m);
        }
        std::cout << m << "\n";
    }
}

int small_shm(const std::string& name) {
    if (::unshare(CLONE_NEWNS) != 0) {
        std::cerr << "edge_peer: unshare(CLONE_NEWNS): " << std::strerror(errno) << "\n";
        return 77;
    }
    // Private propagation: the mount below must not leak into the parent namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777") != 0) {
        std::cerr << "edge_peer: mount tmpfs on /dev/shm: " << std::strerror(errno) << "\n";
        return 77;
    }
    const std::uint64_t room = free_in_dev_shm();
    if (room == 0 || room > (std::uint64_t{2} << 20)) {
        fail("the private /dev/shm has " + std::to_string(room) + " bytes free, expected about 1 MiB");
        return 4;
    }

    // 1. A queue larger than the whole tmpfs: refused at create, for both ring kinds.
    for (const auto kind : {sp::Endpoints::one, sp::Endpoints::many}) {
        sp::QueueOptions o;
        o.producers = o.consumers = kind;
        o.capacity = std::size_t{4} << 20;
        o.max_message = 1024;
        expect_no_space("4 MiB queue", [&] { (void)sp::Queue::create(name + ".q", o); });
        if (sp::exists(name + ".q")) fail("a refused queue left its segment behind");
    }

    // 2. A full /dev/shm: a filler leaves less than one page; a Mutex does not fit. Without
    //    the reservation its creator would die of SIGBUS on its first store.
    const std::string filler = "/dev/shm/" + name + ".filler";
    const int fd = ::open(filler.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fail("create the filler: " + std::string(std::strerror(errno)));
        return 4;
    }
    const std::uint64_t fill = free_in_dev_shm() - 2048;
    if (::posix_fallocate(fd, 0, static_cast<off_t>(fill)) != 0) fail("fill /dev/shm");
    ::close(fd);
    expect_no_space("Mutex on a full /dev/shm", [&] { (void)sp::Mutex::create(name + ".m"); });
    expect_no_space("small queue on a full /dev/shm", [&] {
        (void)sp::Queue::create(name + ".q2", sp::QueueOptions{});
    });
    ::unlink(filler.c_str());

    // 3. What fits works, end to end.
    try {
        auto m = sp::Mutex::create(name + ".m");
        m.lock();
        m.unlock();
        sp::QueueOptions o;
        o.producers = o.consumers = sp::Endpoints::many;
        o.capacity = 64 * 1024;
        o.max_message = 64;
        auto q = sp::Queue::create(name + ".q", o);
        sp::Producer<std::uint64_t> tx(name + ".q");
        sp::Consumer<std::uint64_t> rx(name + ".q");
        for (std::uint64_t i = 0; i < 2000; ++i) {
            tx.push(i);
            const auto v = rx.pop();
            if (!v || *v != i) {
                fail("queue in a small /dev/shm lost message " + std::to_string(i));
                break;
            }
        }
    } catch (const sp::Error& e) {
        fail(std::string("what fits failed: ") + e.what());
    }
    return failures == 0 ? 0 : 4;
}

// A raw read-write mapping of a segment file, bypassing every check shmpipe makes.
struct Raw {
    std::byte* base = nullptr;
    std::size_t size = 0;
};

Raw map_raw(const std::string& name) {
    const std::string path = "/dev/shm/" + sp::segment_name(name);
    const int fd = ::open(path.c_str(), O_RDWR);
    if (fd < 0) return {};
    struct stat st {};
    ::fstat(fd, &st);
    Raw r;
    r.size = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return {};
    r.base = static_cast<std::byte*>(p);
    return r;
}

// Rewrites the field of `bytes` bytes at `at` with each hostile value in turn, then restores it.
void torment(std::byte* at, std::size_t bytes, std::uint64_t size) {
    const std::uint64_t values[] = {0,
                                    1,
                                    63,
                                    size,
                                    size - 1,
                                    size + 4096,
                                    size * 2,
                                    std::uint64_t{1} << 31,
                                    std::uint64_t{1} << 40,
                                    ~std::uint64_t{0},
                                    ~std::uint64_t{0} - 63,
                                    0x4141414141414141ull};
    std::byte saved[8];
    std::memcpy(saved, at, bytes);
    for (const std::uint64_t v : values) {
        // A plain byte copy, like a careless or hostile writer; the readers race with it.
        std::memcpy(at, &v, bytes);
        std::this_thread::sleep_for(300us);
    }
    std::memcpy(at, saved, bytes);
    std::this_thread::sleep_for(300us);
}

int hostile(const std::string& name, const std::string& what, int rounds) {
    Raw r = map_raw(name);
    if (r.base == nullptr) {
        fail("map " + name);
        return 4;
    }
    using sp::detail::SegmentHeader;
    struct Field {
        const char* name;  // for a debugger: which field was being rewritten
        std::size_t offset, bytes;
    };
    std::vector<Field> fields = {
        {"magic", offsetof(SegmentHeader, magic), 8},
        {"version", offsetof(SegmentHeader, version), 4},
        {"kind", offsetof(SegmentHeader, kind), 4},
        {"total_size", offsetof(SegmentHeader, total_size), 8},
        {"header_size", offsetof(SegmentHeader, header_size), 4},
        {"endpoint_count", offsetof(SegmentHeader, endpoint_count), 4},
        {"endpoint_offset", offsetof(SegmentHeader, endpoint_offset), 8},
        {"body_offset", offsetof(SegmentHeader, body_offset), 8},
        {"body_size", offsetof(SegmentHeader, body_size), 8},
        {"flags", offsetof(SegmentHeader, flags), 4},
        {"type_hash", offsetof(SegmentHeader, type_hash), 8},
        {"type_size", offsetof(SegmentHeader, type_size), 4},
    };
    const auto& h = *reinterpret_cast<const SegmentHeader*>(r.base);
    const std::size_t body = static_cast<std::size_t>(h.body_offset);  // read once, before any rewrite
    if (what == "queue") {
        using sp::detail::QueueControl;
        const std::pair<const char*, std::size_t> q[] = {
            {"capacity", offsetof(QueueControl, capacity)},       {"max_message", offsetof(QueueControl, max_message)},
            {"ring_offset", offsetof(QueueControl, ring_offset)}, {"data_offset", offsetof(QueueControl, data_offset)},
            {"cells_offset", offsetof(QueueControl, cells_offset)}, {"cell_count", offsetof(QueueControl, cell_count)},
            {"cell_stride", offsetof(QueueControl, cell_stride)},
        };
        for (const auto& [n, off] : q) fields.push_back({n, body + off, 8});
        fields.push_back({"queue flags", body + offsetof(QueueControl, flags), 4});
    }
    for (int round = 0; round < rounds; ++round) {
        for (const auto& f : fields) torment(r.base + f.offset, f.bytes, r.size);
    }
    ::munmap(r.base, r.size);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: edge_peer small-shm <name> | hostile <name> <queue|sync> <rounds>\n";
        return 64;
    }
    const std::string role = argv[1];
    try {
        if (role == "small-shm") return small_shm(argv[2]);
        if (role == "hostile" && argc == 5) return hostile(argv[2], argv[3], std::atoi(argv[4]));
    } catch (const std::exception& e) {
        std::cerr << "edge_peer: unexpected exception: " << e.what() << "\n";
        return 4;
    }
    std::cerr << "edge_peer: usage error\n";
    return 64;
}
