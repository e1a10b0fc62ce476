// detail::demangle: the one copy shared by the queue codec errors, Process and Pool.
#include <shmpipe/detail/demangle.hpp>

#include <cstdlib>
#include <cxxabi.h>
#include <memory>

namespace shmpipe::detail {

std::string demangle(const char* mangled) {
    if (mangled == nullptr) return "(unknown type)";
    int status = 0;
    const std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
    return status == 0 && d ? std::string(d.get()) : std::string(mangled);
}

}  // namespace shmpipe::detail
