// Guardian: a small child process that removes an owner's shared-memory objects once the
// owner is gone, however it went (SIGKILL, SIGBUS on a full /dev/shm, a crash). Graph and
// Pool share it. Not API.
//
// The owner holds the only write end of a pipe; the guardian blocks reading the other end.
// EOF with no byte before it means the owner died: the guardian removes every name it was
// given. release() writes one byte first: the owner removed its own objects, and a name it
// failed to create (already_exists) may be someone else's, so nothing is removed. Start it
// BEFORE creating any of the objects: the names are known in advance, so an owner killed at
// any later instruction leaves nothing behind (removing a name not created yet is harmless).
// The guardian ignores SIGINT and SIGTERM (a Ctrl-C to the terminal's process group must not
// take it before the owner) and has no parent-death signal: it must outlive its owner.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace shmpipe {
class Process;
}

namespace shmpipe::detail {

class Guardian {
public:
    Guardian() noexcept;
    // Forks the guardian, named `label`, for `objects` (names as shmpipe::remove takes
    // them). Throws Error (pipe, fork).
    Guardian(std::string label, std::vector<std::string> objects);
    Guardian(Guardian&&) noexcept;
    Guardian& operator=(Guardian&&) noexcept;
    Guardian(const Guardian&) = delete;
    Guardian& operator=(const Guardian&) = delete;
    ~Guardian();

    // The owner is done with its objects (it removed them itself): the guardian exits
    // without removing anything and is reaped (bounded: SIGKILL after 2 s). Idempotent.
    void release() noexcept;
    bool active() const noexcept { return proc_ != nullptr; }

private:
    std::unique_ptr<Process> proc_;
    int fd_ = -1;  // the write end, held only by the owner (O_CLOEXEC)
};

}  // namespace shmpipe::detail
