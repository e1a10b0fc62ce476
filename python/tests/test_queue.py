"""shmpipe.Queue in one process: multiprocessing.Queue's methods and exceptions, payloads,
zero-copy peek, threads and asyncio."""
import asyncio
import pickle
import queue
import struct
import threading
import time

import numpy as np
import pytest

import shmpipe


@pytest.fixture
def sut(unique_name):
    q = shmpipe.Queue(name=unique_name("queue"))
    yield q
    q.close()


def test_put_then_get_returns_objects_in_order(sut):
    for item in [1, "two", (3, 4.0), {"five": [5]}, None]:
        sut.put(item)
    assert [sut.get() for _ in range(5)] == [1, "two", (3, 4.0), {"five": [5]}, None]


def test_get_of_an_empty_queue_raises_queue_empty(sut):
    with pytest.raises(queue.Empty):
        sut.get_nowait()
    with pytest.raises(queue.Empty):
        sut.get(block=False)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        sut.get(timeout=0.2)
    assert time.monotonic() - start >= 0.2


def test_put_to_a_full_queue_raises_queue_full(unique_name):
    sut = shmpipe.Queue(2, name=unique_name("full"))
    sut.put(1)
    sut.put(2)
    assert sut.full()
    with pytest.raises(queue.Full):
        sut.put_nowait(3)
    with pytest.raises(queue.Full):
        sut.put(3, timeout=0.05)
    assert sut.get() == 1
    sut.put_nowait(3)
    assert [sut.get(), sut.get()] == [2, 3]
    sut.close()


def test_qsize_empty_and_full_follow_the_contents(unique_name):
    sut = shmpipe.Queue(4, name=unique_name("size"))
    assert sut.empty() and sut.qsize() == 0 and not sut.full()
    sut.put_many(range(4))
    assert sut.qsize() == 4 and not sut.empty() and sut.full()
    sut.get()
    assert sut.qsize() == 3 and not sut.full()
    sut.close()


def test_anonymous_queue_gets_a_unique_name_and_is_removed_with_its_object():
    sut = shmpipe.Queue()
    path = f"/dev/shm/shmpipe.{sut.name}"
    assert sut.name.startswith("py.queue.")
    import os
    assert os.path.exists(path)
    del sut
    import gc
    gc.collect()
    assert not os.path.exists(path)


def test_seal_and_close_end_the_stream_and_iteration_stops(sut):
    reader = shmpipe.Queue.open(sut.name)
    sut.put_many(range(5))
    sut.seal()
    sut.close()
    assert list(reader) == [0, 1, 2, 3, 4]
    with pytest.raises(shmpipe.EndOfStream) as e:
        reader.get()
    assert isinstance(e.value, EOFError)
    assert sut.name in str(e.value)
    with pytest.raises(ValueError):
        sut.put(1)


def test_an_unsealed_many_producer_queue_does_not_end_when_its_producers_close(sut):
    reader = shmpipe.Queue.open(sut.name)
    sut.put(1)
    sut.close()
    assert reader.get(timeout=5) == 1
    with pytest.raises(queue.Empty):  # a new producer may still come: get() waits, as in Python
        reader.get(timeout=0.2)
    later = shmpipe.Queue.open(sut.name)
    later.put(2)
    later.close()
    assert reader.get(timeout=5) == 2
    reader.close()


def test_a_sealed_queue_refuses_a_new_producer_naming_the_queue(sut):
    sut.seal()
    assert sut._stats()["sealed"]
    with pytest.raises(shmpipe.Closed) as e:
        sut.put(1)
    assert sut.name in str(e.value)


def test_expected_producers_end_the_stream_once_that_many_closed(unique_name):
    sut = shmpipe.Queue(name=unique_name("expected"), expected_producers=2)
    first, second = shmpipe.Queue.open(sut.name), shmpipe.Queue.open(sut.name)
    first.put("a")
    first.close()
    assert sut.get(timeout=5) == "a"
    with pytest.raises(queue.Empty):  # one of the two expected producers is still to come
        sut.get(timeout=0.2)
    second.put("b")
    second.close()
    assert list(sut) == ["b"]
    sut.close()


def test_a_one_producer_queue_ends_when_its_producer_closes(unique_name):
    sut = shmpipe.Queue(name=unique_name("one"), producers="one")
    reader = shmpipe.Queue.open(sut.name)
    sut.put_many(range(3))
    sut.close()
    assert list(reader) == [0, 1, 2]
    reader.close()


def test_join_thread_and_cancel_join_thread_are_harmless(sut):
    sut.put(1)
    sut.cancel_join_thread()
    sut.join_thread()
    assert sut.get() == 1


def test_get_many_takes_what_is_there_up_to_the_limit(sut):
    sut.put_many(range(10))
    assert sut.get_many(4) == [0, 1, 2, 3]
    assert sut.get_many(100) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(queue.Empty):
        sut.get_many(3, timeout=0.01)


def test_large_buffers_travel_out_of_band_and_arrive_intact(sut):
    arr = np.arange(256 * 1024, dtype=np.float32).reshape(512, 512)  # 1 MiB
    ba = bytearray(range(256)) * 4096
    sut.put(arr)
    sut.put(ba)
    sut.put(bytes(ba))
    got = sut.get()
    assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    assert sut.get() == ba
    b = sut.get()
    assert type(b) is bytes and b == bytes(ba)


def test_a_message_larger_than_max_message_raises_with_the_cpp_message(unique_name):
    sut = shmpipe.Queue(name=unique_name("small"), max_message=1024)
    with pytest.raises(shmpipe.MessageTooLarge) as e:
        sut.put(b"x" * 5000)
    assert isinstance(e.value, shmpipe.Error) and isinstance(e.value, ValueError)
    assert sut.name in str(e.value) and e.value.code == "message_too_large"
    sut.close()


def test_opening_a_missing_queue_raises_not_found_naming_it(unique_name):
    name = unique_name("missing")
    with pytest.raises(shmpipe.NotFound) as e:
        shmpipe.Queue.open(name)
    assert name in str(e.value) and isinstance(e.value, FileNotFoundError)


def test_a_bad_name_is_refused_naming_the_character():
    with pytest.raises(shmpipe.InvalidName) as e:
        shmpipe.Queue(name="bad/name")
    assert "/" in str(e.value)


def test_a_queue_pickles_as_its_name(sut):
    copy = pickle.loads(pickle.dumps(sut))
    assert copy.name == sut.name
    copy.put("via the copy")
    assert sut.get() == "via the copy"


def test_peek_gives_the_message_in_place_inside_the_with_block_only(unique_name):
    sut = shmpipe.Queue(name=unique_name("peek"), dtype=bytes)
    sut.put(b"hello")
    sut.put(b"world")
    with sut.peek() as view:
        assert isinstance(view, memoryview) and view.readonly
        assert bytes(view) == b"hello"
    with pytest.raises(ValueError):
        bytes(view)  # released with the block
    assert sut.get() == b"world"  # the peeked message was consumed
    with pytest.raises(queue.Empty):
        with sut.peek(timeout=0.01):
            pass
    sut.close()


def test_typed_struct_queue_round_trips_values_and_tuples(unique_name):
    ints = shmpipe.Queue(name=unique_name("i64"), dtype="<q")
    ints.put_many([-1, 2**62, 0])
    assert ints.get_many(3) == [-1, 2**62, 0]
    points = shmpipe.Queue(name=unique_name("pt"), dtype="<iid", cpp_type="Point")
    points.put((1, -2, 0.5))
    assert points.get() == (1, -2, 0.5)
    texts = shmpipe.Queue(name=unique_name("str"), dtype=str)
    texts.put("grüße")
    assert texts.get() == "grüße"
    for q in (ints, points, texts):
        q.close()


def test_numpy_dtype_queue_round_trips_records(unique_name):
    dt = np.dtype([("x", "<i4"), ("y", "<i4"), ("w", "<f8")])
    sut = shmpipe.Queue(name=unique_name("np"), dtype=dt)
    sut.put((3, 4, 1.5))
    r = sut.get()
    assert (r["x"], r["y"], r["w"]) == (3, 4, 1.5)
    sut.close()


def test_other_threads_run_while_one_blocks_in_get(sut):
    got = []
    t = threading.Thread(target=lambda: got.append(sut.get(timeout=10)))
    t.start()
    ticks = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # the main thread keeps running Python code
        ticks += 1
    sut.put("wake")
    t.join(10)
    assert not t.is_alive(), "the getter thread did not return within 10 s"
    assert got == ["wake"] and ticks > 1000


def test_threads_sharing_a_queue_each_get_distinct_messages(sut):
    n, results = 2000, []
    lock = threading.Lock()

    def worker():
        while True:
            try:
                item = sut.get(timeout=1)
            except queue.Empty:
                return
            with lock:
                results.append(item)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    sut.put_many(range(n))
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a getter thread did not finish within 30 s"
    assert sorted(results) == list(range(n))


def test_get_async_and_put_async_work_in_an_event_loop(sut):
    async def main():
        getter = asyncio.ensure_future(sut.get_async())
        await asyncio.sleep(0.05)
        assert not getter.done()
        await sut.put_async({"x": 1})
        return await asyncio.wait_for(getter, 10)

    assert asyncio.run(main()) == {"x": 1}


def test_a_cancelled_get_async_takes_nothing_and_leaves_no_reader(sut):
    async def main():
        getter = asyncio.ensure_future(sut.get_async())
        cpu = time.process_time()
        await asyncio.sleep(0.3)
        assert time.process_time() - cpu < 0.15  # it waits in the selector, it does not spin
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        sut.put("kept")
        assert not asyncio.get_running_loop().remove_reader(sut._rx().fd())  # the reader went with it
        return sut.get_nowait()  # the cancelled getter took nothing

    assert asyncio.run(main()) == "kept"


def test_get_async_and_put_async_time_out_as_get_and_put_do(unique_name):
    sut = shmpipe.Queue(2, name=unique_name("full"))

    async def main():
        with pytest.raises(queue.Empty):
            await sut.get_async(timeout=0.05)
        await sut.put_async(1)
        await sut.put_async(2)
        with pytest.raises(queue.Full):
            await sut.put_async(3, timeout=0.05)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_put_async_waits_for_room_that_a_getter_makes(unique_name):
    sut = shmpipe.Queue(2, name=unique_name("full"))

    async def main():
        await sut.put_async("first")
        await sut.put_async("second")
        putter = asyncio.ensure_future(sut.put_async("third"))
        await asyncio.sleep(0.05)
        assert not putter.done()  # full
        assert await sut.get_async() == "first"
        await asyncio.wait_for(putter, 10)
        return [await sut.get_async(), await sut.get_async()]

    assert asyncio.run(main()) == ["second", "third"]


@pytest.mark.parametrize("arr", [
    np.arange(5, dtype=np.uint8),
    np.arange(12, dtype=">i4").reshape(3, 4),
    np.array(2.5),
    np.zeros((0, 3), dtype=np.float64),
    np.array(["ab", "cde"]),
    np.array(["2026-11-30T14:00"], dtype="datetime64[m]"),
    np.arange(6, dtype=np.complex64).reshape(2, 3).T,                # not C-contiguous: pickled
    np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),                  # fields: pickled
    np.array([{"a": 1}, None], dtype=object),                        # objects: pickled
])
def test_numpy_arrays_arrive_with_their_dtype_shape_and_values(sut, arr):
    sut.put(arr)
    got = sut.get()
    assert type(got) is np.ndarray and got.dtype == arr.dtype and got.shape == arr.shape
    assert got.flags.writeable
    assert (got == arr).all() if arr.dtype != object else list(got) == list(arr)


def test_put_many_and_get_many_accept_keywords_and_mixed_objects(sut):
    items = [b"raw", 7, np.arange(3), "text", bytearray(b"ba")]
    sut.put_many(items, block=True, timeout=1)
    got = sut.get_many(max_items=10, timeout=1)
    assert got[0] == b"raw" and got[1] == 7 and (got[2] == np.arange(3)).all() and got[3:] == ["text", bytearray(b"ba")]
    with pytest.raises(TypeError):
        sut.put(1, True, None, "extra")
    with pytest.raises(TypeError):
        sut.get(blok=False)


def _array_message(ndim, dtype_text, dims, data):
    head = struct.pack("<BBH12x", 4, ndim, len(dtype_text)) + b"".join(struct.pack("<Q", d) for d in dims) + dtype_text
    return head + bytes(-len(head) % 16) + data


@pytest.mark.parametrize("message", [
    _array_message(1, b"<i4", [3], bytes(8)),          # the shape needs 12 bytes, 8 follow
    _array_message(1, b"|u1", [1 << 62], bytes(16)),   # a shape that would overflow
    _array_message(40, b"|u1", [1] * 40, bytes(1)),    # more dimensions than numpy has
    _array_message(1, b"", [1], bytes(1)),             # no dtype
    b"\x04\x01",                                       # shorter than the header
    b"\x09payload",                                    # a tag no Python producer writes
])
def test_a_malformed_message_is_refused_naming_the_queue(unique_name, message):
    raw = shmpipe.Queue(name=unique_name("raw"), dtype=bytes)
    raw.put(message)
    sut = shmpipe.Queue.open(raw.name)
    with pytest.raises(shmpipe.TypeMismatch, match=f'get from queue "{raw.name}"'):
        sut.get(timeout=5)
    with pytest.raises(queue.Empty):
        sut.get_nowait()  # the bad message was consumed
