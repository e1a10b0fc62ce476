"""Names, ownership and fork handling shared by every shmpipe object."""
import itertools
import os
import secrets
import weakref

_counter = itertools.count(1)
DEFAULT_PERMISSIONS = 0o600


def unique_name(kind):
    """An unused object name: py.<kind>.<pid>.<counter>.<random> (shmpipe.<name> in /dev/shm)."""
    return f"py.{kind}.{os.getpid()}.{next(_counter)}.{secrets.token_hex(4)}"


# Objects whose process-local endpoints a forked child must not use: after fork the child
# drops them (the C++ handles of the parent stay passive in the child) and attaches anew.
_fork_sensitive = weakref.WeakSet()


def forget_at_fork(obj):
    _fork_sensitive.add(obj)


def _after_fork_in_child():
    for obj in list(_fork_sensitive):
        obj._forget_endpoints()


os.register_at_fork(after_in_child=_after_fork_in_child)
