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
