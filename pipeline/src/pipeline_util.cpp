// Shared helpers of the pipeline library: exit/signal wording, write_all, PATH lookup.
#include <shmpipe/detail/exit_text.hpp>
#include <shmpipe/detail/sys_util.hpp>

#include <cerrno>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace shmpipe::detail {

std::string signal_name(int sig) {
    if (const char* abbrev = ::sigabbrev_np(sig); abbrev != nullptr) return std::string("SIG") + abbrev;
    return "signal " + std::to_string(sig);
}

std::string describe_exit(int code) {
    if (code >= 0) return "exited with code " + std::to_string(code);
    return "was killed by signal " + std::to_string(-code) + " (" + signal_name(-code) + ")";
}

bool write_all(int fd, const void* p, std::size_t n) noexcept {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        const ssize_t w = ::write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        c += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

bool is_executable_file(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0 &&
           ::access(path.c_str(), X_OK) == 0;
}

std::vector<std::string> split_path(std::string_view path_var) {
    std::vector<std::string> dirs;
    std::size_t start = 0;
    while (start <= path_var.size()) {
        std::size_t end = path_var.find(':', start);
        if (end == std::string_view::npos) end = path_var.size();
        const std::string_view dir = path_var.substr(start, end - start);
        dirs.emplace_back(dir.empty() ? std::string_view(".") : dir);
        start = end + 1;
    }
    return dirs;
}

std::string find_executable(const std::string& name, std::span<const std::string> dirs) {
    for (const auto& d : dirs) {
        const std::string path = d.empty() ? name : (d.back() == '/' ? d + name : d + "/" + name);
        if (is_executable_file(path)) return path;
    }
    return {};
}

}  // namespace shmpipe::detail
