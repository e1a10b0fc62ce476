"""Shared fixtures: unique object names, the C++ peers, and the leak check every test file
ends with (no /dev/shm object a test made is left, no peer process survives)."""
import itertools
import os
import secrets
import subprocess
import sys
import time

import pytest

_counter = itertools.count(1)


def _ours(entry):
    # Names this session's tests pick (t-py-<label>-<pid>-...) and anonymous names the module
    # picks in this process (py.<kind>.<pid>....). Other pytest files run in parallel (ctest -j).
    pid = os.getpid()
    return (entry.startswith("shmpipe.t-py-") and f"-{pid}-" in entry) or (
        entry.startswith("shmpipe.py.") and f".{pid}." in entry)


def _shm_entries():
    return {e for e in os.listdir("/dev/shm") if _ours(e)}


_before = set()


def pytest_sessionstart(session):
    _before.update(_shm_entries())


def pytest_sessionfinish(session, exitstatus):
    # After every test's fixtures are gone (pytest holds the last test's until then).
    import gc
    gc.collect()
    left = sorted(_shm_entries() - _before)
    if left:
        print(f"\nFAILED leak check: objects left in /dev/shm: {left}")
        session.exitstatus = 1


@pytest.fixture
def unique_name():
    """unique_name(label) -> 't-py-<label>-<pid>-<n>-<random>' (removed by the leak check's
    prefix rules; the C++ suite's zz_no_leaked_objects_or_processes sees the t- prefix)."""
    def make(label="obj"):
        return f"t-py-{label}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
    return make


def _env_path(var):
    path = os.environ.get(var)
    if not path:
        pytest.skip(f"{var} is not set (run the Python tests through ctest)")
    return path


@pytest.fixture
def py_peer():
    return _env_path("SHMPIPE_PY_PEER")


@pytest.fixture
def sync_peer():
    return os.path.join(_env_path("SHMPIPE_PEER_DIR"), "sync_peer")


@pytest.fixture
def bin_dir():
    return _env_path("SHMPIPE_BIN_DIR")


def wait_for(predicate, what, timeout=20):
    """Polls predicate() until true; fails the test naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Children:
    """Child processes of one test: every one is waited for with a deadline, and killed and
    reaped if the test ends first."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        return p

    def python(self, code, *args):
        return self.start([sys.executable, "-c", code, *args])

    def finish(self, p, what, timeout=30):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        return p.returncode, out, err

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture
def children():
    c = Children()
    yield c
    c.cleanup()
