"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value and Array:
multiprocessing's names over the named C++ objects (shmpipe::Mutex, RecursiveMutex,
Semaphore, Event, Condition, Barrier, SharedValue / SharedArray), so C++ processes open
them by name. The creating object owns the name (removed when it is garbage collected);
``X.open(name)`` attaches; pickling reopens by name."""
import ctypes

from . import _native
from ._common import DEFAULT_PERMISSIONS, unique_name
from ._errors import Broken, Timeout

_SEM_VALUE_MAX = 0x7FFFFFFF


class _Named:
    _native_type = None
    _kind = None

    @classmethod
    def open(cls, name):
        """Attaches to the existing object `name` (made by Python or C++)."""
        obj = cls.__new__(cls)
        obj._h = cls._native_type.open(name)
        return obj

    @property
    def name(self):
        return self._h.name

    def __reduce__(self):
        return (type(self).open, (self.name,))

    def __repr__(self):
        return f"<shmpipe.{type(self).__name__} {self.name!r}>"


class _Acquirable:
    """acquire / release / with over the native handle self._h."""

    def acquire(self, block=True, timeout=None):
        """True once acquired; False if block=False or the timeout passed."""
        return self._h.acquire(block, timeout)

    def release(self):
        self._h.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class _LockBase(_Acquirable, _Named):
    """A lock whose holder died is recovered: acquire() succeeds and ``owner_died`` is True
    until ``mark_consistent()``. release() raises NotOwner (a RuntimeError) unless the
    calling thread holds it."""

    @property
    def owner_died(self):
        return self._h.owner_died

    def mark_consistent(self):
        self._h.mark_consistent()


class Lock(_LockBase):
    """A non-recursive lock (shmpipe::Mutex). Unlike multiprocessing.Lock, only the holding
    thread may release it, and acquiring it twice in one thread raises InvalidState
    instead of deadlocking."""
    _native_type = _native.Mutex

    def __init__(self, *, name=None, permissions=DEFAULT_PERMISSIONS):
        self._h = _native.Mutex.create(name or unique_name("lock"), permissions)


class RLock(_LockBase):
    """A recursive lock (shmpipe::RecursiveMutex)."""
    _native_type = _native.RecursiveMutex

    def __init__(self, *, name=None, permissions=DEFAULT_PERMISSIONS):
        self._h = _native.RecursiveMutex.create(name or unique_name("rlock"), permissions)


class Semaphore(_Acquirable, _Named):
    """A counting semaphore (shmpipe::Semaphore); any process may release."""
    _native_type = _native.Semaphore

    def __init__(self, value=1, *, name=None, permissions=DEFAULT_PERMISSIONS, _max=_SEM_VALUE_MAX):
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._h = _native.Semaphore.create(name or unique_name("sem"), value, _max, permissions)

    def release(self, n=1):
        self._h.release(n)

    def get_value(self):
        return self._h.value


class BoundedSemaphore(Semaphore):
    """A semaphore whose release above the initial value raises ValueError (Overflow)."""

    def __init__(self, value=1, *, name=None, permissions=DEFAULT_PERMISSIONS):
        super().__init__(value, name=name or unique_name("bsem"), permissions=permissions, _max=max(value, 1))


class Event(_Named):
    """A flag processes wait for (shmpipe::Event)."""
    _native_type = _native.Event

    def __init__(self, *, name=None, permissions=DEFAULT_PERMISSIONS):
        self._h = _native.Event.create(name or unique_name("event"), permissions)

    def is_set(self):
        return self._h.is_set()

    def set(self):
        self._h.set()

    def clear(self):
        self._h.clear()

    def wait(self, timeout=None):
        """True once set; False when the timeout passed first."""
        return self._h.wait(timeout)


class Condition:
    """A condition variable (shmpipe::Condition) with its Lock (a shmpipe.Lock, by default
    a new one named ``<name>.lock``; multiprocessing defaults to an RLock)."""

    def __init__(self, lock=None, *, name=None, permissions=DEFAULT_PERMISSIONS):
        if lock is not None and not isinstance(lock, Lock):
            raise TypeError("shmpipe.Condition needs a shmpipe.Lock (a C++ Condition waits with a Mutex)")
        name = name or unique_name("cond")
        self._lock = lock if lock is not None else Lock(name=name + ".lock", permissions=permissions)
        self._h = _native.Condition.create(name, permissions)

    @classmethod
    def open(cls, name, lock_name=None):
        obj = cls.__new__(cls)
        obj._h = _native.Condition.open(name)
        obj._lock = Lock.open(lock_name or name + ".lock")
        return obj

    @property
    def name(self):
        return self._h.name

    def __reduce__(self):
        return (Condition.open, (self.name, self._lock.name))

    def acquire(self, block=True, timeout=None):
        return self._lock.acquire(block, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def wait(self, timeout=None):
        """Releases the lock, waits for a notify (True) or the timeout (False), and holds the
        lock again on return."""
        return self._h.wait(self._lock._h, timeout)

    def wait_for(self, predicate, timeout=None):
        import time
        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n=1):
        self._h.notify(n)

    def notify_all(self):
        self._h.notify_all()


class Barrier(_Named):
    """A barrier for `parties` processes (shmpipe::Barrier). A timeout or abort() breaks it:
    waiters raise Broken (a threading.BrokenBarrierError). `action` runs in the process
    whose wait() returns the last index, after all are released."""
    _native_type = _native.Barrier

    def __init__(self, parties, action=None, timeout=None, *, name=None, permissions=DEFAULT_PERMISSIONS):
        self._h = _native.Barrier.create(name or unique_name("barrier"), parties, permissions)
        self._action, self._timeout = action, timeout

    @classmethod
    def open(cls, name):
        obj = super().open(name)
        obj._action = obj._timeout = None
        return obj

    def wait(self, timeout=None):
        """This party's arrival index, 0 .. parties-1."""
        try:
            index = self._h.wait(timeout if timeout is not None else self._timeout)
        except Timeout as e:
            raise Broken(str(e), code="broken") from None
        if self._action is not None and index == self._h.parties - 1:
            self._action()
        return index

    def abort(self):
        """Breaks the barrier: parties waiting now and later (any process) raise Broken (a
        threading.BrokenBarrierError) until reset()."""
        self._h.abort()

    def reset(self):
        """Back to the empty state: parties waiting now (any process) raise Broken; later
        waits use the barrier normally, also after it broke (threading.Barrier.reset)."""
        self._h.reset()

    @property
    def parties(self):
        """The number of parties that must arrive."""
        return self._h.parties

    @property
    def n_waiting(self):
        """Parties waiting now, in every process (stale as soon as read)."""
        return self._h.n_waiting

    @property
    def broken(self):
        """True after abort() or a timed-out wait, until reset()."""
        return self._h.broken


# multiprocessing typecodes -> the native SharedArray<T>; 'l'/'q' are std::int64_t.
_ARRAY_OF_CODE = {
    "b": _native.Array_b, "B": _native.Array_B, "h": _native.Array_h, "H": _native.Array_H,
    "i": _native.Array_i, "I": _native.Array_I, "l": _native.Array_q, "L": _native.Array_Q,
    "q": _native.Array_q, "Q": _native.Array_Q, "f": _native.Array_f, "d": _native.Array_d,
}


def _typecode(typecode_or_type):
    if isinstance(typecode_or_type, str):
        code = typecode_or_type
    else:
        code = getattr(typecode_or_type, "_type_", None)  # a ctypes type, e.g. ctypes.c_double
        if code == "l" and ctypes.sizeof(typecode_or_type) == 8:
            code = "q"
    if code not in _ARRAY_OF_CODE:
        raise TypeError(f"unsupported typecode {typecode_or_type!r} (use one of {''.join(_ARRAY_OF_CODE)})")
    return code


class _ArrayLock(_Acquirable):
    """get_lock(): the array's own robust lock (what a C++ SharedArray::lock() takes)."""

    def __init__(self, h):
        self._h = h


class Array:
    """A fixed-size shared array (shmpipe::SharedArray<T>): indexing, slices, len, iteration;
    get_obj() is a writable memoryview of the elements (numpy.frombuffer works on it)."""

    def __init__(self, typecode_or_type, size_or_initializer, *, lock=True, name=None,
                 permissions=DEFAULT_PERMISSIONS):
        code = _typecode(typecode_or_type)
        init = None
        if isinstance(size_or_initializer, int):
            size = size_or_initializer
        else:
            init = list(size_or_initializer)
            size = len(init)
        self._code = code
        self._h = _ARRAY_OF_CODE[code].create(name or unique_name("array"), size, permissions)
        if init:
            self[:] = init

    @classmethod
    def open(cls, name, typecode_or_type):
        obj = cls.__new__(cls)
        obj._code = _typecode(typecode_or_type)
        obj._h = _ARRAY_OF_CODE[obj._code].open(name)
        return obj

    @property
    def name(self):
        return self._h.name

    def __reduce__(self):
        return (type(self).open, (self.name, self._code))

    def __len__(self):
        return len(self._h)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._h.load(k) for k in range(*i.indices(len(self)))]
        return self._h.load(self._index(i))

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            keys = range(*i.indices(len(self)))
            v = list(v)
            if len(v) != len(keys):
                raise ValueError("can only assign a sequence of the same size to an Array slice")
            for k, x in zip(keys, v):
                self._h.store(k, x)
        else:
            self._h.store(self._index(i), v)

    def _index(self, i):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Array index out of range")
        return i

    def __iter__(self):
        return iter(self[:])

    def fetch_add(self, i, delta):
        """Atomically adds delta to element i and returns its old value (like the C++
        SharedArray::fetch_add; not in multiprocessing)."""
        return self._h.fetch_add(self._index(i), delta)

    def get_lock(self):
        return _ArrayLock(self._h)

    def get_obj(self):
        return memoryview(self._h)

    def __repr__(self):
        return f"<shmpipe.Array {self.name!r} {self[:]!r}>"


class Value(Array):
    """One shared value (shmpipe::SharedValue<T>, an array of one): ``.value``."""

    def __init__(self, typecode_or_type, *args, lock=True, name=None, permissions=DEFAULT_PERMISSIONS):
        super().__init__(typecode_or_type, 1, name=name or unique_name("value"), permissions=permissions)
        if args:
            self._h.store(0, args[0])

    @property
    def value(self):
        return self._h.load(0)

    @value.setter
    def value(self, v):
        self._h.store(0, v)

    def __repr__(self):
        return f"<shmpipe.Value {self.name!r} {self.value!r}>"
