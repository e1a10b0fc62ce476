#!/usr/bin/python3
"""Checks a Prometheus scrape of shmpipe metrics against `inspect-queues --json`.

    check_metrics.py [--moving FIELD,...] METRICS_FILE JSON_FILE NAME...

Parses METRICS_FILE with prometheus_client's text parser (python3-prometheus-client), so a
scrape that is not valid exposition text fails here, then checks, for each queue NAME, that
every figure equals the one in JSON_FILE (the array `inspect-queues --json list` prints).
Prints "ok: ..." and exits 0, or prints each mismatch and exits 1.

--moving names JSON fields that may change between the two snapshots while peers run
(sleepers wake every 100 ms to re-check): those are only checked to lie between 0 and the
number of live endpoints.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    args = sys.argv[1:]
    moving = set()
    if args and args[0] == "--moving":
        moving = set(args[1].split(","))
        args = args[2:]
    metrics_file, json_file, names = args[0], args[1], args[2:]
    with open(metrics_file, encoding="utf-8") as f:
        families = list(text_string_to_metric_families(f.read()))
    with open(json_file, encoding="utf-8") as f:
        objects = {o["name"]: o for o in json.load(f)}

    # (family, queue, extra labels) -> value; families keep their declared type.
    samples = {}
    types = {}
    for fam in families:
        types[fam.name] = fam.type
        for s in fam.samples:
            extra = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("queue", "pipeline", "kind")))
            samples[(s.name, s.labels.get("queue"), extra)] = (s.value, s.labels)

    problems = []

    def expect(metric, name, want, extra=(), bound=None):
        got = samples.get((metric, name, tuple(sorted(extra))))
        if got is None:
            problems.append(f"{name}: no sample {metric}{dict(extra)}")
        elif bound is not None:
            if not 0 <= got[0] <= bound:
                problems.append(f"{name}: {metric}{dict(extra)} is {got[0]}, outside 0..{bound}")
        elif abs(got[0] - want) > 1e-9 * max(1.0, abs(want)):
            problems.append(f"{name}: {metric}{dict(extra)} is {got[0]}, inspect-queues --json says {want}")
        return got

    for t, fam in (("counter", "shmpipe_queue_messages_in"), ("counter", "shmpipe_queue_bytes_out"),
                   ("gauge", "shmpipe_queue_depth_messages"), ("gauge", "shmpipe_object_state")):
        if types.get(fam) != t:
            problems.append(f"family {fam} has type {types.get(fam)}, expected {t}")

    checked = 0
    for name in names:
        o = objects.get(name)
        if o is None:
            problems.append(f"{name}: not in the JSON listing")
            continue
        got = expect("shmpipe_queue_depth_messages", name, o["depth"])
        if got is not None and got[1].get("kind") != o["kind"]:
            problems.append(f"{name}: kind label {got[1].get('kind')!r}, JSON kind {o['kind']!r}")
        for metric, key in (("shmpipe_queue_capacity_bytes", "capacity"),
                            ("shmpipe_queue_max_message_bytes", "max_message"),
                            ("shmpipe_queue_used_bytes", "bytes_used"),
                            ("shmpipe_queue_expected_producers", "expected_producers"),
                            ("shmpipe_queue_producers_waiting", "producers_waiting"),
                            ("shmpipe_queue_consumers_waiting", "consumers_waiting"),
                            ("shmpipe_queue_messages_in_total", "messages_in"),
                            ("shmpipe_queue_messages_out_total", "messages_out"),
                            ("shmpipe_queue_bytes_in_total", "bytes_in"),
                            ("shmpipe_queue_bytes_out_total", "bytes_out"),
                            ("shmpipe_queue_lost_messages_total", "lost"),
                            ("shmpipe_queue_abandoned_messages_total", "abandoned"),
                            ("shmpipe_object_sleepers", "sleepers")):
            live = sum(1 for e in o["endpoints"] if e["alive"] and e["state"] == "open")
            expect(metric, name, o[key], bound=live if key in moving else None)
        # JSON rounds fill to 0.1 %; the scrape has the ratio.
        fill = samples.get(("shmpipe_queue_fill_ratio", name, ()))
        if fill is None:
            problems.append(f"{name}: no sample shmpipe_queue_fill_ratio")
        elif abs(fill[0] * 100.0 - o["fill_percent"]) > 0.051:
            problems.append(f"{name}: fill ratio {fill[0]} but JSON fill_percent {o['fill_percent']}")
        for state in ("open", "closed", "broken", "stale", "corrupt", "unreadable"):
            expect("shmpipe_object_state", name, 1 if o["state"] == state else 0, (("state", state),))
        for role in ("producer", "consumer"):
            eps = [e for e in o["endpoints"] if e["role"] == role and e["state"] != "closed"]
            dead = sum(1 for e in eps if e["state"] == "dead" or not e["alive"])
            expect("shmpipe_object_endpoints", name, len(eps) - dead, (("role", role), ("status", "alive")))
            expect("shmpipe_object_endpoints", name, dead, (("role", role), ("status", "dead")))
        checked += 1

    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok: {checked} queue(s), {len(families)} families parsed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
