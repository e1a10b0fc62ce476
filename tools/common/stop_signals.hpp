// Quitting on SIGINT and SIGTERM for the tools' long-running loops (inspect-queues watch and
// serve): the handler only sets a flag, installed without SA_RESTART so that a blocking
// poll() returns at once and the loop sees the flag.
#pragma once

namespace shmpipe::cli {

void install_stop_handlers() noexcept;
bool stop_requested() noexcept;

}  // namespace shmpipe::cli
