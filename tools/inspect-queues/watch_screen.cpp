#include "watch_screen.hpp"

#include <algorithm>
#include <cstdio>
#include <sys/ioctl.h>

namespace inspect_queues {

namespace {

constexpr std::size_t kMinNameWidth = 12;

std::string short_kind(const std::string& kind) {
    if (kind == "spsc-queue") return "spsc";
    if (kind == "mpmc-queue") return "mpmc";
    if (kind == "shared-array") return "array";
    return kind;
}

std::string cut(const std::string& text, std::size_t width) {
    if (text.size() <= width) return text;
    if (width <= 3) return text.substr(0, width);
    return text.substr(0, width - 3) + "...";
}

}  // namespace

std::string rate_text(double per_s) { return human_count(static_cast<std::uint64_t>(per_s + 0.5)); }

std::string mb_text(double mb) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", mb);
    return buf;
}

ScreenSize terminal_size(int fd) {
    ScreenSize s;
    winsize ws{};
    if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        s.columns = ws.ws_col;
        s.rows = ws.ws_row;
    }
    return s;
}

std::string shorten_middle(const std::string& text, std::size_t width) {
    if (text.size() <= width) return text;
    if (width < 3) return text.substr(0, width);
    const std::size_t head = (width - 1) / 2;
    const std::size_t tail = width - 1 - head;  // the end (a queue's own name) keeps the extra character
    return text.substr(0, head) + "~" + text.substr(text.size() - tail);
}

void print_watch_screen(std::ostream& out, const std::string& title,
                        const std::vector<std::pair<shmpipe::ObjectInfo, Rates>>& objects, ScreenSize size) {
    using shmpipe::ObjectState;
    const std::size_t width = std::max<std::size_t>(size.columns, 40);
    out << cut(title, width) << "\n\n";
    if (objects.empty()) {
        out << "no matching shmpipe objects\n";
        return;
    }

    // Columns after NAME: KIND STATE DEPTH FILL MSGS/S MB/S.
    std::vector<std::vector<std::string>> rows{{"NAME", "KIND", "STATE", "DEPTH", "FILL", "MSGS/S", "MB/S"}};
    std::vector<std::string> details;
    for (const auto& [o, r] : objects) {
        const bool valid = o.state != ObjectState::corrupt && o.state != ObjectState::unreadable;
        std::vector<std::string> row{o.name, short_kind(o.kind), shmpipe::to_string(o.state)};
        if (o.is_queue && valid) {
            row.insert(row.end(), {human_count(o.depth), percent(o.fill),
                                   rate_text(r.msgs_out_per_s), mb_text(r.mb_out_per_s)});
        } else {
            row.insert(row.end(), {"-", "-", "-", "-"});
        }
        rows.push_back(std::move(row));

        std::string d = r.mark.empty() ? "" : r.mark + "  ";
        if (!valid) {
            d += o.problem;
        } else {
            if (o.sync) {
                d += o.sync->value_name + "=" + std::to_string(o.sync->value);
                if (o.sync->limit) d += "/" + std::to_string(*o.sync->limit);
                d += "  ";
            }
            d += endpoints_summary(o);
        }
        details.push_back(std::move(d));
    }

    std::vector<std::size_t> w(rows.front().size(), 0);
    for (const auto& row : rows) {
        for (std::size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
    }
    std::size_t others = 0;
    for (std::size_t i = 1; i < w.size(); ++i) others += w[i] + 2;
    const std::size_t name_width = std::max(kMinNameWidth, width > others ? width - others : 0);
    w[0] = std::min(w[0], name_width);

    // Two lines per object under the header; the rest is counted on the last line.
    const std::size_t room = size.rows > 4 ? (size.rows - 4) / 2 : 1;
    const std::size_t shown = std::min(objects.size(), room);
    for (std::size_t k = 0; k <= shown; ++k) {
        const auto& row = rows[k];
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            const std::string cell = i == 0 ? shorten_middle(row[i], w[0]) : row[i];
            const std::size_t pad = w[i] - cell.size();
            if (i == 0 || i == 1 || i == 2) {  // text columns: left-aligned
                line += cell;
                if (i + 1 < row.size()) line.append(pad + 2, ' ');
            } else {
                line.append(pad, ' ');
                line += cell;
                if (i + 1 < row.size()) line += "  ";
            }
        }
        out << cut(line, width) << '\n';
        if (k > 0) out << cut("  " + details[k - 1], width) << '\n';
    }
    if (shown < objects.size()) {
        out << cut("(+" + std::to_string(objects.size() - shown) +
                       " more: make the terminal taller or give a PATTERN)", width)
            << '\n';
    }
}

}  // namespace inspect_queues
