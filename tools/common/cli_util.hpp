// Helpers both tools share: the error convention of STYLE.md ("<tool>: error: ...", exit 0
// on success, 1 on a runtime failure, 2 on a usage error) around a CLI11 program.
#pragma once

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <stdexcept>
#include <string_view>

namespace shmpipe::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// A bad argument value found after parsing (a subcommand's own checks): exit 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline void print_error(std::string_view tool, std::string_view message) {
    std::cerr << tool << ": error: " << message << std::endl;
}

inline void print_warning(std::string_view tool, std::string_view message) {
    std::cerr << tool << ": warning: " << message << std::endl;
}

inline int usage_error(std::string_view tool, std::string_view message) {
    print_error(tool, message);
    std::cerr << "Run with --help for more information." << std::endl;
    return kExitUsage;
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
        return usage_error(tool, e.what());
    }
    return -1;
}

// Runs body(), turning exceptions into the tool's error line: UsageError exits 2, anything
// else 1.
template <class Body>
int run_guarded(std::string_view tool, Body&& body) {
    try {
        return body();
    } catch (const UsageError& e) {
        return usage_error(tool, e.what());
    } catch (const std::exception& e) {
        print_error(tool, e.what());
        return kExitFailure;
    }
}

}  // namespace shmpipe::cli
