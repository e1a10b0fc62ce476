// Python:
//   def reader(q, conn):
//       n = 0
//       while True:                      # never ends by itself
//           q.get(); n += 1
//           if n == 100: conn.send(n)
//   def writer(q): for i in range(100): q.put(f"message {i}")
//   reader_p.start(); writer_p.start(); writer_p.join()
//   print("reader got", parent.recv()); reader_p.terminate(); reader_p.join()
#include <shmpipe/pipe.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <csignal>
#include <cstdio>
#include <string>

#include "seed_name.hpp"

int main() {
    const std::string name = seed_name("queue");
    auto q = shmpipe::Queue::create(name);
    auto [parent, child] = shmpipe::Pipe::create();

    shmpipe::Process reader([name, conn = std::move(child)]() mutable {
        shmpipe::Consumer<std::string> rx(name);
        int n = 0;
        while (true) {
            rx.pop();
            if (++n == 100) conn.send(n);
        }
    });
    shmpipe::Process writer([name] {
        shmpipe::Producer<std::string> tx(name);
        for (int i = 0; i < 100; ++i) tx.push("message " + std::to_string(i));
    });
    reader.start();
    writer.start();
    writer.join();
    std::printf("reader got %d messages\n", parent.recv<int>());
    reader.terminate();
    std::printf("reader exit code %d (terminated: -SIGTERM)\n", reader.join());
}
