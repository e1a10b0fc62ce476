// Network namespaces a test makes itself (needs root and iproute2), for multi-host tests that
// must not touch any address but their own.
#pragma once

#include "test_support.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <system_error>
#include <unistd.h>
#include <vector>

namespace shmpipe::test {

// Two network namespaces joined by a veth pair, made by the test and removed by the
// destructor (deleting a namespace deletes its end of the pair). Addresses 198.18.0.1 and
// .2 (a benchmarking range) exist only inside them. Needs root and iproute2.
class NetnsPair {
public:
    NetnsPair() {
        remove_stale();
        const std::string tag = std::to_string(::getpid() % 100000);
        a_ = "shmpipe-t-" + tag + "-a";
        b_ = "shmpipe-t-" + tag + "-b";
        veth_b_ = "shpb" + tag;
        ok_ = ip({"netns", "add", a_}) && ip({"netns", "add", b_}) &&
              ip({"link", "add", "shpa" + tag, "netns", a_, "type", "veth", "peer", "name", veth_b_, "netns", b_}) &&
              ip({"-n", a_, "addr", "add", "198.18.0.1/24", "dev", "shpa" + tag}) &&
              ip({"-n", b_, "addr", "add", "198.18.0.2/24", "dev", veth_b_}) &&
              ip({"-n", a_, "link", "set", "shpa" + tag, "up"}) && ip({"-n", b_, "link", "set", veth_b_, "up"}) &&
              ip({"-n", a_, "link", "set", "lo", "up"}) && ip({"-n", b_, "link", "set", "lo", "up"});
    }
    ~NetnsPair() {
        ip({"netns", "del", a_});
        ip({"netns", "del", b_});
    }
    NetnsPair(const NetnsPair&) = delete;
    NetnsPair& operator=(const NetnsPair&) = delete;
    bool ok() const noexcept { return ok_; }
    const std::string& a() const noexcept { return a_; }
    const std::string& b() const noexcept { return b_; }
    bool link_down() { return ip({"-n", b_, "link", "set", veth_b_, "down"}); }
    std::string error;

private:
    // Namespaces of an earlier test run that was killed (a ctest timeout skips destructors):
    // "shmpipe-t-<pid>-a|b" whose process is gone.
    void remove_stale() {
        std::error_code ec;
        for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
            const std::string n = entry.path().filename().string();
            const std::string prefix = "shmpipe-t-";
            if (n.rfind(prefix, 0) != 0 || n.size() < prefix.size() + 3) continue;
            const std::string pid = n.substr(prefix.size(), n.size() - prefix.size() - 2);
            if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
            if (::kill(static_cast<pid_t>(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;
            test::run_program("/bin/ip", {"netns", "del", n}, std::chrono::seconds(10));
        }
    }
    bool ip(const std::vector<std::string>& args) {
        const auto r = test::run_program("/bin/ip", args, std::chrono::seconds(10));
        if (r.exit_code != 0 && error.empty()) error = "ip " + args[0] + " ... failed: " + r.err;
        return r.exit_code == 0;
    }
    std::string a_, b_, veth_b_;
    bool ok_ = false;
};

// Why namespace tests cannot run here, or empty.
inline std::string netns_unavailable() {
    if (::geteuid() != 0) return "not root";
    if (::access("/bin/ip", X_OK) != 0) return "no /bin/ip (iproute2)";
    return {};
}

}  // namespace shmpipe::test
