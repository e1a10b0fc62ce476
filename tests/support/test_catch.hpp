// Catch2 helpers shared by test files (never by peers: they do not link Catch2).
#pragma once

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace shmpipe::test {

// Checks that no /dev/shm object whose name starts with `prefix` is left.
inline void require_gone(const std::string& prefix) {
    INFO("objects left in /dev/shm with prefix " << prefix);
    CHECK(shm_objects_with_prefix(prefix).empty());
}

}  // namespace shmpipe::test
