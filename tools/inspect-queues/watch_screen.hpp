// The terminal screen of `inspect-queues watch`: made to fit the terminal it is drawn on
// (80 columns and 24 rows when the size is unknown). Each object takes two lines: a row of
// fixed columns with the name shortened in the middle when it does not fit, and below it
// the marks (FULL, STALLED, DEAD) and the endpoints, a sync object's value, or why the
// object is corrupt, cut at the right edge. Objects that do not fit the height are counted.
#pragma once

#include "commands.hpp"

#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace inspect_queues {

struct ScreenSize {
    std::size_t columns = 80, rows = 24;
};
// The size of the terminal on `fd`, or 80x24 when it cannot be read.
ScreenSize terminal_size(int fd);

// A rate as watch shows it: messages per second ("12.3k"), megabytes per second ("98.40").
std::string rate_text(double per_s);
std::string mb_text(double mb);

// "fanout.1234-abcd.results" -> "fanout.12~d.results" (at most `width` characters).
std::string shorten_middle(const std::string& text, std::size_t width);

// Writes the screen below a title line (both within size.columns).
void print_watch_screen(std::ostream& out, const std::string& title,
                        const std::vector<std::pair<shmpipe::ObjectInfo, Rates>>& objects, ScreenSize size);

}  // namespace inspect_queues
