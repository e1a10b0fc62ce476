"""shmpipe.Queue: multiprocessing.Queue over a shared-memory shmpipe queue."""
import asyncio
import multiprocessing.util
import pickle
import struct

from . import _native
from ._common import DEFAULT_PERMISSIONS, forget_at_fork, unique_name
from ._errors import Empty, EndOfStream, Full

DEFAULT_MAX_MESSAGE = (1 << 20) + (64 << 10)  # a 1 MiB array plus its pickle header
DEFAULT_SLOTS = 1024  # messages a maxsize=0 queue holds before put() blocks (memory is
# reserved, not touched: a slot's pages are used only when a message that large is written)

# Python struct codes -> typeid(T).name() of the C++ type of the same size and kind (the
# type tag a C++ Producer<T> / Consumer<T> checks). 'q'/'l' are std::int64_t (long).
_CPP_NAME_OF_CODE = {
    "b": "a", "B": "h", "h": "s", "H": "t", "i": "i", "I": "j",
    "l": "l", "L": "m", "q": "l", "Q": "m", "f": "f", "d": "d", "?": "b",
}
_CPP_STRING = "NSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"  # std::string


def _mangle(cpp_type):
    """The Itanium mangled name of a (possibly ::-qualified) C++ class name."""
    parts = [p for p in cpp_type.split("::") if p]
    if not parts or not all(p.isidentifier() for p in parts):
        raise ValueError(f"cpp_type {cpp_type!r} is not a C++ class name like 'Point' or 'ns::Point'")
    enc = "".join(f"{len(p)}{p}" for p in parts)
    return enc if len(parts) == 1 else f"N{enc}E"


class _Codec:
    """How one queue turns objects into message bytes: pickle (default) and raw bytes run in
    C (_native.QueueCore); str, a struct format and a numpy dtype here."""

    def __init__(self, dtype, cpp_type):
        self.dtype, self.cpp_type = dtype, cpp_type
        self.tag = 0
        self.native_kind = _KIND_TYPED
        self.struct = None
        self.np_dtype = None
        if dtype is None:
            self.kind = "pickle"
            self.native_kind = _KIND_PICKLE
        elif dtype is bytes:
            self.kind = "bytes"
            self.native_kind = _KIND_BYTES
        elif dtype is str:
            self.kind = "str"
            self.tag = _native.type_tag_of_name(_CPP_STRING)
        elif isinstance(dtype, str):
            self.kind = "struct"
            self.struct = struct.Struct(dtype)
            code = dtype.lstrip("<>=!@")
            if cpp_type is None and dtype[:1] in "<=" and code in _CPP_NAME_OF_CODE:
                self.tag = _native.type_tag_of_name(_CPP_NAME_OF_CODE[code])
        else:
            import numpy  # only needed for numpy dtypes

            self.kind = "numpy"
            self.np_dtype = numpy.dtype(dtype)
        if cpp_type is not None:
            self.tag = _native.type_tag_of_name(_mangle(cpp_type))

    def put(self, tx, obj, block, timeout):
        kind = self.kind
        if kind == "str":
            return tx.put(obj.encode(), block, timeout)
        if kind == "struct":
            data = self.struct.pack(*obj) if isinstance(obj, tuple) else self.struct.pack(obj)
            return tx.put(data, block, timeout)
        import numpy

        data = numpy.asarray(obj, dtype=self.np_dtype).tobytes()
        if len(data) != self.np_dtype.itemsize:
            raise ValueError(f"put: expected one {self.np_dtype} record, got {len(data)} bytes")
        return tx.put(data, block, timeout)

    def get(self, rx, block, timeout):
        """The next object, or None when none came (timeout or end: rx.ended tells)."""
        data = rx.get(block, timeout)
        return None if data is None else self.decode(data)

    def decode(self, data):
        kind = self.kind
        if kind == "str":
            return data.decode()
        if kind == "struct":
            v = self.struct.unpack(data)
            return v[0] if len(v) == 1 else v
        import numpy

        return numpy.frombuffer(data, dtype=self.np_dtype)[0]


_KIND_TYPED, _KIND_PICKLE, _KIND_BYTES = 0, 1, 2  # the codecs of _native.QueueCore


def _loads_frames(payload, frames):
    """A kTagFrames message (a bytearray copy): frame 0 the pickle stream, then its
    out-of-band buffers, as (offset, length) inside it."""
    view = memoryview(payload)
    (o, n), *rest = frames
    return pickle.loads(view[o:o + n], buffers=[view[o:o + n] for o, n in rest])


_native.configure_queue_core(pickle.dumps, pickle.loads, _loads_frames, Full, Empty, EndOfStream)


class _Endpoints:
    """This process's producer and consumer of one queue, attached on first use."""

    __slots__ = ("tx", "rx", "finalizer", "__weakref__")

    def __init__(self):
        self.tx = self.rx = self.finalizer = None

    def close(self):
        tx, rx, self.tx, self.rx = self.tx, self.rx, None, None
        if tx is not None:
            tx.close()
        if rx is not None:
            rx.close()


class _Peek:
    """``with q.peek() as view``: the message in place, released at the end of the block."""

    def __init__(self, slot):
        self._slot = slot
        self._view = memoryview(slot)

    def __enter__(self):
        return self._view

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self):
        if self._slot is None:
            return
        slot, self._slot = self._slot, None
        try:
            self._view.release()  # later use of the view raises ValueError
        finally:
            slot.release()  # a view derived from it keeps the mapping (never a crash)


class Queue(_native.QueueCore):
    """A process-shared FIFO queue with multiprocessing.Queue's interface.

    ``Queue(maxsize=0, *, name=None, ...)`` creates the queue (this object owns the name and
    removes it when garbage collected); ``Queue.open(name)`` attaches to an existing one
    (made by Python or C++). Objects are pickled by default (protocol 5, large buffers out
    of band); ``dtype`` selects raw ``bytes``, ``str`` (std::string) or a struct format /
    numpy dtype shared with a C++ ``Producer<T>`` / ``Consumer<T>``.

    put, get, put_nowait, get_nowait, put_many and get_many are the C methods of the base
    class _native.QueueCore (one C call per put or get).
    """

    def __init__(self, maxsize=0, *, name=None, max_message=DEFAULT_MAX_MESSAGE, producers="many",
                 consumers="many", dtype=None, cpp_type=None, expected_producers=0, capacity=None,
                 permissions=DEFAULT_PERMISSIONS):
        for side, v in (("producers", producers), ("consumers", consumers)):
            if v not in ("one", "many"):
                raise ValueError(f"{side} must be 'one' or 'many', not {v!r}")
        if maxsize < 0:
            maxsize = 0
        # The ring holds at least maxsize messages of max_message bytes (DEFAULT_SLOTS when
        # maxsize is 0), unless an explicit capacity in bytes sizes it.
        max_messages = 0 if capacity is not None else (maxsize or DEFAULT_SLOTS)
        name = name if name is not None else unique_name("queue")
        handle = _native.QueueHandle.create(name, capacity or 0, max_messages, max_message,
                                            producers == "one", consumers == "one",
                                            expected_producers, permissions)
        self._setup(name, handle, maxsize, _Codec(dtype, cpp_type))

    @classmethod
    def open(cls, name, *, dtype=None, cpp_type=None, maxsize=0):
        """Attaches to the existing queue `name` (NotFound if nobody created it)."""
        q = cls.__new__(cls)
        q._setup(name, _native.QueueHandle.open(name), maxsize, _Codec(dtype, cpp_type))
        return q

    def _setup(self, name, handle, maxsize, codec):
        self._name = name
        self._handle = handle  # the creator's handle owns the name
        self._maxsize = maxsize
        self._codec = codec
        self._ep = _Endpoints()
        self._ready = {}  # "rx"/"tx" -> _Readiness of the running loop (asyncio)
        self._closed = False
        self._set_kind(codec.native_kind)
        forget_at_fork(self)

    def _forget_endpoints(self):
        self._drop_endpoints()
        self._ep = _Endpoints()
        self._ready = {}

    def __reduce__(self):
        c = self._codec
        return (_reopen, (self._name, c.dtype, c.cpp_type, self._maxsize))

    def __repr__(self):
        return f"<shmpipe.Queue {self._name!r}>"

    @property
    def name(self):
        return self._name

    @property
    def max_message(self):
        return self._handle.max_message

    def _tx(self):
        return self._ep.tx or self._attach("tx", _native.Producer)

    def _rx(self):
        return self._ep.rx or self._attach("rx", _native.Consumer)

    def _attach(self, side, endpoint_type):
        if self._closed:
            raise ValueError(f"Queue {self._name!r} is closed")
        ep = self._ep
        endpoint = endpoint_type(self._name, self._codec.tag)
        setattr(ep, side, endpoint)
        # Close this process's endpoints when the object dies or the process exits
        # (multiprocessing children run these finalizers before os._exit). Registered at
        # the first attach, in the attaching process: a forked child's registry starts empty.
        if ep.finalizer is None:
            ep.finalizer = multiprocessing.util.Finalize(self, ep.close, exitpriority=10)
        return endpoint

    # --- multiprocessing.Queue -------------------------------------------------------------
    # put, get, put_nowait, get_nowait, put_many, get_many: _native.QueueCore.

    def _put_typed(self, obj, block, timeout):
        """QueueCore.put of a typed queue: False when full."""
        return self._codec.put(self._tx(), obj, block, timeout)

    def _get_typed(self, block, timeout):
        """QueueCore.get of a typed queue: None when none came."""
        return self._codec.get(self._rx(), block, timeout)

    def __iter__(self):
        """Yields objects until the end of stream."""
        while True:
            try:
                yield self.get()
            except EndOfStream:
                return

    def peek(self, block=True, timeout=None):
        """Zero copy: ``with q.peek() as view:`` gives the next message's bytes in place as a
        read-only memoryview, consumed at the end of the block; the view is released then
        (using it later raises ValueError). Raw messages: a pickled message's bytes include
        its tag, so peek suits queues made with dtype=bytes or a struct format."""
        rx = self._ep.rx or self._rx()
        slot = rx.peek(block, timeout)
        if slot is None:
            self._nothing()
        return _Peek(slot)

    def _stats(self):
        return self._handle.stats()

    def qsize(self):
        """Messages waiting (approximate, as in multiprocessing)."""
        return int(self._stats()["depth"])

    def empty(self):
        return self.qsize() == 0

    def full(self):
        s = self._stats()
        if self._maxsize:
            return s["depth"] >= self._maxsize
        if s["spsc"]:
            return s["capacity"] - s["bytes_used"] < 16
        return s["bytes_used"] >= s["capacity"]

    def close(self):
        """This process puts and gets no more: closes its producer (counted towards the end
        of stream; a "many" queue also needs seal() or expected_producers) and consumer.
        Idempotent."""
        self._closed = True
        self._drop_endpoints()
        self._ready = {}
        self._ep.close()

    def join_thread(self):
        """No-op: puts are written synchronously, there is no feeder thread."""

    def cancel_join_thread(self):
        """No-op: puts are written synchronously, there is no feeder thread."""

    def seal(self):
        """No new producer may attach (any process); once every attached producer has
        closed, the stream ends. A queue made with producers="many" and no
        expected_producers never ends otherwise: get() waits, as in multiprocessing."""
        self._handle.seal()

    def mark_broken(self):
        """Every blocked and later put/get (any process) raises shmpipe.Broken."""
        self._handle.mark_broken()

    # --- asyncio -----------------------------------------------------------------------------
    # The readiness descriptors of this process's endpoints (Consumer::fd / Producer::fd in
    # C++) in the running loop's selector: no thread. An empty get_nowait / a full put_nowait
    # arms the descriptor before its last look, so no wake-up is lost between the try and
    # the wait; the descriptor is level-style and may be ready spuriously (the retry then
    # finds nothing and waits again). A cancelled await has taken nothing.

    async def get_async(self, timeout=None):
        """get() for asyncio: waits on the queue's readiness descriptor (loop.add_reader).
        queue.Empty after `timeout` seconds; EndOfStream, ProducerDied as get() raises them."""
        ready = self._readiness("rx")
        deadline = None if timeout is None else ready.loop.time() + timeout
        while True:
            try:
                return self.get_nowait()
            except Empty:
                pass
            await ready.wait(deadline, Empty)

    async def put_async(self, obj, timeout=None):
        """put() for asyncio: waits on the queue's readiness descriptor while it is full
        (loop.add_reader). queue.Full after `timeout` seconds."""
        ready = self._readiness("tx")
        deadline = None if timeout is None else ready.loop.time() + timeout
        while True:
            try:
                return self.put_nowait(obj)
            except Full:
                pass
            await ready.wait(deadline, Full)

    def _readiness(self, side):
        loop = asyncio.get_running_loop()
        ready = self._ready.get(side)
        if ready is None or ready.loop is not loop:
            endpoint = self._tx() if side == "tx" else self._rx()
            ready = self._ready[side] = _Readiness(loop, endpoint.fd())
        return ready


class _Readiness:
    """The tasks of one event loop waiting on one readiness descriptor: one reader
    (loop.add_reader) while any waits; when it fires it is removed and every waiter wakes
    to retry."""

    def __init__(self, loop, fd):
        self.loop, self.fd, self.waiters = loop, fd, set()

    async def wait(self, deadline, timed_out):
        """Until the descriptor is readable; raises timed_out at the loop time `deadline`."""
        left = None if deadline is None else deadline - self.loop.time()
        if left is not None and left <= 0:
            raise timed_out
        fut = self.loop.create_future()
        if not self.waiters:
            self.loop.add_reader(self.fd, self._fire)
        self.waiters.add(fut)
        try:
            await asyncio.wait_for(fut, left)
        except asyncio.TimeoutError:
            raise timed_out from None
        finally:
            if fut in self.waiters:  # timed out or cancelled: it did not fire for us
                self.waiters.discard(fut)
                if not self.waiters:
                    self.loop.remove_reader(self.fd)

    def _fire(self):
        self.loop.remove_reader(self.fd)
        waiters, self.waiters = self.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


def _reopen(name, dtype, cpp_type, maxsize):
    return Queue.open(name, dtype=dtype, cpp_type=cpp_type, maxsize=maxsize)
