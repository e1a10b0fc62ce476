// Reading a mapping that another process may shrink: a load from a page past the end of the
// file raises SIGBUS. The readers of untrusted shared memory (the inspector's copy of a
// segment, inspect-queues' copy of a bridge status record) run their copy under this guard
// and report the object instead of dying. Not API.
#pragma once

#include <type_traits>

namespace shmpipe::detail {

// Runs copy(context) under a temporary SIGBUS handler (the disposition is saved and restored
// around the call; sigsetjmp/siglongjmp leave the copy when it faults). Returns false when the
// copy faulted; it then stopped anywhere, so what it wrote is incomplete. The copy must only
// load from the mapping and store plain values: no allocation, no lock, no object whose
// destructor must run (a fault skips the rest of the call). When the handler cannot be
// installed, the copy runs unguarded. Not thread-safe against other threads changing the
// SIGBUS disposition at the same time (the tools are single-threaded where they use it).
bool run_sigbus_guarded(void (*copy)(void* context) noexcept, void* context) noexcept;

// The same for a callable: sigbus_guarded([&]() noexcept { ... }).
template <class Copy>
bool sigbus_guarded(Copy&& copy) noexcept {
    static_assert(noexcept(copy()), "the guarded copy must be noexcept");
    return run_sigbus_guarded([](void* c) noexcept { (*static_cast<std::remove_reference_t<Copy>*>(c))(); },
                              const_cast<void*>(static_cast<const void*>(&copy)));
}

}  // namespace shmpipe::detail
