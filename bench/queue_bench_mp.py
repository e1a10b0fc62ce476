#!/usr/bin/python3
"""Python multiprocessing.Queue peer of bench/queue_bench.cpp (spawned by it, not run by hand).

One measurement per run, between this process (the producer / ping-pong initiator) and one
forked child (the consumer / echoer), each pinned to its CPU. Every message is `size` bytes:
an 8-byte little-endian sequence number followed by a fixed pattern; the receiver checks
the length, the sequence number and the pattern, so a broken run cannot report a number.

Prints one line: `result ok=1 messages=N seconds=S` (throughput) or
`result ok=1 round_trips=N median_ns=M p99_ns=P` (ping-pong); on failure `result ok=0 error=...`
and exit status 1.

usage: queue_bench_mp.py {throughput|pingpong} SIZE SECONDS MAX_MESSAGES CPU_PRODUCER CPU_CONSUMER
"""
import multiprocessing as mp
import os
import struct
import sys
import time

STOP = None  # end of the run; the consumer then reports what it saw
BOUND = 1024  # the data queue is bounded, like every other queue in the benchmark


def pattern(size):
    return bytes((i * 131 + 7) & 0xFF for i in range(8, size)) if size > 8 else b""


def pin(cpu):
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def check(msg, expected_seq, size, body):
    if len(msg) != size:
        raise RuntimeError(f"message {expected_seq}: {len(msg)} bytes, expected {size}")
    (seq,) = struct.unpack_from("<Q", msg)
    if seq != expected_seq:
        raise RuntimeError(f"out of order: expected {expected_seq}, got {seq}")
    if msg[8:] != body:
        raise RuntimeError(f"message {seq}: payload corrupt")


def consumer(cpu, size, data_q, back_q):
    try:
        pin(cpu)
        body = pattern(size)
        back_q.put(("ready",))
        expected = 0
        while True:
            msg = data_q.get()
            if msg is STOP:
                break
            check(msg, expected, size, body)
            expected += 1
        back_q.put(("done", expected, time.monotonic_ns()))
    except Exception as e:  # reported to the parent, which prints it
        back_q.put(("error", str(e)))


def echoer(cpu, size, ping_q, pong_q):
    try:
        pin(cpu)
        body = pattern(size)
        pong_q.put(b"ready")
        expected = 0
        while True:
            msg = ping_q.get()
            if msg is STOP:
                break
            check(msg, expected, size, body)
            pong_q.put(msg[:8] + body)  # a fresh message with the same sequence number
            expected += 1
    except Exception as e:
        pong_q.put(("error", str(e)))


def throughput(size, seconds, max_messages, cpu_p, cpu_c):
    data_q, back_q = mp.Queue(maxsize=BOUND), mp.Queue()
    child = mp.Process(target=consumer, args=(cpu_c, size, data_q, back_q), daemon=True)
    child.start()
    pin(cpu_p)
    if back_q.get(timeout=30)[0] != "ready":
        raise RuntimeError("consumer did not start")
    body = pattern(size)
    pack = struct.Struct("<Q").pack
    deadline = time.monotonic_ns() + int(seconds * 1e9)
    sent = 0
    t0 = time.monotonic_ns()
    while (max_messages == 0 or sent < max_messages):
        data_q.put(pack(sent) + body)
        sent += 1
        if (sent & 63) == 0 and max_messages == 0 and time.monotonic_ns() >= deadline:
            break
    data_q.put(STOP)
    reply = back_q.get(timeout=60)
    child.join(30)
    if reply[0] != "done":
        raise RuntimeError(reply[1] if len(reply) > 1 else "consumer failed")
    if reply[1] != sent:
        raise RuntimeError(f"sent {sent}, received {reply[1]}")
    print(f"result ok=1 messages={sent} seconds={(reply[2] - t0) / 1e9:.9f}")


def pingpong(size, seconds, max_messages, cpu_p, cpu_c):
    ping_q, pong_q = mp.Queue(), mp.Queue()
    child = mp.Process(target=echoer, args=(cpu_c, size, ping_q, pong_q), daemon=True)
    child.start()
    pin(cpu_p)
    if pong_q.get(timeout=30) != b"ready":
        raise RuntimeError("echoer did not start")
    body = pattern(size)
    pack = struct.Struct("<Q").pack
    now = time.monotonic_ns
    deadline = now() + int(seconds * 1e9)
    samples = []
    seq = 0
    while (max_messages == 0 or seq < max_messages) and now() < deadline:
        t = now()
        ping_q.put(pack(seq) + body)
        reply = pong_q.get(timeout=30)
        samples.append(now() - t)
        if isinstance(reply, tuple):
            raise RuntimeError(reply[1])
        check(reply, seq, size, body)
        seq += 1
    ping_q.put(STOP)
    child.join(30)
    samples = samples[min(100, len(samples) // 10):]  # warm-up
    if not samples:
        raise RuntimeError("no round trip completed")
    samples.sort()
    median = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"result ok=1 round_trips={len(samples)} median_ns={median} p99_ns={p99}")


def main(argv):
    if len(argv) != 7 or argv[1] not in ("throughput", "pingpong"):
        print(__doc__, file=sys.stderr)
        return 2
    size, seconds, max_messages = int(argv[2]), float(argv[3]), int(argv[4])
    cpu_p, cpu_c = int(argv[5]), int(argv[6])
    if size < 8:
        print("result ok=0 error=size must be at least 8 bytes")
        return 1
    try:
        (throughput if argv[1] == "throughput" else pingpong)(size, seconds, max_messages, cpu_p, cpu_c)
    except Exception as e:
        print(f"result ok=0 error={e}")
        return 1
    return 0


if __name__ == "__main__":
    mp.set_start_method("fork")
    sys.exit(main(sys.argv))
