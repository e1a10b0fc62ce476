// shmpipe errors: one exception type at the API edge, one error category for our own cases.
//
// shmpipe::Error derives from std::system_error. Its code is either errno-based
// (std::generic_category, e.g. EACCES) or from shmpipe's own category (shmpipe::errc).
// Its message names the operation, the object and a hint, e.g.
//   open queue "frames": shared memory "shmpipe.frames" does not exist (is the creator running?)
#pragma once

#include <memory>
#include <string>
#include <system_error>

namespace shmpipe {

enum class errc {
    invalid_name = 1,      // a name outside [A-Za-z0-9._-]{1,200}
    not_found,             // no such object
    already_exists,        // create() of a name that is taken
    permission_denied,     // the segment's mode forbids us
    corrupt,               // a segment that fails validation
    version_mismatch,      // a segment of another layout version
    wrong_kind,            // e.g. opening a semaphore as a queue
    type_mismatch,         // element type or size differs from the creator's
    too_many_endpoints,    // more producers/consumers than the object was made for
    message_too_large,     // larger than the object can ever hold
    producer_died,         // a producer died without closing
    consumer_died,         // every consumer died while a producer waits
    closed,                // the object or the peer was closed
    broken,                // marked broken (e.g. by the launcher on a failure), or a barrier broke
    timeout,               // a timed operation gave up
    owner_died,            // a lock's owner died (reported, then recovered)
    not_owner,             // unlock by a process or thread that does not hold the lock
    overflow,              // a count that would overflow
    invalid_argument,      // a bad option or argument
    worker_died,           // a pool worker died holding the task
    cancelled,             // a future was cancelled
    remote_error,          // an exception raised in another process
    spawn_failed,          // a program could not be started
    invalid_state,         // e.g. submit after close, join before close
    spec_error,            // a malformed pipeline spec
    no_space,              // /dev/shm cannot hold the object (reserved at creation, never SIGBUS later)
};

const std::error_category& category() noexcept;
std::error_code make_error_code(errc e) noexcept;

// The exception thrown by every shmpipe API that can fail. what() is the full sentence.
class Error : public std::system_error {
public:
    Error(std::error_code ec, const std::string& message);
    Error(errc e, const std::string& message);
    // errno-based: `message: strerror(err)`.
    static Error from_errno(int err, const std::string& message);
    // The message exactly as given (std::system_error would append the code's text).
    const char* what() const noexcept override { return message_->c_str(); }

private:
    std::shared_ptr<const std::string> message_;  // shared: copying an exception cannot throw
};

// An exception raised in another process (a pool worker), carried back to the caller.
class RemoteError : public Error {
public:
    RemoteError(std::string type_name, std::string message);
    const std::string& type_name() const noexcept { return type_name_; }
    const std::string& remote_message() const noexcept { return remote_message_; }

private:
    std::string type_name_;
    std::string remote_message_;
};

}  // namespace shmpipe

template <>
struct std::is_error_code_enum<shmpipe::errc> : std::true_type {};
