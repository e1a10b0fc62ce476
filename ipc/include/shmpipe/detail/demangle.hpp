// Readable C++ type names for error messages. Not API.
#pragma once

#include <string>

namespace shmpipe::detail {

// The demangled form of a name from typeid(...).name() or the C++ ABI (e.g. an exception's
// type); the name unchanged when it cannot be demangled. Allocates: not for a forked child
// before exec, nor for signal handlers. Throws only std::bad_alloc.
std::string demangle(const char* mangled);

}  // namespace shmpipe::detail
