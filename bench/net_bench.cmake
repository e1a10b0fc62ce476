# Extra dependency of net_bench (included from bench/CMakeLists.txt with stem = net_bench):
# the bridge library, and libzmq itself for the raw PUSH/PULL baseline (through cppzmq).
find_package(cppzmq REQUIRED)
target_link_libraries(${stem} PRIVATE shmpipe::net cppzmq)
