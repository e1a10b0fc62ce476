# thread_pool_bench spawns its Python peer (ThreadPoolExecutor, multiprocessing.dummy.Pool) from the source tree.
target_compile_definitions(${stem} PRIVATE SHMPIPE_THREAD_POOL_BENCH_PY="${CMAKE_CURRENT_SOURCE_DIR}/thread_pool_bench.py")
