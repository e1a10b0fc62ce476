// The seeds' named objects: "seed-<what>-<pid>", so two runs at once never share one.
// (Python's Lock() / Queue() need no name; shmpipe objects are named segments.)
#pragma once

#include <string>
#include <unistd.h>

inline std::string seed_name(const std::string& what) { return "seed-" + what + "-" + std::to_string(::getpid()); }
