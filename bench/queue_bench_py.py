#!/usr/bin/python3
"""Python queues between two Python processes: shmpipe.Queue against multiprocessing.Queue
and multiprocessing.SimpleQueue, and a C++ producer (py_feed) feeding a Python consumer.

Each run sends N messages from one process to another and times the consumer from the
first message to the last (throughput, messages/s and MB/s); the consumer checks the count
and every message's length and sequence number, so a broken run cannot report a number.
Messages are fresh objects starting with their sequence number; the producer makes them
before its first put when they fit in 64 MiB together (8 B, 1 KiB), else one per put, so the
small sizes time the queue rather than the making of bytes objects. The 1 MiB lines are put
next to the machine's copy bandwidth measured in the same run (bytes(bytearray) of 1 MiB from
64 MiB of sources, so memory rather than cache): a queue needs at least two copies, one into
the ring and one out, and the producer here makes each message with a third.
shmpipe queues hold 1024 messages up to 1 KiB and 64 above (mp.Queue is bounded at 1024).
Runs are interleaved (every transport once per round) and each figure is the median of the
rounds. Payloads: `bytes` and a numpy uint8 array of 8 B, 1 KiB, 64 KiB and 1 MiB.

usage: PYTHONPATH=<build>/python python3 bench/queue_bench_py.py [--rounds 5] [--bin <build>/bin]
"""
import argparse
import multiprocessing as mp
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

import shmpipe

SIZES = [8, 1024, 64 << 10, 1 << 20]
COUNTS = {8: 50000, 1024: 50000, 64 << 10: 5000, 1 << 20: 500}
MAX_MESSAGE = (1 << 20) + (64 << 10)


PREBUILT_MAX = 64 << 20  # bytes of messages the producer makes before its first put


def check(msg, seq, size, unpack=struct.Struct("<Q").unpack_from):
    if len(msg) != size or unpack(msg)[0] != seq:
        raise RuntimeError(f"message {seq}: wrong length or sequence number")


def consumer(q, n, size, out):
    get = q.get
    first = get()
    start = time.perf_counter()
    check(first, 0, size)
    for seq in range(1, n):
        check(get(), seq, size)
    out.send(time.perf_counter() - start)


def produce(q, kind, size, n):
    put = q.put
    if n * size <= PREBUILT_MAX:
        for msg in [make_payload(kind, size, seq) for seq in range(n)]:
            put(msg)
    else:
        for seq in range(n):
            put(make_payload(kind, size, seq))


def run_python(transport, kind, size, n):
    ctx = mp.get_context("fork")
    if transport == "shmpipe":
        q = shmpipe.Queue(1024 if size <= 1024 else 64, max_message=MAX_MESSAGE)
    elif transport == "mp.Queue":
        q = ctx.Queue(1024)
    else:
        q = ctx.SimpleQueue()
    rx, tx = ctx.Pipe(False)
    p = ctx.Process(target=consumer, args=(q, n, size, tx))
    p.start()
    produce(q, kind, size, n)
    if not rx.poll(300):
        p.kill()
        raise RuntimeError(f"{transport}: the consumer did not finish in 300 s")
    seconds = rx.recv()
    p.join()
    if hasattr(q, "close"):
        q.close()
    return (n - 1) / seconds


_template = {}


def make_payload(kind, size, seq):
    """A message of `size` bytes starting with its sequence number (a fresh object, as a
    real producer would send)."""
    key = (kind, size)
    if key not in _template:
        _template[key] = bytearray(size)
    t = _template[key]
    struct.pack_into("<Q", t, 0, seq)
    return bytes(t) if kind == "bytes" else np.frombuffer(t, dtype=np.uint8).copy()


def run_cpp_feed(bin_dir, size, n):
    q = shmpipe.Queue(1024 if size <= 1024 else 64, max_message=MAX_MESSAGE, dtype=bytes, producers="one", consumers="one")
    feed = subprocess.Popen([os.path.join(bin_dir, "py_feed"), q.name, str(size), str(n)])
    get = q.get
    first = get()
    start = time.perf_counter()
    check(first, 0, size)
    for seq in range(1, n):
        check(get(), seq, size)
    seconds = time.perf_counter() - start
    if feed.wait(60) != 0:
        raise RuntimeError("py_feed failed")
    q.close()
    return (n - 1) / seconds


def copy_bandwidth(size=1 << 20, buffers=64, n=512):
    """MB/s of bytes(bytearray) copies of `size` bytes from `buffers` different sources in
    turn (64 MiB, as the ring of a 1 MiB queue: memory, not cache), median of 5 runs."""
    sources = [bytearray(size) for _ in range(buffers)]
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            bytes(sources[i % buffers])
        runs.append(n * size / (time.perf_counter() - start) / 1e6)
    return statistics.median(runs)


def human(size):
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB" if size >= 1024 else f"{size} B"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default=None, help="folder of py_feed (the build's bin/); skipped when absent")
    args = ap.parse_args()
    transports = ["shmpipe", "mp.Queue", "mp.SimpleQueue"]
    rows = []
    for kind in ("bytes", "numpy"):
        for size in SIZES:
            rates = {t: [] for t in transports}
            for _ in range(args.rounds):
                for t in transports:
                    rates[t].append(run_python(t, kind, size, COUNTS[size]))
            med = {t: statistics.median(v) for t, v in rates.items()}
            rows.append((kind, size, med))
            print(f"{kind:5} {human(size):>7}: " + "  ".join(f"{t} {med[t]:>10,.0f}/s" for t in transports)
                  + f"  | shmpipe = {med['shmpipe'] / med['mp.Queue']:.1f}x mp.Queue, "
                  f"{med['shmpipe'] / med['mp.SimpleQueue']:.1f}x SimpleQueue"
                  + f"  ({med['shmpipe'] * size / 1e6:,.0f} MB/s)", flush=True)
    print(f"copy bandwidth (bytes(bytearray) of 1 MiB from 64 MiB of sources): {copy_bandwidth():,.0f} MB/s", flush=True)
    if args.bin and os.path.exists(os.path.join(args.bin, "py_feed")):
        for size in SIZES:
            r = statistics.median(run_cpp_feed(args.bin, size, COUNTS[size]) for _ in range(args.rounds))
            print(f"C++ producer -> Python consumer (bytes) {human(size):>7}: {r:>10,.0f}/s ({r * size / 1e6:,.0f} MB/s)",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
