"""A Python script as a native pipeline-launch stage: the queues the launcher made for it."""
import os

from ._queue import Queue


def _env_list(var):
    return [n for n in os.environ.get(var, "").split(",") if n]


def stage_inputs(**open_args):
    """The stage's input queues ($SHMPIPE_INPUTS, in spec order), opened with open_args
    (e.g. dtype='<Q' to read what a C++ Producer<std::uint64_t> writes)."""
    return [Queue.open(n, **open_args) for n in _env_list("SHMPIPE_INPUTS")]


def stage_outputs(**open_args):
    """The stage's output queues ($SHMPIPE_OUTPUTS, in spec order). Close them (or let the
    process exit) to end their streams."""
    return [Queue.open(n, **open_args) for n in _env_list("SHMPIPE_OUTPUTS")]


def stage_queue(logical_name, **open_args):
    """The queue the spec calls `logical_name` ($SHMPIPE_QUEUE_<NAME>)."""
    var = "SHMPIPE_QUEUE_" + "".join(c.upper() if c.isalnum() else "_" for c in logical_name)
    try:
        return Queue.open(os.environ[var], **open_args)
    except KeyError:
        raise LookupError(f"no queue {logical_name!r} in this stage's environment ({var} is not set; "
                          "is the script run by pipeline-launch?)") from None
