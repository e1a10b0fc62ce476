"""The shmpipe exception hierarchy.

Every C++ ``shmpipe::Error`` arrives as an instance of :class:`Error` (or the subclass of
its error code) whose message is the C++ ``what()``. Subclasses also derive from the
built-in exception a Python user would catch for the same situation.
"""
import queue
import threading

from . import _native


class Error(Exception):
    """A shmpipe operation failed. ``code`` names the C++ ``shmpipe::errc`` ("errno" for
    an operating-system error, then ``errno`` holds it)."""

    code = "error"

    def __init__(self, message, *, code=None, errno=0):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.errno = errno


class EndOfStream(Error, EOFError):
    """Every producer closed and the queue is drained: nothing more will come."""
    code = "end_of_stream"


class ProducerDied(Error):
    """A producer died without closing; what it committed was delivered first."""
    code = "producer_died"


class ConsumerDied(Error):
    code = "consumer_died"


class Closed(Error):
    code = "closed"


class Broken(Error, threading.BrokenBarrierError):
    """The object was marked broken (a queue by a failing pipeline, a barrier by abort or a
    timeout)."""
    code = "broken"


class NotFound(Error, FileNotFoundError):
    code = "not_found"


class AlreadyExists(Error, FileExistsError):
    code = "already_exists"


class PermissionDenied(Error, PermissionError):
    code = "permission_denied"


class InvalidName(Error, ValueError):
    code = "invalid_name"


class InvalidArgument(Error, ValueError):
    code = "invalid_argument"


class MessageTooLarge(Error, ValueError):
    code = "message_too_large"


class Overflow(Error, ValueError):
    """A count would pass its maximum (e.g. a BoundedSemaphore released too many times)."""
    code = "overflow"


class TypeMismatch(Error, TypeError):
    code = "type_mismatch"


class Timeout(Error, TimeoutError):
    code = "timeout"


class NotOwner(Error, RuntimeError):
    """Release of a lock the calling thread does not hold."""
    code = "not_owner"


class InvalidState(Error, RuntimeError):
    code = "invalid_state"


_BY_CODE = {cls.code: cls for cls in Error.__subclasses__()}


def _make(code, errno, message):
    cls = _BY_CODE.get(code, Error)
    return cls(message, code=code, errno=errno)


_native.set_error_factory(_make)

# multiprocessing.Queue raises these; re-exported as shmpipe.Full / shmpipe.Empty.
Full = queue.Full
Empty = queue.Empty
