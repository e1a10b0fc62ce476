#!/bin/sh
# Runs after every other test (CTest fixture cleanup). Fails, naming what it found, when a
# test left a shared-memory object of the test prefix or a peer process behind.
peer_dir="$1"
status=0
left=$(ls /dev/shm 2>/dev/null | grep '^shmpipe\.t-' || true)
if [ -n "$left" ]; then
  echo "leaked shared-memory objects in /dev/shm:"; echo "$left"
  status=1
fi
if [ -n "$peer_dir" ]; then
  procs=$(ps -eo pid=,stat=,args= | grep -F "$peer_dir/" | grep -v grep || true)
  if [ -n "$procs" ]; then
    echo "peer processes still running or not reaped:"; echo "$procs"
    status=1
  fi
fi
[ $status -eq 0 ] && echo "no leaked objects, no leftover peers"
exit $status
