# Extra dependencies of queue_bench (included from bench/CMakeLists.txt with stem = queue_bench):
# ZeroMQ for the ipc:// PUSH/PULL peer (cppzmq is header-only; libzmq via pkg-config), and
# the path of the Python multiprocessing.Queue helper script it spawns.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(SHMPIPE_BENCH_LIBZMQ QUIET IMPORTED_TARGET libzmq)
endif()
if(NOT SHMPIPE_BENCH_LIBZMQ_FOUND)
  message(FATAL_ERROR "queue_bench needs ZeroMQ: apt-get install libzmq3-dev cppzmq-dev pkg-config "
                      "(or configure with -DSHMPIPE_BUILD_BENCHMARKS=OFF)")
endif()
target_link_libraries(${stem} PRIVATE PkgConfig::SHMPIPE_BENCH_LIBZMQ)
target_compile_definitions(${stem} PRIVATE
  SHMPIPE_BENCH_MP_SCRIPT="${CMAKE_CURRENT_SOURCE_DIR}/queue_bench_mp.py")
# Every loop of the benchmark (the polling loops, the payload checks, and the queue calls
# inlined into them) starts on a 64-byte boundary. With the default placement, two copies
# of the same reference ring (ref and ref-dense, identical at 64 KiB) measured 12.0-12.5 us
# and 9.5-9.9 us per 64 KiB round trip in one run, three runs in a row; aligned, the two
# measured within 8% of each other in all of 6 runs (9.6-11.8 us; one run in the VM's slow
# state, ~68 us).
target_compile_options(${stem} PRIVATE -falign-loops=64)
