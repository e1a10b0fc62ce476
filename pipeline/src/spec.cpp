// Pipeline spec: TOML reading (toml++), validation and placeholder expansion.
#include <shmpipe/spec.hpp>
#include <shmpipe/spec_graph.hpp>

#include <shmpipe/detail/exit_text.hpp>
#include <shmpipe/detail/sys_util.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <climits>
#include <fcntl.h>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace shmpipe {

std::vector<std::string> StageSpec::reads() const {
    std::vector<std::string> r = inputs;
    if (!stdin_queue.empty()) r.push_back(stdin_queue);
    return r;
}

std::vector<std::string> StageSpec::writes() const {
    std::vector<std::string> w = outputs;
    if (!stdout_queue.empty() && stdout_queue != kInheritStdout) w.push_back(stdout_queue);
    return w;
}

const QueueSpec* PipelineSpec::find_queue(std::string_view n) const {
    for (const auto& q : queues) {
        if (q.name == n) return &q;
    }
    return nullptr;
}

const StageSpec* PipelineSpec::find_stage(std::string_view n) const {
    for (const auto& s : stages) {
        if (s.name == n) return &s;
    }
    return nullptr;
}

const HostSpec* PipelineSpec::find_host(std::string_view n) const {
    for (const auto& h : hosts) {
        if (h.name == n) return &h;
    }
    return nullptr;
}

namespace {

[[noreturn]] void fail(std::string_view source, int line, const std::string& what) {
    std::string msg(source.empty() ? "<spec>" : source);
    if (line > 0) msg += ":" + std::to_string(line);
    throw Error(errc::spec_error, msg + ": " + what);
}

// Names echoed in errors are capped: a spec is untrusted input, and a 1 MiB name would
// make a 1 MiB error line.
constexpr std::size_t kEchoedNameMax = 64;

std::string quoted(std::string_view s) {
    if (s.size() <= kEchoedNameMax) return "\"" + std::string(s) + "\"";
    return "\"" + std::string(s.substr(0, kEchoedNameMax)) + "...\" (" + std::to_string(s.size()) + " bytes)";
}

// validate_name, but a name too long to be valid is refused here with its echo capped
// (validate_name quotes the whole name).
void check_name(std::string_view name, std::string_view what) {
    if (name.size() > kMaxNameLength) {
        throw Error(errc::invalid_name, std::string(what) + " name " + quoted(name) + " is longer than " +
                                            std::to_string(kMaxNameLength) + " characters");
    }
    validate_name(name, what);
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
    std::string out;
    for (const auto& s : v) {
        if (!out.empty()) out += sep;
        out += s;
    }
    return out;
}

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }

// Sizes are capped at 1 TiB (integers and strings alike): more is a typo, and no queue that
// large can be created.
constexpr std::uint64_t kMaxSize = std::uint64_t{1} << 40;

// Durations are capped at about 31 years: anything longer is a typo, and converting a
// larger double to an integer would be undefined.
constexpr double kMaxDurationMs = 1e12;

template <class Shown>
std::chrono::milliseconds checked_milliseconds(double ms, const Shown& shown) {
    if (!std::isfinite(ms) || ms < 0 || ms > kMaxDurationMs) {
        std::ostringstream o;
        o << "duration " << shown << " is out of range (at most " << kMaxDurationMs / 1000.0 << " s)";
        throw Error(errc::spec_error, o.str());
    }
    return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

// Limits on untrusted spec text, checked before toml++ sees it.
constexpr std::uint64_t kMaxSpecBytes = std::uint64_t{16} << 20;
// toml++ nests a table per part of a dotted key and recurses over them (a 40 000-part key
// overflowed the stack); no real spec comes near this.
constexpr std::size_t kMaxKeyParts = 64;

// Refuses a dotted key (or [table.header]) of more than kMaxKeyParts parts. A lexical scan:
// outside strings and comments, a chain is parts (bare-key runs or quoted strings) joined by
// '.', whitespace allowed around the dots. Values such as 1.5 or a date count two or three
// parts, far below the limit. Unterminated strings end the scan (toml++ reports them).
void check_key_parts(std::string_view t, std::string_view source) {
    auto bare = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
    int line = 1;
    std::size_t parts = 0;
    bool after_dot = false, in_bare = false;
    auto add_part = [&] {
        parts = after_dot ? parts + 1 : 1;
        after_dot = false;
        if (parts > kMaxKeyParts) {
            fail(source, line, "a dotted key has more than " + std::to_string(kMaxKeyParts) + " parts");
        }
    };
    std::size_t i = 0;
    while (i < t.size()) {
        const char c = t[i];
        if (c == '"' || c == '\'') {
            in_bare = false;
            const bool triple = t.substr(i, 3) == std::string(3, c);
            std::size_t j = i + (triple ? 3 : 1);
            bool closed = false;
            while (j < t.size()) {
                if (t[j] == '\\' && c == '"') {
                    j += 2;
                    continue;
                }
                if (t[j] == '\n') {
                    if (!triple) break;  // toml++ reports the unterminated string
                    ++line;
                }
                if (t[j] == c && (!triple || t.substr(j, 3) == std::string(3, c))) {
                    j += triple ? 3 : 1;
                    closed = true;
                    break;
                }
                ++j;
            }
            if (!closed) return;
            add_part();
            i = j;
            continue;
        }
        if (c == '#') {
            while (i < t.size() && t[i] != '\n') ++i;
            continue;
        }
        if (bare(c)) {
            if (!in_bare) add_part();
            in_bare = true;
        } else if (c == '.') {
            in_bare = false;
            after_dot = parts > 0;
        } else if (c == ' ' || c == '\t') {
            in_bare = false;
        } else {
            if (c == '\n') ++line;
            in_bare = false;
            after_dot = false;
            parts = 0;
        }
        ++i;
    }
}

// Reads one table, checking every key against the known ones.
class TableReader {
public:
    TableReader(const toml::table& t, std::string_view source, std::string what,
                std::initializer_list<std::string_view> known)
        : t_(t), source_(source), what_(std::move(what)) {
        for (auto&& [k, v] : t) {
            (void)v;
            if (std::find(known.begin(), known.end(), k.str()) == known.end()) {
                std::vector<std::string> names(known.begin(), known.end());
                fail(source_, static_cast<int>(k.source().begin.line),
                     what_ + ": unknown key " + quoted(k.str()) + " (known keys: " + join(names, ", ") + ")");
            }
        }
    }

    int line() const { return line_of(t_); }
    const toml::node* get(std::string_view key) const { return t_.get(key); }
    int line(std::string_view key) const {
        const toml::node* n = get(key);
        return n != nullptr ? line_of(*n) : line();
    }

    std::string string(std::string_view key, std::string def = {}) const {
        const toml::node* n = get(key);
        if (n == nullptr) return def;
        if (!n->is_string()) fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be a string");
        return std::string(n->as_string()->get());
    }
    bool boolean(std::string_view key, bool def) const {
        const toml::node* n = get(key);
        if (n == nullptr) return def;
        if (!n->is_boolean()) fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be true or false");
        return n->as_boolean()->get();
    }
    std::int64_t integer(std::string_view key, std::int64_t def, std::int64_t lo, std::int64_t hi) const {
        const toml::node* n = get(key);
        if (n == nullptr) return def;
        if (!n->is_integer()) fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be an integer");
        const std::int64_t v = n->as_integer()->get();
        if (v < lo || v > hi) {
            fail(source_, line_of(*n), what_ + ": " + std::string(key) + " = " + std::to_string(v) +
                                           " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return v;
    }
    std::vector<std::string> strings(std::string_view key) const {
        const toml::node* n = get(key);
        std::vector<std::string> out;
        if (n == nullptr) return out;
        const toml::array* a = n->as_array();
        if (a == nullptr) fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be an array of strings");
        for (const toml::node& e : *a) {
            if (!e.is_string()) {
                fail(source_, line_of(e), what_ + ": " + std::string(key) + " must be an array of strings");
            }
            out.emplace_back(e.as_string()->get());
        }
        return out;
    }
    std::size_t size(std::string_view key, std::size_t def) const {
        const toml::node* n = get(key);
        if (n == nullptr) return def;
        try {
            if (n->is_integer() && n->as_integer()->get() > 0) {
                const std::int64_t v = n->as_integer()->get();
                if (static_cast<std::uint64_t>(v) > kMaxSize) {
                    throw Error(errc::spec_error, std::to_string(v) + " bytes is too large (at most 1 TiB)");
                }
                return static_cast<std::size_t>(v);
            }
            if (n->is_string()) return parse_size(n->as_string()->get());
        } catch (const Error& e) {
            fail(source_, line_of(*n), what_ + ": " + std::string(key) + ": " + e.what());
        }
        fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be a positive size like 65536 or \"4MiB\"");
    }
    std::chrono::milliseconds duration(std::string_view key, std::chrono::milliseconds def) const {
        const toml::node* n = get(key);
        if (n == nullptr) return def;
        try {
            if (n->is_integer() && n->as_integer()->get() >= 0) {
                return checked_milliseconds(static_cast<double>(n->as_integer()->get()) * 1000.0, n->as_integer()->get());
            }
            if (n->is_floating_point() && n->as_floating_point()->get() >= 0) {
                return checked_milliseconds(n->as_floating_point()->get() * 1000.0, n->as_floating_point()->get());
            }
            if (n->is_string()) return parse_duration(n->as_string()->get());
        } catch (const Error& e) {
            fail(source_, line_of(*n), what_ + ": " + std::string(key) + ": " + e.what());
        }
        fail(source_, line_of(*n), what_ + ": " + std::string(key) + " must be a duration like 5, 2.5 or \"250ms\"");
    }

private:
    const toml::table& t_;
    std::string_view source_;
    std::string what_;
};

StreamFormat parse_format(const TableReader& r, std::string_view key, std::string_view source, const std::string& what) {
    const std::string v = r.string(key, "lines");
    if (v == "lines") return StreamFormat::lines;
    if (v == "records") return StreamFormat::records;
    fail(source, r.line(key), what + ": " + std::string(key) + " must be \"lines\" or \"records\", not " + quoted(v));
}

std::string join_path(const std::string& dir, const std::string& name) {
    if (dir.empty()) return name;
    return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string absolute(const std::string& path) {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) != nullptr) return buf;
    return path;
}

// Returns the resolved path, or "" with `why` set.
std::string resolve_program(const std::string& prog, const PipelineSpec& spec, const SpecOptions& options,
                            std::string& why) {
    if (prog.find('/') != std::string::npos) {
        const std::string path = prog.front() == '/' ? prog : join_path(spec.base_dir.empty() ? "." : spec.base_dir, prog);
        struct stat st{};
        if (::stat(path.c_str(), &st) != 0) {
            why = "does not exist";
        } else if (!S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0 || ::access(path.c_str(), X_OK) != 0) {
            why = "is not an executable file";
        } else {
            return absolute(path);
        }
        return {};
    }
    std::vector<std::string> dirs = options.bin_dirs;
    if (const char* p = std::getenv("PATH"); p != nullptr) {
        for (auto& d : detail::split_path(p)) dirs.push_back(std::move(d));
    }
    if (!options.self_dir.empty()) dirs.push_back(options.self_dir);
    if (std::string path = detail::find_executable(prog, dirs); !path.empty()) return absolute(path);
    why = "was not found on PATH";
    if (!options.bin_dirs.empty()) why += ", in --bin-dir";
    if (!options.self_dir.empty()) why += " or beside the launcher (" + options.self_dir + ")";
    return {};
}

void check_placeholders(const std::string& text, const StageSpec& st, const PipelineSpec& spec, int line) {
    std::map<std::string, std::string> names;
    for (const auto& q : spec.queues) names[q.name] = q.name;
    try {
        (void)expand_placeholders(text, st, 0, names, spec.name, "run");
    } catch (const Error& e) {
        fail(spec.source, line, "stage " + quoted(st.name) + ": " + e.what());
    }
}

}  // namespace

std::size_t parse_size(std::string_view text) {
    auto too_large = [&] { return Error(errc::spec_error, "size " + quoted(text) + " is too large (at most 1 TiB)"); };
    std::size_t i = 0;
    std::uint64_t v = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');  // v <= 2^40 before: no wrap
        if (v > kMaxSize) throw too_large();
        ++i;
    }
    if (i == 0) throw Error(errc::spec_error, "size " + quoted(text) + " does not start with a number");
    std::string unit(text.substr(i));
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::uint64_t mult = 1;
    if (unit.empty() || unit == "b") {
        mult = 1;
    } else if (unit == "k" || unit == "kb" || unit == "kib") {
        mult = 1024;
    } else if (unit == "m" || unit == "mb" || unit == "mib") {
        mult = 1024 * 1024;
    } else if (unit == "g" || unit == "gb" || unit == "gib") {
        mult = std::uint64_t{1} << 30;
    } else {
        throw Error(errc::spec_error, "size " + quoted(text) + " has an unknown unit (use B, KiB, MiB or GiB)");
    }
    if (v == 0) throw Error(errc::spec_error, "size " + quoted(text) + " must be positive");
    if (v > kMaxSize / mult) throw too_large();  // checked before multiplying
    return static_cast<std::size_t>(v * mult);
}

std::chrono::milliseconds parse_duration(std::string_view text) {
    char* end = nullptr;
    const std::string s(text);
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str() || errno != 0 || !(v >= 0)) {
        throw Error(errc::spec_error, "duration " + quoted(text) + " must be a non-negative number with a unit (ms, s, m)");
    }
    std::string unit(end);
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    double ms = 0;
    if (unit.empty() || unit == "s") {
        ms = v * 1000.0;
    } else if (unit == "ms") {
        ms = v;
    } else if (unit == "m" || unit == "min") {
        ms = v * 60000.0;
    } else {
        throw Error(errc::spec_error, "duration " + quoted(text) + " has an unknown unit (use ms, s or m)");
    }
    return checked_milliseconds(ms, quoted(text));
}

namespace {
struct SignalName {
    const char* name;
    int sig;
};
constexpr SignalName kSignals[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                                   {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"ABRT", SIGABRT},
                                   {"SEGV", SIGSEGV}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"BUS", SIGBUS},
                                   {"FPE", SIGFPE},   {"ILL", SIGILL}};
}  // namespace

int parse_signal(std::string_view text) {
    std::string s(text);
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (s.rfind("SIG", 0) == 0) s.erase(0, 3);
    for (const auto& e : kSignals) {
        if (s == e.name) return e.sig;
    }
    if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        const int v = std::atoi(s.c_str());
        if (v > 0 && v < 65) return v;
    }
    throw Error(errc::spec_error, "unknown signal " + quoted(text) + " (use a name like \"SIGTERM\" or a number)");
}

std::string signal_name(int sig) { return detail::signal_name(sig); }

std::string queue_env_name(std::string_view queue) {
    std::string out = "SHMPIPE_QUEUE_";
    for (char c : queue) {
        const auto u = static_cast<unsigned char>(c);
        out += std::isalnum(u) ? static_cast<char>(std::toupper(u)) : '_';
    }
    return out;
}

std::string expand_placeholders(std::string_view text, const StageSpec& stage, unsigned replica,
                                const std::map<std::string, std::string>& queue_names, std::string_view pipeline,
                                std::string_view run) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
            out += '{';
            ++i;
        } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
            out += '}';
            ++i;
        } else if (c == '{') {
            const std::size_t close = text.find('}', i);
            if (close == std::string_view::npos) {
                throw Error(errc::spec_error, "unterminated placeholder in " + quoted(text) + " (write {{ for a literal brace)");
            }
            const std::string_view key = text.substr(i + 1, close - i - 1);
            if (key == "stage") {
                out += stage.name;
            } else if (key == "replica") {
                out += std::to_string(replica);
            } else if (key == "replicas") {
                out += std::to_string(stage.replicas);
            } else if (key == "pipeline") {
                out += pipeline;
            } else if (key == "run") {
                out += run;
            } else if (key.rfind("queue.", 0) == 0) {
                const auto it = queue_names.find(std::string(key.substr(6)));
                if (it == queue_names.end()) {
                    throw Error(errc::spec_error, "placeholder {" + std::string(key) + "} names no queue of this pipeline");
                }
                out += it->second;
            } else {
                throw Error(errc::spec_error, "unknown placeholder {" + std::string(key) +
                                                  "} (known: {queue.<name>}, {stage}, {replica}, {replicas}, "
                                                  "{pipeline}, {run}; {{ is a literal brace)");
            }
            i = close;
        } else {
            out += c;
        }
    }
    return out;
}

namespace {

// parse_spec's steps: each reads one part of the TOML tree into `spec`.

void read_pipeline_table(const toml::node& p, PipelineSpec& spec) {
    if (!p.is_table()) fail(spec.source, line_of(p), "[pipeline] must be a table");
    TableReader r(*p.as_table(), spec.source, "[pipeline]",
                  {"name", "failure", "stop_signal", "stop_timeout", "drain_timeout", "on_loss", "heartbeat",
                   "dead_after", "connect_timeout", "curve_secret_file", "curve_public_keys"});
    spec.name = r.string("name", spec.name);
    try {
        check_name(spec.name, "pipeline");
    } catch (const Error& e) {
        fail(spec.source, r.line("name"), std::string("[pipeline]: name: ") + e.what());
    }
    const std::string failure = r.string("failure", "fail-fast");
    if (failure == "fail-fast") {
        spec.failure = FailurePolicy::fail_fast;
    } else if (failure == "keep-going") {
        spec.failure = FailurePolicy::keep_going;
    } else {
        fail(spec.source, r.line("failure"),
             "[pipeline]: failure must be \"fail-fast\" or \"keep-going\", not " + quoted(failure));
    }
    if (const toml::node* sig = r.get("stop_signal")) {
        if (sig->is_integer()) {
            spec.stop_signal = static_cast<int>(r.integer("stop_signal", SIGTERM, 1, 64));
        } else if (sig->is_string()) {
            try {
                spec.stop_signal = parse_signal(sig->as_string()->get());
            } catch (const Error& e) {
                fail(spec.source, line_of(*sig), std::string("[pipeline]: stop_signal: ") + e.what());
            }
        } else {
            fail(spec.source, line_of(*sig), "[pipeline]: stop_signal must be a signal name like \"SIGTERM\" or a number like 15");
        }
    }
    const std::string on_loss = r.string("on_loss", "fail");
    if (on_loss == "fail") {
        spec.on_loss = LossPolicy::fail;
    } else if (on_loss == "warn") {
        spec.on_loss = LossPolicy::warn;
    } else {
        fail(spec.source, r.line("on_loss"), "[pipeline]: on_loss must be \"fail\" or \"warn\", not " + quoted(on_loss));
    }
    spec.stop_timeout = r.duration("stop_timeout", spec.stop_timeout);
    spec.drain_timeout = r.duration("drain_timeout", spec.drain_timeout);
    spec.heartbeat = r.duration("heartbeat", spec.heartbeat);
    spec.dead_after = r.duration("dead_after", spec.dead_after);
    spec.connect_timeout = r.duration("connect_timeout", spec.connect_timeout);
    spec.curve_secret_file = r.string("curve_secret_file");
    if (const toml::node* k = r.get("curve_public_keys")) {
        const toml::table* kt = k->as_table();
        if (kt == nullptr) fail(spec.source, line_of(*k), "[pipeline]: curve_public_keys must be a table host = \"key\"");
        for (auto&& [host, key] : *kt) {
            if (!key.is_string()) {
                fail(spec.source, line_of(key), "[pipeline]: curve_public_keys." + std::string(host.str()) +
                                                    " must be a Z85 public key (a string of 40 characters)");
            }
            spec.curve_public_keys[std::string(host.str())] = std::string(key.as_string()->get());
        }
    }
}

// The [[key]] tables of the root, or a clear error when `key` is not an array of tables.
std::vector<const toml::table*> array_of_tables(const toml::table& root, std::string_view key, const PipelineSpec& spec) {
    std::vector<const toml::table*> out;
    const toml::node* n = root.get(key);
    if (n == nullptr) return out;
    const toml::array* a = n->as_array();
    if (a == nullptr || !a->is_array_of_tables()) {
        fail(spec.source, line_of(*n), "use [[" + std::string(key) + "]] tables for " + std::string(key) + "s");
    }
    for (const toml::node& e : *a) out.push_back(e.as_table());
    return out;
}

void read_queue_table(const toml::table& t, PipelineSpec& spec) {
    TableReader r(t, spec.source, "[[queue]]", {"name", "capacity", "max_message"});
    QueueSpec q;
    q.line = r.line();
    q.declared = true;
    if (r.get("name") == nullptr) fail(spec.source, q.line, "[[queue]]: missing key \"name\"");
    q.name = r.string("name");
    q.line = r.line("name");
    q.capacity = r.size("capacity", q.capacity);
    q.max_message = r.size("max_message", q.max_message);
    if (const QueueSpec* dup = spec.find_queue(q.name)) {
        fail(spec.source, q.line, "duplicate queue name " + quoted(q.name) + " (first declared on line " +
                                      std::to_string(dup->line) + ")");
    }
    spec.queues.push_back(std::move(q));
}

void read_host_table(const toml::table& t, PipelineSpec& spec) {
    TableReader r(t, spec.source, "[[host]]", {"name", "address"});
    HostSpec h;
    h.line = r.line();
    if (r.get("name") == nullptr) fail(spec.source, h.line, "[[host]]: missing key \"name\"");
    if (r.get("address") == nullptr) {
        fail(spec.source, h.line, "[[host]]: missing key \"address\" (where its launcher listens, e.g. \"tcp://10.0.0.1:7400\")");
    }
    h.name = r.string("name");
    h.line = r.line("name");
    h.address = r.string("address");
    if (const HostSpec* dup = spec.find_host(h.name)) {
        fail(spec.source, h.line, "duplicate host name " + quoted(h.name) + " (first declared on line " +
                                      std::to_string(dup->line) + ")");
    }
    spec.hosts.push_back(std::move(h));
}

void read_stage_table(const toml::table& t, PipelineSpec& spec) {
    StageSpec s;
    s.line = line_of(t);
    const toml::node* name_node = t.get("name");
    if (name_node == nullptr || !name_node->is_string()) {
        fail(spec.source, s.line, "[[stage]]: missing key \"name\" (a string)");
    }
    s.name = std::string(name_node->as_string()->get());
    s.line = line_of(*name_node);
    const std::string sw = "stage " + quoted(s.name);
    TableReader rs(t, spec.source, sw, {"name", "cmd", "inputs", "outputs", "stdin", "stdout", "stdin_format",
                                        "stdout_format", "replicas", "restart", "max_restarts", "env", "cwd",
                                        "stop_timeout", "critical", "success_codes", "host"});
    if (const StageSpec* dup = spec.find_stage(s.name)) {
        fail(spec.source, s.line, "duplicate stage name " + quoted(s.name) + " (first declared on line " +
                                      std::to_string(dup->line) + ")");
    }
    if (rs.get("cmd") == nullptr) fail(spec.source, s.line, sw + ": missing key \"cmd\" (an argv array)");
    s.cmd = rs.strings("cmd");
    if (s.cmd.empty() || s.cmd.front().empty()) fail(spec.source, rs.line("cmd"), sw + ": cmd must name a program");
    s.inputs = rs.strings("inputs");
    s.outputs = rs.strings("outputs");
    s.stdin_queue = rs.string("stdin");
    s.stdout_queue = rs.string("stdout");
    s.stdin_format = parse_format(rs, "stdin_format", spec.source, sw);
    s.stdout_format = parse_format(rs, "stdout_format", spec.source, sw);
    s.replicas = static_cast<unsigned>(rs.integer("replicas", 1, 1, 1024));
    const std::string restart = rs.string("restart", "never");
    if (restart == "never") {
        s.restart = RestartPolicy::never;
    } else if (restart == "on-failure") {
        s.restart = RestartPolicy::on_failure;
    } else {
        fail(spec.source, rs.line("restart"), sw + ": restart must be \"never\" or \"on-failure\", not " + quoted(restart));
    }
    s.max_restarts = static_cast<unsigned>(rs.integer("max_restarts", 3, 0, 1000000));
    if (const toml::node* e = rs.get("env")) {
        const toml::table* et = e->as_table();
        if (et == nullptr) fail(spec.source, line_of(*e), sw + ": env must be a table of strings");
        for (auto&& [k, v] : *et) {
            if (!v.is_string()) fail(spec.source, line_of(v), sw + ": env." + std::string(k.str()) + " must be a string");
            s.env[std::string(k.str())] = std::string(v.as_string()->get());
        }
    }
    s.cwd = rs.string("cwd");
    s.stop_timeout = rs.duration("stop_timeout", s.stop_timeout);
    s.critical = rs.boolean("critical", true);
    if (const toml::node* sc = rs.get("success_codes")) {
        const toml::array* a = sc->as_array();
        if (a == nullptr || a->empty()) fail(spec.source, line_of(*sc), sw + ": success_codes must be an array of exit codes");
        s.success_codes.clear();
        for (const toml::node& e : *a) {
            if (!e.is_integer() || e.as_integer()->get() < 0 || e.as_integer()->get() > 255) {
                fail(spec.source, line_of(e), sw + ": success_codes must hold exit codes 0..255");
            }
            s.success_codes.push_back(static_cast<int>(e.as_integer()->get()));
        }
    }
    s.host = rs.string("host");
    spec.stages.push_back(std::move(s));
}

// The text, bounded and parsed by toml++; errors carry the file and line.
toml::table parse_toml(std::string_view toml_text, const std::string& source) {
    if (toml_text.size() > kMaxSpecBytes) {
        fail(source, 0, "the spec is larger than the " + std::to_string(kMaxSpecBytes >> 20) + " MiB a spec may have");
    }
    check_key_parts(toml_text, source);
    try {
        return toml::parse(toml_text, source);
    } catch (const toml::parse_error& e) {
        fail(source, static_cast<int>(e.source().begin.line), std::string(e.description()));
    }
}

}  // namespace

PipelineSpec parse_spec(std::string_view toml_text, std::string_view source, const SpecOptions& options) {
    PipelineSpec spec;
    spec.source = source.empty() ? "<spec>" : std::string(source);
    const toml::table root = parse_toml(toml_text, spec.source);
    TableReader top(root, spec.source, "spec", {"pipeline", "queue", "stage", "host"});
    if (const toml::node* p = root.get("pipeline")) read_pipeline_table(*p, spec);
    for (const toml::table* t : array_of_tables(root, "queue", spec)) read_queue_table(*t, spec);
    for (const toml::table* t : array_of_tables(root, "host", spec)) read_host_table(*t, spec);
    for (const toml::table* t : array_of_tables(root, "stage", spec)) read_stage_table(*t, spec);
    // Directory of the spec file, for relative programs and cwd.
    const auto slash = spec.source.rfind('/');
    spec.base_dir = slash == std::string::npos ? "." : spec.source.substr(0, slash == 0 ? 1 : slash);
    validate_spec(spec, options);
    return spec;
}

PipelineSpec load_spec(const std::string& path, const SpecOptions& options) {
    const std::string what = "read pipeline spec " + quoted(path);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block the open
    if (fd < 0) throw Error::from_errno(errno, what);
    std::string text;
    try {
        struct stat st{};
        if (::fstat(fd, &st) != 0) throw Error::from_errno(errno, what);
        if (!S_ISREG(st.st_mode)) {
            throw Error(errc::spec_error, what + ": not a regular file (a spec is a TOML file, not a device, FIFO or directory)");
        }
        if (static_cast<std::uint64_t>(st.st_size) > kMaxSpecBytes) {
            throw Error(errc::spec_error, what + ": " + std::to_string(st.st_size) + " bytes is larger than the " +
                                              std::to_string(kMaxSpecBytes >> 20) + " MiB a spec may have");
        }
        // Read until EOF, but never past the limit: a file that grows while we read is still bounded.
        char chunk[65536];
        while (true) {
            const ssize_t n = ::read(fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw Error::from_errno(errno, what);
            if (n == 0) break;
            text.append(chunk, static_cast<std::size_t>(n));
            if (text.size() > kMaxSpecBytes) {
                throw Error(errc::spec_error, what + ": larger than the " + std::to_string(kMaxSpecBytes >> 20) +
                                                  " MiB a spec may have");
            }
        }
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    return parse_spec(text, path, options);
}

namespace {

// validate_spec's steps, in order.

void check_names(const PipelineSpec& spec) {
    const std::string& src = spec.source;
    try {
        check_name(spec.name, "pipeline");
    } catch (const Error& e) {
        fail(src, 0, e.what());
    }
    if (spec.stages.empty()) fail(src, 0, "the pipeline has no [[stage]]");
    // Valid object names, no duplicates (specs built in code skip the parser's check).
    std::set<std::string> seen;
    for (const auto& q : spec.queues) {
        try {
            check_name(q.name, "queue");
        } catch (const Error& e) {
            fail(src, q.line, e.what());
        }
        if (!seen.insert(q.name).second) fail(src, q.line, "duplicate queue name " + quoted(q.name));
        if (q.capacity > kMaxSize || q.max_message > kMaxSize) {
            fail(src, q.line, "queue " + quoted(q.name) + ": capacity and max_message must be at most 1 TiB");
        }
        if (q.max_message == 0 || q.capacity < q.max_message) {
            fail(src, q.line, "queue " + quoted(q.name) + ": capacity (" + std::to_string(q.capacity) +
                                  " bytes) must be at least max_message (" + std::to_string(q.max_message) + " bytes)");
        }
    }
    seen.clear();
    for (const auto& s : spec.stages) {
        if (s.name.empty() || s.name.find_first_of(" \t\n|@") != std::string::npos || s.name.size() > kMaxNameLength) {
            fail(src, s.line, "stage name " + quoted(s.name) + " must be 1-" + std::to_string(kMaxNameLength) +
                                  " characters without spaces, '|' or '@'");
        }
        if (!seen.insert(s.name).second) fail(src, s.line, "duplicate stage name " + quoted(s.name));
        if (s.replicas == 0) fail(src, s.line, "stage " + quoted(s.name) + ": replicas must be at least 1");
    }
}

// Queues named by a stage but not declared get the default geometry.
void add_implicit_queues(PipelineSpec& spec) {
    for (const auto& s : spec.stages) {
        std::vector<std::string> all = s.reads();
        for (const auto& w : s.writes()) all.push_back(w);
        for (const auto& n : all) {
            if (spec.find_queue(n) != nullptr) continue;
            try {
                check_name(n, "queue");
            } catch (const Error& e) {
                fail(spec.source, s.line, "stage " + quoted(s.name) + ": " + e.what());
            }
            QueueSpec q;
            q.name = n;
            q.line = s.line;
            spec.queues.push_back(std::move(q));
        }
    }
}

// Each stage: no queue both read and written, no queue twice.
void check_stage_queues(const PipelineSpec& spec) {
    for (const auto& s : spec.stages) {
        const auto r = s.reads();
        const auto w = s.writes();
        std::set<std::string> rs(r.begin(), r.end()), ws(w.begin(), w.end());
        if (rs.size() != r.size()) fail(spec.source, s.line, "stage " + quoted(s.name) + " reads a queue twice (inputs and stdin)");
        if (ws.size() != w.size()) fail(spec.source, s.line, "stage " + quoted(s.name) + " writes a queue twice (outputs and stdout)");
        for (const auto& q : r) {
            if (ws.count(q) != 0) {
                fail(spec.source, s.line, "stage " + quoted(s.name) + " reads queue " + quoted(q) +
                                              " that it also writes (a stage cannot feed itself)");
            }
        }
    }
}

// Every queue has a writer and a reader.
void check_queue_ends(const SpecGraph& graph) {
    const PipelineSpec& spec = graph.spec();
    for (const auto& ends : graph.queues()) {
        const QueueSpec& q = spec.queues[ends.queue];
        if (ends.writers.empty()) {
            fail(spec.source, q.line, "queue " + quoted(q.name) + " is read but nobody writes it" +
                                          (ends.readers.empty() ? " (and nobody reads it)" : "") +
                                          " (add it to a stage's outputs or stdout)");
        }
        if (ends.readers.empty()) {
            fail(spec.source, q.line, "queue " + quoted(q.name) +
                                          " is written but nobody reads it (add it to a stage's inputs or stdin)");
        }
    }
}

void check_cycles(const SpecGraph& graph) {
    const auto cycle = graph.find_cycle();
    if (cycle.empty()) return;
    const PipelineSpec& spec = graph.spec();
    std::string path;
    for (std::size_t a : cycle) path += spec.stages[a].name + " -> ";
    path += spec.stages[cycle.front()].name;
    fail(spec.source, spec.stages[cycle.front()].line,
         "the pipeline has a cycle: " + path + " (end of stream could never reach every stage)");
}

// "tcp://HOST:PORT" -> PORT, or 0 when the address has another form.
unsigned address_port(std::string_view address) {
    if (address.rfind("tcp://", 0) != 0) return 0;
    const auto colon = address.rfind(':');
    if (colon <= 6 || colon + 1 >= address.size()) return 0;
    unsigned port = 0;
    for (char c : address.substr(colon + 1)) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return 0;
        port = port * 10 + static_cast<unsigned>(c - '0');
        if (port > 65535) return 0;
    }
    return port;
}

std::string host_names(const PipelineSpec& spec) {
    std::vector<std::string> names;
    for (const auto& h : spec.hosts) names.push_back(h.name);
    return join(names, ", ");
}

// Hosts: valid names and addresses, every stage on a known host, bridged queues not both
// written and read on one host, room for one port per bridged edge after each address.
void check_placement(const SpecGraph& graph) {
    const PipelineSpec& spec = graph.spec();
    const std::string& src = spec.source;
    if (spec.hosts.empty()) {
        for (const auto& s : spec.stages) {
            if (!s.host.empty()) {
                fail(src, s.line, "stage " + quoted(s.name) + " names host " + quoted(s.host) +
                                      " but the spec declares no [[host]] (add [[host]] tables with name and address)");
            }
        }
        return;
    }
    std::set<std::string> seen;
    for (const auto& h : spec.hosts) {
        if (h.name.empty() || h.name.size() > kEchoedNameMax ||
            h.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos) {
            fail(src, h.line, "host name " + quoted(h.name) + " must be 1-" + std::to_string(kEchoedNameMax) +
                                  " characters of [A-Za-z0-9._-]");
        }
        if (!seen.insert(h.name).second) fail(src, h.line, "duplicate host name " + quoted(h.name));
        if (address_port(h.address) == 0) {
            fail(src, h.line, "host " + quoted(h.name) + ": address " + quoted(h.address) +
                                  " must be \"tcp://IP:PORT\" with a port 1-65535 (e.g. \"tcp://10.0.0.1:7400\")");
        }
    }
    for (const auto& s : spec.stages) {
        if (s.host.empty()) {
            fail(src, s.line, "stage " + quoted(s.name) + " has no host (the spec declares hosts " + host_names(spec) +
                                  "; add host = \"...\")");
        }
        if (spec.find_host(s.host) == nullptr) {
            fail(src, s.line, "stage " + quoted(s.name) + ": unknown host " + quoted(s.host) + " (declared: " +
                                  host_names(spec) + ")");
        }
    }
    const auto crossing = graph.crossing();
    for (const QueueEnds* q : crossing) {
        for (const auto& h : q->writer_hosts) {
            if (q->read_on(h)) {
                fail(src, spec.queues[q->queue].line,
                     "queue " + quoted(spec.queues[q->queue].name) + " crosses hosts but is both written and read on host " +
                         quoted(h) + " (give the local readers their own queue)");
            }
        }
    }
    for (const auto& h : spec.hosts) {
        if (address_port(h.address) + crossing.size() > 65535) {
            fail(src, h.line, "host " + quoted(h.name) + ": port " + std::to_string(address_port(h.address)) +
                                  " leaves no room for the " + std::to_string(crossing.size()) +
                                  " bridged edges on the ports after it");
        }
    }
    for (const auto& [host, key] : spec.curve_public_keys) {
        if (spec.find_host(host) == nullptr) {
            fail(src, 0, "[pipeline]: curve_public_keys names unknown host " + quoted(host) + " (declared: " +
                             host_names(spec) + ")");
        }
        if (key.size() != 40) fail(src, 0, "[pipeline]: curve_public_keys." + host + " must be 40 characters of Z85");
    }
    if (!spec.curve_secret_file.empty()) {
        for (const auto& h : spec.hosts) {
            if (spec.curve_public_keys.count(h.name) == 0) {
                fail(src, h.line, "[pipeline]: curve_secret_file is set but curve_public_keys has no key for host " +
                                      quoted(h.name));
            }
        }
    }
    if (spec.heartbeat.count() <= 0 || spec.dead_after <= spec.heartbeat) {
        fail(src, 0, "[pipeline]: dead_after (" + std::to_string(spec.dead_after.count()) +
                         " ms) must be longer than heartbeat (" + std::to_string(spec.heartbeat.count()) + " ms)");
    }
}

// Placeholders expand, programs exist (fills StageSpec::program).
void check_commands(PipelineSpec& spec, const SpecOptions& options) {
    for (auto& s : spec.stages) {
        for (const auto& arg : s.cmd) check_placeholders(arg, s, spec, s.line);
        for (const auto& [k, v] : s.env) check_placeholders(v, s, spec, s.line);
        check_placeholders(s.cwd, s, spec, s.line);
        if (!options.check_programs || s.is_function) {
            s.program = s.cmd.front();
            continue;
        }
        std::string why;
        s.program = resolve_program(s.cmd.front(), spec, options, why);
        if (s.program.empty()) {
            fail(spec.source, s.line, "stage " + quoted(s.name) + ": program " + quoted(s.cmd.front()) + " " + why);
        }
    }
}

std::string stage_list(const PipelineSpec& spec, const std::vector<std::size_t>& stages, bool with_host) {
    std::vector<std::string> out;
    for (std::size_t si : stages) {
        const StageSpec& s = spec.stages[si];
        out.push_back(s.name + " x" + std::to_string(s.replicas) + (with_host ? "@" + s.host : ""));
    }
    return join(out, ", ");
}

}  // namespace

void validate_spec(PipelineSpec& spec, const SpecOptions& options) {
    check_names(spec);
    add_implicit_queues(spec);
    check_stage_queues(spec);
    const SpecGraph graph(spec);
    check_queue_ends(graph);
    check_cycles(graph);
    check_placement(graph);
    check_commands(spec, options);
}

std::string host_edge_address(const HostSpec& host, std::size_t edge) {
    const unsigned port = address_port(host.address);
    const auto colon = host.address.rfind(':');
    return host.address.substr(0, colon + 1) + std::to_string(port + 1 + edge);
}

std::string describe_spec(const PipelineSpec& spec) {
    const SpecGraph graph(spec);
    const bool hosts = spec.multi_host();
    std::ostringstream out;
    out << "pipeline " << quoted(spec.name) << " (" << spec.source << "): " << spec.stages.size() << " stage"
        << (spec.stages.size() == 1 ? "" : "s") << ", " << spec.queues.size() << " queue"
        << (spec.queues.size() == 1 ? "" : "s") << ", failure "
        << (spec.failure == FailurePolicy::fail_fast ? "fail-fast" : "keep-going") << ", stop "
        << signal_name(spec.stop_signal) << " then SIGKILL after " << spec.stop_timeout.count() << " ms, on_loss "
        << (spec.on_loss == LossPolicy::fail ? "fail" : "warn") << "\n";
    out << "queues:\n";
    for (const auto& ends : graph.queues()) {
        const QueueSpec& q = spec.queues[ends.queue];
        out << "  " << q.name << ": capacity " << q.capacity << " B, max_message " << q.max_message << " B, "
            << ends.producers << " expected producer" << (ends.producers == 1 ? "" : "s") << "; "
            << stage_list(spec, ends.writers, hosts) << " -> " << stage_list(spec, ends.readers, hosts)
            << (q.declared ? "" : " (default geometry)");
        if (graph.is_pipe_edge(ends)) {
            out << " (pipe edge: no queue)";
        } else if (const std::size_t batch = graph.line_batch_bytes(ends); batch != 0) {
            out << " (lines batched, messages up to " << batch << " B)";
        }
        out << "\n";
    }
    if (hosts) {
        out << "hosts (heartbeat " << spec.heartbeat.count() << " ms, dead after " << spec.dead_after.count()
            << " ms, " << (spec.curve_secret_file.empty() ? "no CurveZMQ" : "CurveZMQ") << "):\n";
        for (const auto& h : spec.hosts) {
            std::vector<std::string> stages;
            for (const auto& s : spec.stages) {
                if (s.host == h.name) stages.push_back(s.name);
            }
            out << "  " << h.name << " at " << h.address << ": " << (stages.empty() ? "(no stage)" : join(stages, ", "))
                << "\n";
        }
        const auto crossing = graph.crossing();
        out << "edges crossing hosts:" << (crossing.empty() ? " none" : "") << "\n";
        for (std::size_t k = 0; k < crossing.size(); ++k) {
            const QueueEnds& e = *crossing[k];
            std::vector<std::string> binds;
            for (const auto& h : e.reader_hosts) binds.push_back(h + " " + host_edge_address(*spec.find_host(h), k));
            out << "  " << spec.queues[e.queue].name << ": " << join(e.writer_hosts, ", ") << " -> "
                << join(e.reader_hosts, ", ") << " (received at " << join(binds, ", ") << ")\n";
        }
    }
    out << "stages (started consumers first):\n";
    for (const auto& s : spec.stages) {
        out << "  " << s.name << " x" << s.replicas << (hosts ? " on " + s.host : "") << ": " << join(s.cmd, " ") << "\n";
        out << "      program " << s.program;
        if (!s.inputs.empty()) out << ", inputs " << join(s.inputs, ",");
        if (!s.outputs.empty()) out << ", outputs " << join(s.outputs, ",");
        if (!s.stdin_queue.empty()) {
            out << ", stdin <- " << s.stdin_queue << (s.stdin_format == StreamFormat::lines ? " (lines)" : " (records)");
        }
        if (!s.stdout_queue.empty()) {
            out << ", stdout -> " << s.stdout_queue
                << (s.stdout_queue == kInheritStdout ? ""
                    : s.stdout_format == StreamFormat::lines ? " (lines)" : " (records)");
        }
        if (s.restart == RestartPolicy::on_failure) out << ", restart on-failure (max " << s.max_restarts << ")";
        if (!s.critical) out << ", not critical";
        if (s.is_source()) out << ", source";
        out << "\n";
    }
    return out.str();
}

}  // namespace shmpipe
