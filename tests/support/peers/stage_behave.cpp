// A pipeline stage with scripted behaviour, for pipeline-launch tests.
//   stage_behave exit CODE [DELAY_MS]      sleep, then exit CODE
//   stage_behave signal SIG [DELAY_MS]     sleep, then kill itself with SIG
//   stage_behave pidfile FILE              append "<pid>\n" to FILE, then sleep until signalled
//   stage_behave ignore-term FILE          like pidfile, but SIGTERM is ignored
//   stage_behave flaky MARKER COUNT        first run (no MARKER): create it, exit 3;
//                                          later runs: print 1..COUNT, one per line, exit 0
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

void append_pid(const char* file) {
    const int fd = ::open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) std::exit(20);
    const std::string line = std::to_string(::getpid()) + "\n";
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::exit(21);
    ::close(fd);
}

[[noreturn]] void sleep_forever() {
    while (true) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: stage_behave MODE ARG [ARG]\n");
        return 2;
    }
    const std::string mode = argv[1];
    const int delay = argc >= 4 ? std::atoi(argv[3]) : 0;
    if (mode == "exit") {
        ::usleep(static_cast<useconds_t>(delay) * 1000u);
        std::fprintf(stderr, "stage_behave: exiting with %s\n", argv[2]);
        return std::atoi(argv[2]);
    }
    if (mode == "signal") {
        ::usleep(static_cast<useconds_t>(delay) * 1000u);
        ::raise(std::atoi(argv[2]));
        sleep_forever();
    }
    if (mode == "pidfile" || mode == "ignore-term") {
        if (mode == "ignore-term") std::signal(SIGTERM, SIG_IGN);
        append_pid(argv[2]);
        sleep_forever();
    }
    if (mode == "flaky") {
        if (::access(argv[2], F_OK) != 0) {
            const int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd >= 0) ::close(fd);
            std::fprintf(stderr, "stage_behave: failing on purpose (first run)\n");
            return 3;
        }
        const int count = argc >= 4 ? std::atoi(argv[3]) : 10;
        for (int i = 1; i <= count; ++i) std::printf("%d\n", i);
        return 0;
    }
    std::fprintf(stderr, "stage_behave: unknown mode %s\n", mode.c_str());
    return 2;
}
