#!/usr/bin/env python3
"""Python peer of pool_bench: the same workloads with multiprocessing.Pool and
concurrent.futures.ProcessPoolExecutor. Prints one `key value` line per figure.

usage: pool_bench.py PROCESSES SMALL LARGE RTT_COUNT
"""
import concurrent.futures
import multiprocessing
import sys
import time

REPEAT = 3
FRESH_POOLS = 5


def inc(x):
    return x + 1


def main():
    procs, small, large, rtt = (int(a) for a in sys.argv[1:5])
    ctx = multiprocessing.get_context("fork")
    firsts = []
    for _ in range(FRESH_POOLS):  # the first map of a new pool, as pool_bench measures it
        with ctx.Pool(procs) as pool:
            t0 = time.perf_counter()
            out = pool.map(inc, range(small))
            firsts.append(time.perf_counter() - t0)
            assert out[-1] == small
    firsts.sort()
    print(f"pool_map_first_{small} {small / firsts[len(firsts) // 2]:.0f}", flush=True)
    with ctx.Pool(procs) as pool:
        pool.map(inc, range(100))  # warm up: workers started
        for n in (small, large):
            best = float("inf")
            for _ in range(REPEAT):  # best of REPEAT: the machine may be shared
                t0 = time.perf_counter()
                out = pool.map(inc, range(n))
                best = min(best, time.perf_counter() - t0)
                assert out[-1] == n
            print(f"pool_map_{n} {n / best:.0f}", flush=True)
        samples = []
        for i in range(rtt):
            t0 = time.perf_counter()
            pool.apply_async(inc, (i,)).get()
            samples.append(time.perf_counter() - t0)
        samples.sort()
        print(f"apply_async_rtt_median_us {samples[len(samples) // 2] * 1e6:.1f}", flush=True)
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as ex:
        list(ex.map(inc, range(100)))
        for n in (small, large):
            # Default chunksize 1 is hopeless for a million tasks; use Pool.map's default.
            chunk = 1 if n <= small else max(1, n // (4 * procs))
            best = float("inf")
            for _ in range(REPEAT):
                t0 = time.perf_counter()
                out = list(ex.map(inc, range(n), chunksize=chunk))
                best = min(best, time.perf_counter() - t0)
                assert out[-1] == n
            print(f"executor_map_{n} {n / best:.0f}", flush=True)
    # Process start + join of a function.
    count = 100
    t0 = time.perf_counter()
    for _ in range(count):
        p = ctx.Process(target=inc, args=(1,))
        p.start()
        p.join()
    print(f"process_start_join_us {(time.perf_counter() - t0) / count * 1e6:.1f}", flush=True)


if __name__ == "__main__":
    main()
