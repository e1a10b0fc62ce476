// Python:
//   def f(conn): conn.send([42, None, "hello"]); conn.close()
//   parent_conn, child_conn = Pipe()
//   p = Process(target=f, args=(child_conn,)); p.start(); print(parent_conn.recv()); p.join()
#include <shmpipe/pipe.hpp>
#include <shmpipe/process.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

using Message = std::tuple<int, std::optional<int>, std::string>;

int main() {
    auto [parent_conn, child_conn] = shmpipe::Pipe::create();
    shmpipe::Process p([conn = std::move(child_conn)]() mutable {
        conn.send(Message{42, std::nullopt, "hello"});
        conn.close();
    });
    p.start();
    auto [number, nothing, text] = parent_conn.recv<Message>();
    std::printf("[%d, %s, '%s']\n", number, nothing ? "?" : "None", text.c_str());
    p.join();
}
