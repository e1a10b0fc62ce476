// Helpers both tools share: the error convention of STYLE.md ("<tool>: error: ...", exit 0
// on success, 1 on a runtime failure, 2 on a usage error) around a CLI11 program.
#pragma once

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <string_view>

namespace shmpipe::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

inline void print_error(std::string_view tool, std::string_view message) {
    std::cerr << tool << ": error: " << message << std::endl;
}

// Parses argv with `app`; returns -1 when the program should go on, else the exit code
// (--help: 0 after printing; a usage error: 2 after printing it and a hint).
inline int parse(CLI::App& app, std::string_view tool, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(tool, e.what());
        std::cerr << "Run with --help for more information." << std::endl;
        return kExitUsage;
    }
    return -1;
}

// Runs body(), turning exceptions into the tool's error line and exit 1.
template <class Body>
int run_guarded(std::string_view tool, Body&& body) {
    try {
        return body();
    } catch (const std::exception& e) {
        print_error(tool, e.what());
        return kExitFailure;
    }
}

}  // namespace shmpipe::cli
