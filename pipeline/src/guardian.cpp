// The guardian process shared by Graph and Pool. See detail/guardian.hpp.
#include <shmpipe/detail/guardian.hpp>

#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/process.hpp>

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <unistd.h>
#include <utility>

namespace shmpipe::detail {

Guardian::Guardian() noexcept = default;

Guardian::Guardian(std::string label, std::vector<std::string> objects) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw Error::from_errno(errno, label + ": guardian pipe");
    const int rfd = fds[0], wfd = fds[1];
    ProcessOptions po;
    po.name = std::move(label);
    po.in = Redirect::null();
    po.out = Redirect::null();
    po.err = Redirect::null();
    po.close_fds = true;  // holds nothing of the owner's but the read end
    po.keep_fds = {rfd};
    po.parent_death_signal = 0;  // it must outlive the owner
    po.stop_grace = std::chrono::milliseconds(2000);
    po.daemon = true;  // release() joins or stops it; destroying the handle never waits on it
    proc_ = std::make_unique<Process>(
        [rfd, names = std::move(objects)] {
            ::signal(SIGINT, SIG_IGN);
            ::signal(SIGTERM, SIG_IGN);
            char c;
            bool released = false;  // a byte before EOF: the owner let us go (release())
            while (true) {
                const ssize_t n = ::read(rfd, &c, 1);
                if (n == 1) released = true;
                if (n == 0 || (n < 0 && errno != EINTR)) break;
            }
            if (released) return;
            for (const auto& n : names) shmpipe::remove(n);
        },
        std::move(po));
    try {
        proc_->start();
    } catch (...) {
        ::close(rfd);
        ::close(wfd);
        proc_.reset();
        throw;
    }
    ::close(rfd);
    fd_ = wfd;
}

Guardian::Guardian(Guardian&& other) noexcept
    : proc_(std::move(other.proc_)), fd_(std::exchange(other.fd_, -1)) {}

Guardian& Guardian::operator=(Guardian&& other) noexcept {
    if (this != &other) {
        release();
        proc_ = std::move(other.proc_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

Guardian::~Guardian() { release(); }

void Guardian::release() noexcept {
    if (fd_ >= 0) {
        const char released = 'r';
        while (::write(fd_, &released, 1) < 0 && errno == EINTR) {
        }
        ::close(fd_);
        fd_ = -1;
    }
    if (proc_) {
        bool ended = false;
        try {
            ended = proc_->join_for(std::chrono::milliseconds(2000));
        } catch (...) {
        }
        if (!ended) (void)proc_->stop(std::chrono::milliseconds(0));
        proc_.reset();
    }
}

}  // namespace shmpipe::detail
