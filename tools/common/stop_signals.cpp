#include "stop_signals.hpp"

#include <csignal>

namespace shmpipe::cli {

namespace {

volatile std::sig_atomic_t g_stop = 0;

extern "C" void shmpipe_cli_on_stop_signal(int) { g_stop = 1; }

}  // namespace

void install_stop_handlers() noexcept {
    struct sigaction act {};
    act.sa_handler = shmpipe_cli_on_stop_signal;
    sigemptyset(&act.sa_mask);
    act.sa_flags = 0;  // no SA_RESTART: poll() returns at once
    ::sigaction(SIGINT, &act, nullptr);
    ::sigaction(SIGTERM, &act, nullptr);
}

bool stop_requested() noexcept { return g_stop != 0; }

}  // namespace shmpipe::cli
