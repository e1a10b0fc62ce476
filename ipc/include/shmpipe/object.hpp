// Things every named shmpipe object shares: names, removal, permissions.
//
// Every object lives in one POSIX shared-memory segment named "shmpipe.<name>", i.e.
// /dev/shm/shmpipe.<name>. <name> is 1-200 characters of [A-Za-z0-9._-].
#pragma once

#include <string>
#include <string_view>
#include <sys/types.h>
#include <system_error>

namespace shmpipe {

inline constexpr std::string_view kSegmentPrefix = "shmpipe.";
inline constexpr std::size_t kMaxNameLength = 200;
inline constexpr mode_t kDefaultPermissions = 0600;

// Options for opening or attaching to an object someone else created.
struct OpenOptions {
    // /dev/shm is world-writable: another local user can create a name first and offer a
    // segment of theirs. By default an object whose file another user owns (st_uid !=
    // geteuid()) is refused with errc::permission_denied; set this to accept it.
    bool allow_foreign_owner = false;
    // Queue endpoints: map this many bytes of every cell (MPMC) or of the ring (SPSC) at
    // attach, in one call instead of a page fault per page at first use (a pool's first
    // maps). Only page tables change; contents are untouched. 0: map on first use.
    std::size_t prefault_bytes = 0;
};

// Throws shmpipe::Error(errc::invalid_name) naming the bad character and its position.
// `what` names the object for the message, e.g. "queue".
void validate_name(std::string_view name, std::string_view what = "object");

// "shmpipe.<name>", the shm_open name without the leading slash.
std::string segment_name(std::string_view name);

// Removes the segment of `name`. Never throws: returns false (and sets ec) when there was
// nothing to remove or the name is invalid. Handles that have it mapped keep working.
bool remove(std::string_view name) noexcept;
bool remove(std::string_view name, std::error_code& ec) noexcept;

// True when a segment of that name exists (whatever its kind or state).
bool exists(std::string_view name) noexcept;

}  // namespace shmpipe
