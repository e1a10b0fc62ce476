"""Queues across processes: pickled to multiprocessing children under every start method,
Ctrl-C in a blocked get, and producers killed with SIGKILL on either language's side."""
import asyncio
import multiprocessing as mp
import re
import signal
import time

import pytest

import shmpipe
from conftest import wait_for


def square_all(tasks, results):
    for x in tasks:  # until the parent seals and closes `tasks`
        results.put(x * x)
    # exiting closes this process's endpoints (multiprocessing runs the finalizers)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_queues_pickle_to_multiprocessing_children(method, unique_name):
    ctx = mp.get_context(method)
    tasks = shmpipe.Queue(name=unique_name("tasks"))
    results = shmpipe.Queue(name=unique_name("results"))
    workers = [ctx.Process(target=square_all, args=(tasks, results)) for _ in range(2)]
    for w in workers:
        w.start()
    tasks.put_many(range(200))
    tasks.seal()  # the parent is the only producer: its close() then ends the workers' loops
    tasks.close()
    got = sorted(results.get(timeout=30) for _ in range(200))
    for w in workers:
        w.join(30)
        assert w.exitcode == 0, f"worker exit code {w.exitcode}"
    assert got == [x * x for x in range(200)]
    results.close()


BLOCKED_GET = """
import sys, time, shmpipe
q = shmpipe.Queue.open(sys.argv[1])
try:
    q.get()
except KeyboardInterrupt:
    print("interrupted", repr(time.monotonic()), flush=True)
    sys.exit(0)
sys.exit(3)
"""


def test_ctrl_c_interrupts_a_blocked_get_quickly(unique_name, children):
    sut = shmpipe.Queue(name=unique_name("sigint"))
    child = children.python(BLOCKED_GET, sut.name)
    wait_for(lambda: sut._stats()["sleepers"] >= 1, "the child to sleep in get()")
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    rc, out, err = children.finish(child, "the child to handle SIGINT")
    assert rc == 0, out + err
    latency = float(out.split()[1]) - sent
    print(f"KeyboardInterrupt raised {latency * 1000:.1f} ms after SIGINT")
    assert latency < 0.1
    sut.close()


HELD_PRODUCER = """
import sys, time, shmpipe
q = shmpipe.Queue.open(sys.argv[1], dtype=bytes)
for i in range(int(sys.argv[2])):
    q.put(bytes([i & 0xFF]) * (i % 100))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_python_producer_is_producer_died_in_a_cpp_consumer(unique_name, py_peer, children):
    sut = shmpipe.Queue(name=unique_name("pydies"), dtype=bytes)
    consumer = children.start([py_peer, "consume", "bytes", sut.name, "50"])
    producer = children.python(HELD_PRODUCER, sut.name, "50")
    assert producer.stdout.readline() == "ready\n"
    producer.kill()
    producer.wait(10)
    rc, out, err = children.finish(consumer, "the C++ consumer to see the death")
    assert rc == 5, out + err  # py_peer: 5 = producer_died
    assert f"producer pid {producer.pid} died" in out
    sut.close()


def test_a_killed_cpp_producer_is_producer_died_in_python(unique_name, py_peer, children):
    sut = shmpipe.Queue(name=unique_name("cppdies"), dtype=bytes)
    producer = children.start([py_peer, "produce-hold", sut.name])
    assert producer.stdout.readline() == "ready\n"
    producer.kill()
    producer.wait(10)
    assert sut.get(timeout=10) == b"held"  # what it committed comes first
    with pytest.raises(shmpipe.ProducerDied) as e:
        sut.get(timeout=10)
    assert re.search(rf"\b{producer.pid}\b", str(e.value)), str(e.value)
    assert sut.name in str(e.value)
    sut.close()


ASYNC_PRODUCER = """
import os, signal, sys, shmpipe
q = shmpipe.Queue.open(sys.argv[1])
for i in range(int(sys.argv[2])):
    q.put(i)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
q.close()
"""


def gather_async(sut, getters):
    """Runs `getters` get_async tasks on one loop until the stream ends; what each got."""
    async def getter(out):
        while True:
            try:
                out.append(await sut.get_async(timeout=60))
            except shmpipe.EndOfStream:
                return out

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(getter([]) for _ in range(getters))), 90)

    return asyncio.run(main())


def test_get_async_tasks_share_a_stream_from_another_process_until_its_end(unique_name, children):
    n = 20000
    sut = shmpipe.Queue(64, name=unique_name("async"), expected_producers=1)
    producer = children.python(ASYNC_PRODUCER, sut.name, str(n), "close")
    got = gather_async(sut, 3)  # three tasks wait on one descriptor: each wakes, none is lost
    rc, out, err = children.finish(producer, "the async test's producer")
    assert rc == 0, out + err
    assert sorted(x for part in got for x in part) == list(range(n))
    for part in got:
        assert part == sorted(part)  # in order within each task


def test_get_async_raises_producer_died_after_a_killed_producers_messages(unique_name, children):
    sut = shmpipe.Queue(name=unique_name("async-died"))

    async def main():
        got = []
        producer = children.python(ASYNC_PRODUCER, sut.name, "5", "die")
        with pytest.raises(shmpipe.ProducerDied):
            while True:
                got.append(await sut.get_async(timeout=30))
        producer.wait(30)
        return got

    assert asyncio.run(asyncio.wait_for(main(), 60)) == [0, 1, 2, 3, 4]
