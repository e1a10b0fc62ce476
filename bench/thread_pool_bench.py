#!/usr/bin/env python3
"""Python peer of thread_pool_bench: runs one round of a workload per command read from
stdin, so the C++ side can interleave its rounds with ours. Commands (one per line):

  executor N    ThreadPoolExecutor(THREADS).map(inc, range(N)), the pool made once
  dummy N       multiprocessing.dummy.Pool(THREADS).map(inc, range(N)) (chunked by default)

Each answers one line: the seconds the map took. EOF ends the program.

usage: thread_pool_bench.py THREADS
"""
import concurrent.futures
import multiprocessing.dummy
import sys
import time


def inc(x):
    return x + 1


def main():
    threads = int(sys.argv[1])
    with concurrent.futures.ThreadPoolExecutor(threads) as ex, multiprocessing.dummy.Pool(threads) as dummy:
        list(ex.map(inc, range(100)))  # warm up: threads started
        dummy.map(inc, range(100))
        for line in sys.stdin:
            what, n = line.split()
            n = int(n)
            t0 = time.perf_counter()
            if what == "executor":
                out = list(ex.map(inc, range(n)))
            else:
                out = dummy.map(inc, range(n))
            took = time.perf_counter() - t0
            assert out[-1] == n
            print(f"{took:.9f}", flush=True)


if __name__ == "__main__":
    main()
