// Small system helpers shared by Process, Graph and the spec reader. Not API.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe::detail {

// Writes all of [p, p + n) to fd, retrying on EINTR and short writes. False on any other
// error (errno set; EPIPE when the reader is gone). Async-signal-safe: only write(2).
bool write_all(int fd, const void* p, std::size_t n) noexcept;
inline bool write_all(int fd, std::string_view s) noexcept { return write_all(fd, s.data(), s.size()); }

// A regular file we may execute.
bool is_executable_file(const std::string& path);
// The directories of a PATH value; an empty entry means ".".
std::vector<std::string> split_path(std::string_view path_var);
// The first dirs[i]/name that is an executable file, or "" (name must not contain '/').
std::string find_executable(const std::string& name, std::span<const std::string> dirs);

}  // namespace shmpipe::detail
