#!/usr/bin/env python3
"""Pipeline chaos: runs pipeline-launch on real pipelines while killing things at random.

Each run picks a pipeline and a few random events at random times:
  - SIGKILL to one stage process (a restarted replica must not hide a loss),
  - SIGINT or SIGTERM to the launcher (a stopped run must exit 128+N),
  - SIGKILL to the launcher (its guardian must remove every object, its stages must die).
Then it checks what came out against what went in and reports, over all runs: kills, hangs,
messages lost (as the launcher counted them), messages missing beyond that count (silent
loss: a run that exits 0 with messages missing, or completes after restarts with more
missing than it counted), duplicated or foreign messages, wrong exit statuses, and objects or
processes left behind. It exits 1 if any of hangs, silent losses, duplicates, wrong statuses
or leftovers is non-zero. SHMPIPE_CHAOS_RUNS sets the default number of runs.

    pipeline_chaos.py --launcher build/ci/bin/pipeline-launch --bin-dir build/ci/bin --runs 100

Pipelines (N numbers in, every one accounted for):
  grep:   seq 1 N | grep '7$' (3 replicas, restart on-failure) | sort -n
  native: source N -> worker (3 replicas, restart on-failure) -> collector (count and sum)
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HANG_SECONDS = 90  # a run that takes longer is a hang: it is killed and counted


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def objects(prefix):
    return [n for n in os.listdir("/dev/shm") if n.startswith("shmpipe." + prefix)]


def pids_in(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def wait_until(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def grep_spec(d, n):
    return f"""[pipeline]
stop_timeout = "2s"
drain_timeout = "20s"
[[stage]]
name = "gen"
cmd = ["seq", "1", "{n}"]
stdout = "nums"
[[stage]]
name = "grep"
cmd = ["sh", "-c", "echo $$ >> {d}/pids; exec grep '7$'"]
stdin = "nums"
stdout = "hits"
replicas = 3
restart = "on-failure"
success_codes = [0, 1]
[[stage]]
name = "sink"
cmd = ["sh", "-c", "echo $$ >> {d}/pids; exec sort -n"]
stdin = "hits"
stdout = "inherit"
"""


def native_spec(d, n, bin_dir):
    return f"""[pipeline]
stop_timeout = "2s"
drain_timeout = "20s"
[[queue]]
name = "tasks"
max_message = 64
capacity = "64KiB"
[[queue]]
name = "results"
max_message = 64
capacity = "64KiB"
[[stage]]
name = "source"
cmd = ["{bin_dir}/source", "{n}"]
outputs = ["tasks"]
[[stage]]
name = "worker"
cmd = ["sh", "-c", "echo $$ >> {d}/pids; exec {bin_dir}/worker {{queue.tasks}} {{queue.results}}"]
inputs = ["tasks"]
outputs = ["results"]
replicas = 3
restart = "on-failure"
[[stage]]
name = "collector"
cmd = ["sh", "-c", "echo $$ >> {d}/pids; exec {bin_dir}/collector"]
inputs = ["results"]
"""


def check_output(kind, n, out):
    """Returns (delivered, duplicated, foreign) for what the sink printed."""
    if kind == "grep":
        seen, dup, foreign = set(), 0, 0
        lines = out.split("\n")
        # The sink (sort) writes straight to the output file: a sink SIGKILLed mid-write
        # leaves its last line cut, without a newline. That is the kill, not a message.
        lines = lines[:-1]
        for line in lines:
            if not line.strip():
                continue
            try:
                v = int(line)
            except ValueError:
                foreign += 1
                continue
            if v % 10 != 7 or v > n:
                foreign += 1
            elif v in seen:
                dup += 1
            else:
                seen.add(v)
        return len(seen), dup, foreign
    # native: "collector.0 | collected C results, sum S" goes to the log (stdout)
    for line in out.splitlines():
        if "collected" in line:
            words = line.split()
            c = int(words[words.index("collected") + 1])
            return c, max(0, c - n), 0
    return 0, 0, 0


def one_run(args, rng, index, totals):
    kind = rng.choice(["grep", "native"])
    n = 2_000_000 if kind == "grep" else 1_000_000
    expected = n // 10 if kind == "grep" else n
    name = f"t-chaos-{os.getpid()}-{index}"  # t-: the suite's leak check covers it
    with tempfile.TemporaryDirectory(prefix="chaos-") as d:
        spec = os.path.join(d, "spec.toml")
        with open(spec, "w") as f:
            f.write(grep_spec(d, n) if kind == "grep" else native_spec(d, n, args.bin_dir))
        out_path, err_path, sum_path = (os.path.join(d, x) for x in ("out", "err", "s.json"))
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(
                [args.launcher, "--name", name, "--no-status", "--summary-json", sum_path, spec],
                stdout=out, stderr=err, start_new_session=True)
        # Events: up to 2 stage kills, then maybe one launcher signal.
        events = []
        for _ in range(rng.randint(0, 2)):
            events.append((rng.uniform(0.05, 1.0), "stage"))
        r = rng.random()
        if r < 0.15:
            events.append((rng.uniform(0.05, 1.2), "launcher-SIGKILL"))
        elif r < 0.35:
            events.append((rng.uniform(0.05, 1.2), "launcher-SIGINT"))
        elif r < 0.5:
            events.append((rng.uniform(0.05, 1.2), "launcher-SIGTERM"))
        events.sort()
        t0 = time.monotonic()
        launcher_signal = None
        stage_kills = 0
        for at, what in events:
            while time.monotonic() - t0 < at and proc.poll() is None:
                time.sleep(0.005)
            if proc.poll() is not None:
                break
            if what == "stage":
                pids = [p for p in pids_in(os.path.join(d, "pids")) if alive(p)]
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        stage_kills += 1
                    except ProcessLookupError:
                        pass
            else:
                sig = getattr(signal, what.split("-")[1])
                proc.send_signal(sig)
                launcher_signal = sig
                totals["kills"][what] = totals["kills"].get(what, 0) + 1
        totals["kills"]["stage-SIGKILL"] = totals["kills"].get("stage-SIGKILL", 0) + stage_kills
        try:
            code = proc.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            totals["hangs"] += 1
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        totals["runs"] += 1

        problems = []
        # Leftovers: the guardian and the parent-death signals have a few seconds.
        if not wait_until(lambda: not objects(name), 10):
            left = objects(name)
            totals["leftover_objects"] += len(left)
            problems.append(f"objects left: {left}")
            for o in left:
                os.unlink("/dev/shm/" + o)
        stray = [p for p in pids_in(os.path.join(d, "pids")) if alive(p)]
        if stray and not wait_until(lambda: not [p for p in stray if alive(p)], 10):
            stray = [p for p in stray if alive(p)]
            totals["leftover_processes"] += len(stray)
            problems.append(f"processes left: {stray}")
            for p in stray:
                os.kill(p, signal.SIGKILL)

        with open(out_path) as f:
            out = f.read()
        with open(err_path) as f:
            err = f.read()
        summary = None
        try:
            with open(sum_path) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            pass
        delivered, dup, foreign = check_output(kind, n, out)
        totals["duplicated"] += dup
        totals["foreign"] += foreign
        if dup or foreign:
            problems.append(f"{dup} duplicated, {foreign} foreign messages")
        lost = summary["lost"] if summary else 0
        totals["lost_counted"] += lost
        missing = expected - delivered
        stopped = launcher_signal is not None
        if launcher_signal == signal.SIGKILL:
            if code != -signal.SIGKILL:
                problems.append(f"launcher SIGKILLed but exit {code}")
        elif stopped and summary is not None and summary.get("stop_signal") is not None:
            if code != 128 + launcher_signal:
                totals["wrong_status"] += 1
                problems.append(f"stopped by signal {launcher_signal} but exit {code}")
        else:
            # A run nobody stopped (or the signal came after its end). It may have failed
            # (fail-fast after a stage without restarts died): then it says so. But it never
            # exits 0 with anything missing, and when it completed (only restarts, nothing
            # failed) whatever is missing must be within what it counted as lost.
            if code == 0 and (missing > 0 or lost > 0):
                totals["silent_loss"] += missing
                problems.append(f"exit 0 with {missing} missing, {lost} counted as lost")
            completed = summary is not None and summary["ending"] == "completed" and \
                not any(r["failed"] for r in summary["stages"])
            if completed and missing > lost:
                totals["silent_loss"] += missing - lost
                problems.append(f"{missing} missing but only {lost} counted as lost")
        if problems or args.verbose:
            print(f"run {index} ({kind}, events {events}, exit {code}): " + ("; ".join(problems) or "ok"))
            if problems:
                print("  stderr tail: " + " | ".join(err.strip().splitlines()[-6:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--launcher", required=True)
    p.add_argument("--bin-dir", required=True, help="where source, worker and collector are")
    p.add_argument("--runs", type=int, default=int(os.environ.get("SHMPIPE_CHAOS_RUNS", "4")),
                   help="default: $SHMPIPE_CHAOS_RUNS or 4")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.add_argument("--verbose", action="store_true", help="one line per run")
    args = p.parse_args()
    args.launcher = os.path.abspath(args.launcher)
    args.bin_dir = os.path.abspath(args.bin_dir)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    totals = {"runs": 0, "kills": {}, "hangs": 0, "lost_counted": 0, "silent_loss": 0, "duplicated": 0,
              "foreign": 0, "wrong_status": 0, "leftover_objects": 0, "leftover_processes": 0}
    t0 = time.monotonic()
    for i in range(args.runs):
        one_run(args, rng, i, totals)
    totals["seed"] = seed
    totals["seconds"] = round(time.monotonic() - t0, 1)
    bad = sum(totals[k] for k in ("hangs", "silent_loss", "duplicated", "foreign", "wrong_status",
                                  "leftover_objects", "leftover_processes"))
    if args.json:
        print(json.dumps(totals))
    else:
        kills = ", ".join(f"{v} {k}" for k, v in sorted(totals["kills"].items())) or "none"
        print(f"pipeline chaos, seed {seed}: {totals['runs']} runs in {totals['seconds']} s; kills: {kills}")
        print(f"  hangs {totals['hangs']}, lost (counted by the launcher) {totals['lost_counted']}, "
              f"missing beyond that {totals['silent_loss']}, duplicated {totals['duplicated']}, "
              f"foreign {totals['foreign']}, wrong exit status {totals['wrong_status']}, "
              f"leftover objects {totals['leftover_objects']}, leftover processes {totals['leftover_processes']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
