"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value and Array:
Python's names and context managers, across Python processes and with C++ processes."""
import ctypes
import multiprocessing as mp
import pickle
import signal
import threading
import time

import pytest

import shmpipe
from conftest import wait_for


def test_lock_excludes_and_works_as_a_context_manager(unique_name):
    sut = shmpipe.Lock(name=unique_name("lock"))
    with sut:
        other = []
        t = threading.Thread(target=lambda: other.append(sut.acquire(timeout=0.1)))
        t.start()
        t.join(10)
        assert other == [False]  # held by this thread
    assert sut.acquire(block=False)
    sut.release()
    with pytest.raises(shmpipe.NotOwner):
        sut.release()


def test_lock_acquired_twice_by_one_thread_raises_instead_of_deadlocking(unique_name):
    sut = shmpipe.Lock(name=unique_name("lock"))
    with sut:
        with pytest.raises(shmpipe.InvalidState):
            sut.acquire()


def test_rlock_is_reentrant(unique_name):
    sut = shmpipe.RLock(name=unique_name("rlock"))
    with sut:
        with sut:
            assert sut._h.depth == 2
    assert sut._h.depth == 0


def test_semaphore_counts_and_bounded_semaphore_refuses_extra_releases(unique_name):
    sut = shmpipe.Semaphore(2, name=unique_name("sem"))
    assert sut.acquire() and sut.acquire()
    assert not sut.acquire(timeout=0.05)
    sut.release()
    assert sut.get_value() == 1
    bounded = shmpipe.BoundedSemaphore(1, name=unique_name("bsem"))
    with bounded:
        assert not bounded.acquire(False)
    with pytest.raises(ValueError):
        bounded.release()


def test_event_wakes_a_waiting_thread(unique_name):
    sut = shmpipe.Event(name=unique_name("event"))
    assert not sut.is_set() and not sut.wait(0.05)
    threading.Timer(0.05, sut.set).start()
    assert sut.wait(10)
    sut.clear()
    assert not sut.is_set()


def test_condition_wait_for_sees_the_notified_state(unique_name):
    sut = shmpipe.Condition(name=unique_name("cond"))
    box = shmpipe.Value("i", 0, name=unique_name("box"))

    def producer():
        time.sleep(0.05)
        with sut:
            box.value = 42
            sut.notify_all()

    threading.Thread(target=producer).start()
    with sut:
        assert sut.wait_for(lambda: box.value == 42, timeout=10)
        assert not sut.wait(0.01)  # nobody notifies again


def test_barrier_releases_all_parties_with_distinct_indexes(unique_name):
    sut = shmpipe.Barrier(3, name=unique_name("barrier"))
    out = []
    threads = [threading.Thread(target=lambda: out.append(sut.wait(10))) for _ in range(2)]
    for t in threads:
        t.start()
    out.append(sut.wait(10))
    for t in threads:
        t.join(10)
    assert sorted(out) == [0, 1, 2]


def test_a_barrier_timeout_breaks_it(unique_name):
    sut = shmpipe.Barrier(2, name=unique_name("barrier"))
    with pytest.raises(threading.BrokenBarrierError):
        sut.wait(0.05)
    assert sut.broken
    with pytest.raises(shmpipe.Broken):
        sut.wait(1)


def test_value_and_array_are_shared_typed_storage(unique_name):
    v = shmpipe.Value(ctypes.c_double, 1.5, name=unique_name("value"))
    v.value += 1
    assert v.value == 2.5
    a = shmpipe.Array("i", [1, 2, 3, 4], name=unique_name("array"))
    a[1] = 20
    a[2:] = [30, 40]
    assert list(a) == [1, 20, 30, 40] and a[-1] == 40 and len(a) == 4
    with a.get_lock():
        a[0] += 1
    import numpy as np
    view = np.frombuffer(a.get_obj(), dtype=np.int32)
    view[0] = 7
    assert a[0] == 7
    with pytest.raises(IndexError):
        a[4]


def add_under_lock(lock, counter, n):
    for _ in range(n):
        with lock:
            counter.value += 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_lock_and_value_pickle_to_child_processes(method, unique_name):
    lock = shmpipe.Lock(name=unique_name("lock"))
    counter = shmpipe.Value("q", 0, name=unique_name("counter"))
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=add_under_lock, args=(lock, counter, 500)) for _ in range(3)]
    for p in procs:
        p.start()
    add_under_lock(lock, counter, 500)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.value == 2000


def test_objects_pickle_as_their_names(unique_name):
    for obj in (shmpipe.Lock(name=unique_name("l")), shmpipe.Event(name=unique_name("e")),
                shmpipe.Semaphore(name=unique_name("s")), shmpipe.Barrier(2, name=unique_name("b"))):
        assert pickle.loads(pickle.dumps(obj)).name == obj.name
    a = shmpipe.Array("d", 3, name=unique_name("a"))
    b = pickle.loads(pickle.dumps(a))
    b[0] = 1.25
    assert a[0] == 1.25


def test_a_cpp_process_shares_python_lock_value_and_event(unique_name, sync_peer, children):
    # sync_peer mutex-inc: waits for the event, then adds 1 under the mutex n times.
    lock = shmpipe.Lock(name=unique_name("mutex"))
    counter = shmpipe.Value("Q", 0, name=unique_name("counter"))
    start = shmpipe.Event(name=unique_name("start"))
    peers = [children.start([sync_peer, "mutex-inc", lock.name, counter.name, "2000", start.name])
             for _ in range(2)]
    start.set()
    for _ in range(2000):
        with lock:
            counter.value += 1
    for p in peers:
        rc, out, err = children.finish(p, "sync_peer mutex-inc")
        assert rc == 0, out + err
    assert counter.value == 6000


def test_python_and_cpp_parties_meet_at_one_barrier(unique_name, sync_peer, children):
    rounds = 5
    sut = shmpipe.Barrier(3, name=unique_name("barrier"))
    arrivals = shmpipe.Array("I", rounds, name=unique_name("arrivals"))
    peers = [children.start([sync_peer, "barrier", sut.name, str(rounds), arrivals.name]) for _ in range(2)]
    for r in range(rounds):
        arrivals.fetch_add(r, 1)  # atomic, like the peers' SharedArray::fetch_add
        sut.wait(20)
        assert arrivals[r] == 3  # released together: every party arrived first
    for p in peers:
        rc, out, err = children.finish(p, "sync_peer barrier")
        assert rc == 0, out + err


BLOCKED_ACQUIRE = """
import sys, time, shmpipe
lock = shmpipe.Lock.open(sys.argv[1])
print("ready", flush=True)
try:
    lock.acquire()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
sys.exit(3)
"""


def test_ctrl_c_interrupts_a_blocked_acquire(unique_name, children):
    sut = shmpipe.Lock(name=unique_name("lock"))
    with sut:
        child = children.python(BLOCKED_ACQUIRE, sut.name)
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.2)  # into acquire(); the signal interrupts it either way
        child.send_signal(signal.SIGINT)
        rc, out, err = children.finish(child, "the child to handle SIGINT")
    assert rc == 0 and out == "interrupted\n", out + err


# A party in another process: waits at the barrier `rounds` times, printing each outcome.
BARRIER_PARTY = """
import sys, threading, shmpipe
b = shmpipe.Barrier.open(sys.argv[1])
for _ in range(int(sys.argv[2])):
    try:
        print("index", b.wait(20), flush=True)
    except threading.BrokenBarrierError as e:
        print("broken", type(e).__name__, flush=True)
"""


def test_barrier_parties_and_n_waiting_are_seen_across_processes(unique_name, children):
    sut = shmpipe.Barrier(3, name=unique_name("barrier"))
    party = children.python(BARRIER_PARTY, sut.name, "1")
    wait_for(lambda: sut.n_waiting == 1, "the other process to wait at the barrier")
    assert sut.parties == 3 and not sut.broken
    helper = threading.Thread(target=sut.wait, args=(20,))
    helper.start()
    wait_for(lambda: sut.n_waiting == 2, "a second party to wait")
    assert sut.wait(20) in (0, 1, 2)
    helper.join(20)
    rc, out, err = children.finish(party, "the barrier party to pass")
    assert rc == 0 and out.startswith("index "), out + err
    assert sut.n_waiting == 0


def test_abort_breaks_a_wait_in_another_process_until_reset(unique_name, children):
    sut = shmpipe.Barrier(2, name=unique_name("barrier"))
    party = children.python(BARRIER_PARTY, sut.name, "1")
    wait_for(lambda: sut.n_waiting == 1, "the other process to wait at the barrier")
    sut.abort()
    rc, out, err = children.finish(party, "the aborted party")
    assert rc == 0 and out == "broken Broken\n", out + err
    assert sut.broken
    with pytest.raises(threading.BrokenBarrierError):
        sut.wait(1)  # stays broken
    sut.reset()
    assert not sut.broken and sut.n_waiting == 0


def test_reset_breaks_the_waiting_parties_and_the_barrier_is_usable_again(unique_name, children):
    sut = shmpipe.Barrier(2, name=unique_name("barrier"))
    party = children.python(BARRIER_PARTY, sut.name, "2")  # first wait is reset, the second meets us
    wait_for(lambda: sut.n_waiting == 1, "the other process to wait at the barrier")
    sut.reset()
    assert party.stdout.readline() == "broken Broken\n"
    assert not sut.broken
    wait_for(lambda: sut.n_waiting == 1, "the other process to wait again after the reset")
    index = sut.wait(20)
    rc, out, err = children.finish(party, "the party's second wait")
    assert rc == 0 and index in (0, 1) and out == f"index {1 - index}\n", out + err
