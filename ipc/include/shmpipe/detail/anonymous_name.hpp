// Names for anonymous objects (Queue::create(), Mutex::create(), ... without a name), like
// Python's Queue() or Lock(). Not API.
#pragma once

#include <string>
#include <string_view>

namespace shmpipe::detail {

// "<stem>-<pid>-<counter>-<16 random hex digits>": unique within the process by the
// counter, across processes by the pid, and across copies of a program, a pid reused after
// a crash and other machines' leftovers by 64 random bits. A valid object name (so the
// segment is visible to inspect-queues and removable by `inspect-queues clean`).
std::string anonymous_name(std::string_view stem);

}  // namespace shmpipe::detail
