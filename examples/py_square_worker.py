#!/usr/bin/env python3
"""A Python worker stage of examples/mixed_pipeline.toml: squares the numbers a C++ source
writes (Producer<std::uint64_t>, so dtype '<Q') and passes them to a C++ collector.
pipeline-launch starts 4 replicas; each number goes to exactly one of them."""
import shmpipe

tasks, = shmpipe.stage_inputs(dtype="<Q")
results, = shmpipe.stage_outputs(dtype="<Q")
for x in tasks:  # until the source closes and the queue is drained
    results.put(x * x)
results.close()
