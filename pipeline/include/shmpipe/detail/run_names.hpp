// How a pipeline run names its queues: "<pipeline>.<run>.<queue>". Graph composes the names
// here; inspect-queues and the metrics exporter split them back to label a queue with its
// pipeline. Header-only so that inspect-queues needs no link to shmpipe::pipeline.
#pragma once

#include <cctype>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace shmpipe::detail {

// The shared-memory object name of queue `queue` in run `run` of pipeline `pipeline`.
inline std::string run_object_name(std::string_view pipeline, std::string_view run, std::string_view queue) {
    std::string out;
    out.reserve(pipeline.size() + run.size() + queue.size() + 2);
    out.append(pipeline).append(1, '.').append(run).append(1, '.').append(queue);
    return out;
}

struct RunObjectName {
    std::string pipeline, run, queue;
};

// The default run id Graph gives a run: "<pid>-<4 hex digits>" (the low 16 bits of `random`).
inline std::string default_run_id(long pid, unsigned random) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld-%04x", pid, random & 0xffffu);
    return buf;
}

// True for a run id of the default_run_id shape.
inline bool is_default_run_id(std::string_view run) noexcept {
    const auto dash = run.find('-');
    if (dash == 0 || dash == std::string_view::npos || run.size() - dash - 1 != 4) return false;
    for (std::size_t i = 0; i < run.size(); ++i) {
        const auto c = static_cast<unsigned char>(run[i]);
        if (i < dash ? std::isdigit(c) == 0 : i > dash && std::isxdigit(c) == 0) return false;
    }
    return true;
}

// Splits a name made by run_object_name with a default run id. Pipeline and queue names may
// hold dots, so the run id is the first dot-separated part of the default shape that has a
// part before and after it. nullopt for any other name (a run with --run-id, a queue made
// outside a pipeline): such a queue has no pipeline label.
inline std::optional<RunObjectName> split_run_object_name(std::string_view name) {
    std::size_t start = name.find('.');
    while (start != std::string_view::npos && start > 0) {
        const std::size_t end = name.find('.', start + 1);
        if (end == std::string_view::npos || end + 1 >= name.size()) return std::nullopt;
        const std::string_view run = name.substr(start + 1, end - start - 1);
        if (is_default_run_id(run)) {
            return RunObjectName{std::string(name.substr(0, start)), std::string(run), std::string(name.substr(end + 1))};
        }
        start = end;
    }
    return std::nullopt;
}

}  // namespace shmpipe::detail
