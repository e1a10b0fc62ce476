// JSON string escaping shared by Graph's summary and inspect-queues (header-only, so a tool
// that does not link shmpipe::pipeline can use it). Not API.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace shmpipe::detail {

// The JSON string escape of s, without the surrounding quotes.
inline std::string json_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    return out;
}

// s as a JSON string literal, quotes included.
inline std::string json_quote(std::string_view s) { return "\"" + json_escape(s) + "\""; }

}  // namespace shmpipe::detail
