"""Typed messages between Python and a C++ process (py_peer): the same bytes as
Producer<T> / Consumer<T> for std::int64_t, double, a struct, std::string and raw bytes."""
import os

import pytest

import shmpipe

COUNT = 1000

# py_peer TYPE -> (Queue keyword arguments, the value of message i as py_peer computes it)
TYPES = {
    "i64": ({"dtype": "<q"}, lambda i: i * 3 - 7),
    "f64": ({"dtype": "<d"}, lambda i: i * 0.5),
    "point": ({"dtype": "<iid", "cpp_type": "Point"}, lambda i: (i, -i, i * 0.25)),
    "string": ({"dtype": str}, lambda i: f"msg-{i}"),
    "bytes": ({"dtype": bytes}, lambda i: bytes([i & 0xFF]) * (i % 100)),
}


@pytest.mark.parametrize("kind", TYPES)
def test_python_reads_what_a_cpp_producer_writes(kind, unique_name, py_peer, children):
    kwargs, value = TYPES[kind]
    sut = shmpipe.Queue(name=unique_name(kind), producers="one", **kwargs)
    peer = children.start([py_peer, "produce", kind, sut.name, str(COUNT)])
    got = list(sut)  # until the C++ producer closes
    rc, out, err = children.finish(peer, f"py_peer produce {kind}")
    assert rc == 0, out + err
    assert got == [value(i) for i in range(COUNT)]
    sut.close()


@pytest.mark.parametrize("kind", TYPES)
def test_a_cpp_consumer_reads_what_python_writes(kind, unique_name, py_peer, children):
    kwargs, value = TYPES[kind]
    sut = shmpipe.Queue(name=unique_name(kind), consumers="one", **kwargs)
    peer = children.start([py_peer, "consume", kind, sut.name, str(COUNT)])
    sut.put_many(value(i) for i in range(COUNT))
    sut.seal()  # no other producer comes: with close() below, the end the C++ consumer waits for
    sut.close()
    rc, out, err = children.finish(peer, f"py_peer consume {kind}")
    assert rc == 0, out + err
    assert out.strip() == f"count={COUNT}"


def test_a_python_endpoint_of_another_type_is_refused(unique_name, py_peer, children):
    sut = shmpipe.Queue(name=unique_name("typed"), dtype="<q")
    peer = children.start([py_peer, "produce", "i64", sut.name, "3"])
    rc, out, err = children.finish(peer, "py_peer produce i64")
    assert rc == 0, out + err
    wrong = shmpipe.Queue.open(sut.name, dtype="<d")
    with pytest.raises(shmpipe.TypeMismatch) as e:
        wrong.get()
    assert sut.name in str(e.value)
    assert sut.get_many(3) == [-7, -4, -1]
    sut.close()


def test_a_pickled_message_read_as_raw_bytes_by_cpp_is_named_not_misread(unique_name, py_peer, children):
    sut = shmpipe.Queue(name=unique_name("raw"))  # pickle payloads
    peer = children.start([py_peer, "produce", "bytes", sut.name, "2"])
    rc, out, err = children.finish(peer, "py_peer produce bytes")
    assert rc == 0, out + err
    with pytest.raises(shmpipe.TypeMismatch) as e:
        sut.get()  # C++ bytes carry no Python tag
    assert "dtype=bytes" in str(e.value)
    sut.close()


def test_a_typed_cpp_queue_refuses_python_endpoints_naming_the_queue(unique_name, py_peer, children):
    """Queue::create<Point> for one producer and one consumer makes fixed slots without record
    headers: only C++ Producer<Point>/Consumer<Point> may use them. Python is refused, clearly."""
    name = unique_name("typed")
    peer = children.start([py_peer, "create-typed", name])
    rc, out, err = children.finish(peer, "py_peer create-typed")
    assert rc == 0 and out.strip() == "typed=1", out + err
    try:
        sut = shmpipe.Queue.open(name, dtype="<iid", cpp_type="Point")
        with pytest.raises(shmpipe.TypeMismatch, match=name):
            sut.put((1, 2, 3.0))
        with pytest.raises(shmpipe.TypeMismatch, match="typed queue"):
            sut.get_nowait()
        sut.close()
    finally:
        os.unlink("/dev/shm/shmpipe." + name)
