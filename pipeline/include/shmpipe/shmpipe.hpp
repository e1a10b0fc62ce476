// The whole public API of shmpipe in one include: queues, pipes, synchronisation objects,
// inspection (shmpipe::ipc) and processes, pools, futures, graphs and specs
// (shmpipe::pipeline). Optional adapters, such as <shmpipe/asio.hpp>, are included on their
// own. Link shmpipe::pipeline (which brings shmpipe::ipc).
#pragma once

#include <shmpipe/version.hpp>

#include <shmpipe/barrier.hpp>
#include <shmpipe/codec.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/inspect.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <shmpipe/future.hpp>
#include <shmpipe/graph.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/promise.hpp>
#include <shmpipe/spec.hpp>
#include <shmpipe/thread_pool.hpp>
#include <shmpipe/timer.hpp>
