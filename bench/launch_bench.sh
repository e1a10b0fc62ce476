#!/bin/sh
# Runs the pipeline-launch benchmark from a build tree: bench/launch_bench.sh [BUILD_DIR] [args...]
# (args: lines, grep replicas, pool messages, pool workers; see bench/launch_bench.cpp).
build="${1:-build}"
[ $# -gt 0 ] && shift
exec "$build/bin/launch_bench" "$@"
