"""shmpipe: multiprocessing's Queue, locks and shared values over shared memory, shared with
C++ processes (the shmpipe C++ library) by name.

    import shmpipe
    q = shmpipe.Queue()               # instead of multiprocessing.Queue()
    q.put({"frame": 1}); q.get()

See the Python section of the project README.
"""
from ._errors import (AlreadyExists, Broken, Closed, ConsumerDied, Empty, EndOfStream, Error, Full,
                      InvalidArgument, InvalidName, InvalidState, MessageTooLarge, NotFound, NotOwner,
                      Overflow, PermissionDenied, ProducerDied, Timeout, TypeMismatch)
from ._queue import DEFAULT_MAX_MESSAGE, Queue
from ._stage import stage_inputs, stage_outputs, stage_queue
from ._sync import Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value

__all__ = [
    "Queue", "DEFAULT_MAX_MESSAGE", "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition",
    "Barrier", "Value", "Array", "stage_inputs", "stage_outputs", "stage_queue",
    "Error", "EndOfStream", "ProducerDied", "ConsumerDied", "Closed", "Broken", "NotFound", "AlreadyExists",
    "PermissionDenied", "InvalidName", "InvalidArgument", "MessageTooLarge", "Overflow", "TypeMismatch",
    "Timeout", "NotOwner", "InvalidState", "Full", "Empty",
]
