# pool_bench spawns its Python peer (multiprocessing.Pool / ProcessPoolExecutor) from the source tree.
target_compile_definitions(${stem} PRIVATE SHMPIPE_POOL_BENCH_PY="${CMAKE_CURRENT_SOURCE_DIR}/pool_bench.py")
