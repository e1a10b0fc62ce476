#include <shmpipe/error.hpp>

#include <cstring>

namespace shmpipe {
namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "shmpipe"; }
    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
            case errc::invalid_name: return "invalid name";
            case errc::not_found: return "no such object";
            case errc::already_exists: return "object already exists";
            case errc::permission_denied: return "permission denied";
            case errc::corrupt: return "corrupt segment";
            case errc::version_mismatch: return "layout version mismatch";
            case errc::wrong_kind: return "wrong object kind";
            case errc::type_mismatch: return "element type mismatch";
            case errc::too_many_endpoints: return "too many endpoints";
            case errc::message_too_large: return "message too large";
            case errc::producer_died: return "producer died";
            case errc::consumer_died: return "consumer died";
            case errc::closed: return "closed";
            case errc::broken: return "broken";
            case errc::timeout: return "timed out";
            case errc::owner_died: return "owner died";
            case errc::not_owner: return "not the owner";
            case errc::overflow: return "count overflow";
            case errc::invalid_argument: return "invalid argument";
            case errc::worker_died: return "worker died";
            case errc::cancelled: return "cancelled";
            case errc::remote_error: return "remote error";
            case errc::spawn_failed: return "cannot start program";
            case errc::invalid_state: return "invalid state";
            case errc::spec_error: return "invalid pipeline spec";
            case errc::no_space: return "not enough shared memory";
        }
        return "unknown shmpipe error";
    }
    std::error_condition default_error_condition(int value) const noexcept override {
        switch (static_cast<errc>(value)) {
            case errc::not_found: return std::errc::no_such_file_or_directory;
            case errc::already_exists: return std::errc::file_exists;
            case errc::permission_denied: return std::errc::permission_denied;
            case errc::timeout: return std::errc::timed_out;
            case errc::message_too_large: return std::errc::message_size;
            case errc::invalid_argument: return std::errc::invalid_argument;
            case errc::no_space: return std::errc::no_space_on_device;
            default: return {value, *this};
        }
    }
};

}  // namespace

const std::error_category& category() noexcept {
    static const Category instance;
    return instance;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

// std::system_error would append ": <code message>"; our messages already say everything.
Error::Error(std::error_code ec, const std::string& message)
    : std::system_error(ec, message), message_(std::make_shared<const std::string>(message)) {}
Error::Error(errc e, const std::string& message) : Error(make_error_code(e), message) {}

Error Error::from_errno(int err, const std::string& message) {
    return Error(std::error_code(err, std::generic_category()), message + ": " + std::strerror(err));
}

RemoteError::RemoteError(std::string type_name, std::string message)
    : Error(errc::remote_error, type_name + ": " + message),
      type_name_(std::move(type_name)),
      remote_message_(std::move(message)) {}

}  // namespace shmpipe
