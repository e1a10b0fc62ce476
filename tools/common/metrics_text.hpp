// Prometheus metrics of shmpipe objects, in the text exposition format (version 0.0.4, which
// Prometheus and OpenMetrics scrapers both read). Shared by `inspect-queues metrics|serve` and
// `pipeline-launch --metrics-listen`.
//
// Names and labels are a stable interface (docs/operating.md lists them): every series of an
// object carries `queue` (the object's name, as `inspect-queues --json` prints it; sync objects
// too), `pipeline` (the pipeline that made it, "" when the name does not say) and `kind`.
// Figures are the ObjectInfo snapshot's, unchanged: a scrape and `inspect-queues --json` of a
// quiet queue print the same numbers.
#pragma once

#include <shmpipe/inspect.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmpipe::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// The Content-Type of the text format.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Writes metric families: every sample of a family must follow its family() call.
class TextWriter {
public:
    // type: "gauge" or "counter" (a counter's name ends in _total).
    void family(std::string_view name, std::string_view type, std::string_view help);
    void sample(std::string_view name, const Labels& labels, double value);
    const std::string& text() const noexcept { return out_; }

private:
    std::string out_;
};

// Label value escaping of the text format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

// An endpoint that is gone without closing: marked dead, or its process (pid + start time)
// no longer alive. Closed endpoints are neither alive nor dead: they left cleanly.
bool endpoint_dead(const EndpointInfo& endpoint) noexcept;

// The labels every series of `info` carries: queue, pipeline, kind. `pipeline` overrides the
// pipeline found in the name (pipeline-launch knows its own).
Labels object_labels(const ObjectInfo& info, std::string_view pipeline = {});

// Every family of every object, in a fixed order; `pipelines[i]` (when given) labels infos[i].
void write_objects(TextWriter& out, const std::vector<ObjectInfo>& infos,
                   const std::vector<std::string>& pipelines = {});

// shmpipe_build_info{version="..."} 1, so a dashboard can see which release exports.
void write_build_info(TextWriter& out, std::string_view tool);

}  // namespace shmpipe::metrics
