"""A Python script as a native pipeline-launch stage: examples/mixed_pipeline.toml runs a
C++ source, 4 Python workers and a C++ collector over shared-memory queues."""
import os
import subprocess
import sys

import pytest


def test_the_mixed_cpp_and_python_pipeline_gives_the_sum_of_squares(unique_name, bin_dir):
    spec = os.path.join(os.environ["SHMPIPE_SOURCE_DIR"], "examples", "mixed_pipeline.toml")
    name = unique_name("launch")
    env = dict(os.environ)
    # The workers run `python3`: the interpreter running these tests, with the module on PYTHONPATH.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    try:
        r = subprocess.run([os.path.join(bin_dir, "pipeline-launch"), "--name", name, "--no-status", spec],
                           env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"pipeline-launch did not finish within 120 s: {e.stderr}")
    n = 100000
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"collector.0 | collected {n} results, sum {n * (n + 1) * (2 * n + 1) // 6}\n", r.stderr
    assert not [e for e in os.listdir("/dev/shm") if name in e]
