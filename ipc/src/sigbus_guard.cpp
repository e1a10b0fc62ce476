// The SIGBUS guard for copies out of a mapping that may shrink (sigbus_guard.hpp).
#include <shmpipe/detail/sigbus_guard.hpp>

#include <csetjmp>
#include <csignal>

namespace shmpipe::detail {

namespace {

thread_local sigjmp_buf* t_sigbus_jump = nullptr;

extern "C" void on_sigbus(int sig, siginfo_t*, void*) {
    if (t_sigbus_jump != nullptr) siglongjmp(*t_sigbus_jump, 1);
    // Not raised by a guarded copy: fall back to the default action (the fault repeats on return).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(sig, &dfl, nullptr);
}

}  // namespace

bool run_sigbus_guarded(void (*copy)(void* context) noexcept, void* context) noexcept {
    struct sigaction act {};
    struct sigaction old {};
    act.sa_sigaction = on_sigbus;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_SIGINFO;
    if (::sigaction(SIGBUS, &act, &old) != 0) {
        copy(context);
        return true;
    }
    sigjmp_buf jump;
    bool ok = true;
    if (sigsetjmp(jump, 1) == 0) {
        t_sigbus_jump = &jump;
        copy(context);
    } else {
        ok = false;
    }
    t_sigbus_jump = nullptr;
    ::sigaction(SIGBUS, &old, nullptr);
    return ok;
}

}  // namespace shmpipe::detail
