"""Checks an installed shmpipe Python package as a user meets it: `import shmpipe` finds it
under the expected folder, and a queue carries objects from a producer process (another
interpreter, opening the queue by name) to this one until the end of stream.
usage: python3 python_round_trip.py INSTALLED_PACKAGE_PARENT_DIR"""
import os
import subprocess
import sys

import shmpipe

PRODUCER = """
import sys, shmpipe
q = shmpipe.Queue.open(sys.argv[1])
for i in range(1000):
    q.put({"n": i, "payload": bytes(i % 64)})
q.put(b"raw bytes")
q.close()
"""


def main():
    expected = os.path.realpath(sys.argv[1])
    where = os.path.realpath(shmpipe.__file__)
    if not where.startswith(expected + os.sep):
        sys.exit(f"python round trip: imported {where}, not the package under {expected}")
    q = shmpipe.Queue(name=f"t-pkg-py-{os.getpid()}", expected_producers=1)
    producer = subprocess.run([sys.executable, "-c", PRODUCER, q.name], timeout=60)
    if producer.returncode != 0:
        sys.exit(f"python round trip: the producer exited with {producer.returncode}")
    items = list(q)  # until the end of stream: its one expected producer closed
    if [m["n"] for m in items[:-1]] != list(range(1000)) or items[-1] != b"raw bytes":
        sys.exit("python round trip: the consumer did not get the producer's 1001 objects in order")
    name = q.name
    del q, items  # the creator's object removes the queue
    if os.path.exists(f"/dev/shm/shmpipe.{name}"):
        sys.exit(f"python round trip: /dev/shm/shmpipe.{name} was left behind")
    print(f"python round trip: {where} carried 1001 objects between two processes")


if __name__ == "__main__":
    main()
