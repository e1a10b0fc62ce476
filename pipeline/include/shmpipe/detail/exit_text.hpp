// One wording for how a child ended, shared by Process users, Pool, Graph and the spec
// reader. Not API.
#pragma once

#include <string>

namespace shmpipe::detail {

// "SIGKILL" (sigabbrev_np), or "signal 42" for a number without a name.
std::string signal_name(int sig);
// An exit code in the Process convention (-N: killed by signal N):
// "exited with code 3" / "was killed by signal 9 (SIGKILL)".
std::string describe_exit(int code);

}  // namespace shmpipe::detail
