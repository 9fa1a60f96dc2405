// metrics.csv of a recording run: one row per (record, layer), and its repair after a crash.
//
// metrics.csv            One row per (record, layer), appended and written to the kernel (one
//                        write() per record, no user-space buffering) before record() returns:
//                          step_prev,step,layer,D,S,Z,n_filters,nonfinite,D_per_weight
//                        Rows of one record are consecutive, layers in registration order. The
//                        layer name is quoted per RFC 4180 when it contains ',' or '"' (quotes
//                        doubled). Integers in decimal; D, S, Z, D_per_weight in the shortest
//                        decimal form that reads back to the same double (std::to_chars; "nan",
//                        "inf", "-inf"). D_per_weight is layer_metrics::D_per_weight, D / (C H W).
//
// A run started before the D_per_weight column (header csv_header_v1, 8 fields) is continued in
// its own format: a file never mixes rows of 8 and 9 fields.
//
// A new run writes the header line atomically. Reopening a run reads the file back (scan()): a
// torn last line (no '\n', or it does not parse) and the rows of an incomplete last record are
// left out; damage before the tail is an error (not a torn write).
#pragma once

#include "../config.hpp"

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "../detail/atomic_file.hpp"
#include "../detail/posix_file.hpp"
#include "../error.hpp"
#include "detail/append_log.hpp"
#include "../layer_info.hpp"
#include "../results.hpp"
#include "detail/csv.hpp"

namespace fevo::record {

inline constexpr const char* csv_header = "step_prev,step,layer,D,S,Z,n_filters,nonfinite,D_per_weight";
/// The header of runs recorded before the D_per_weight column; such a run is resumed as it is.
inline constexpr const char* csv_header_v1 = "step_prev,step,layer,D,S,Z,n_filters,nonfinite";

namespace detail {

using ::fevo::detail::file;
using ::fevo::detail::path_exists;
using ::fevo::detail::read_file;
using ::fevo::detail::write_file_atomic;

/// A complete record of metrics.csv as scan() reads it back.
struct csv_record {
  std::int64_t step_prev, step;
  std::uint64_t end;                       ///< offset just past its last row
  std::vector<std::array<double, 3>> dsz;  ///< D, S, Z of each layer
};

/// metrics.csv of one run (see the file comment).
class csv_sink : public detail::append_log {
 public:
  /// How many of the last complete records scan() keeps the values of.
  static constexpr std::size_t keep_records = 16;

  explicit csv_sink(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }

  /// Starts the file of a new run: writes the header atomically and opens the file. An existing
  /// metrics.csv without rows (an interrupted creation) is replaced; one with rows is refused, as
  /// a run that the journal `journal_path` would have to hold and does not.
  void create(const std::string& journal_path) {
    if (path_exists(path_)) {
      // Only a header, or a part of it, or a header and a torn line: nothing was recorded.
      const std::string content = read_file(path_);
      auto only_header = [&](const std::string& h) {
        return content.size() <= h.size()
                   ? h.compare(0, content.size(), content) == 0
                   : content.compare(0, h.size(), h) == 0 && content.find('\n', h.size()) == std::string::npos;
      };
      const bool empty = only_header(std::string(csv_header) + "\n") || only_header(std::string(csv_header_v1) + "\n");
      FEVO_EXPECTS(empty, "recorder: '", path_, "' holds rows but '", journal_path,
                   "' does not exist: not a run this recorder can continue; use another directory");
    }
    write_file_atomic(path_, std::string(csv_header) + "\n");
    legacy_ = false;
  }
  /// Opens the file for appending after a create().
  void open() {
    f_.open(path_, O_RDWR);
    size_ = f_.size();
  }
  /// Opens the file of a reopened run, cut to its first `end` bytes (from scan()).
  void open_truncated(std::uint64_t end) {
    f_.open(path_, O_RDWR);
    if (f_.size() != end) f_.truncate(end);
    size_ = end;
  }

  /// Reads metrics.csv of a run with `layers`: the (step, end offset) of every complete record
  /// and the values of the last keep_records; returns the offset just past the header. A torn
  /// tail is left out; damage before the tail throws.
  std::uint64_t scan(const std::vector<layer_info>& layers,
                     std::vector<std::pair<std::int64_t, std::uint64_t>>& records,
                     std::deque<csv_record>& kept) {
    FEVO_EXPECTS(path_exists(path_), "recorder: '", path_, "' is missing; cannot resume the run");
    file f(path_, O_RDONLY);
    const std::uint64_t size = f.size();
    std::string header = std::string(csv_header) + "\n";
    const std::string header_v1 = std::string(csv_header_v1) + "\n";
    std::string head(std::min<std::uint64_t>(size, header.size()), '\0');
    f.pread_some(head.data(), head.size(), 0);
    legacy_ = head.compare(0, header_v1.size(), header_v1) == 0;
    if (legacy_) {
      header = header_v1;
      head.resize(header.size());
    } else if (head.size() < header.size()) {
      // Interrupted creation (cannot happen with the atomic create, but harmless to repair).
      FEVO_EXPECTS(header.compare(0, head.size(), head) == 0, "recorder: '", path_,
                   "' does not start with the header ", csv_header);
      file w(path_, O_RDWR);
      w.truncate(0);
      w.pwrite_all(header.data(), header.size(), 0);
      return header.size();
    }
    FEVO_EXPECTS(head == header, "recorder: '", path_, "' does not start with the header ", csv_header,
                 " (nor with that of runs recorded before its D_per_weight column)");
    const std::size_t n_fields = legacy_ ? 8 : 9;

    const std::size_t L = layers.size();
    std::vector<std::string> fields;
    csv_record cur;
    std::size_t in_group = 0;
    std::uint64_t off = header.size();
    std::uint64_t line_no = 1;
    std::string buf, line;
    std::uint64_t buf_off = off;  // file offset of buf[0]
    std::size_t pos = 0;
    const std::size_t chunk = std::size_t{1} << 20;
    auto fetch = [&]() {  // appends the next chunk to buf; false at end of file
      if (buf_off + buf.size() >= size) return false;
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, size - buf_off - buf.size()));
      const std::size_t old = buf.size();
      buf.resize(old + n);
      buf.resize(old + f.pread_some(buf.data() + old, n, buf_off + old));
      return buf.size() > old;
    };
    auto tail_or_fail = [&](std::uint64_t line_end, const char* what) {
      // A bad line is a torn write only if nothing follows it.
      FEVO_EXPECTS(line_end >= size, "recorder: '", path_, "' line ", line_no, ": ", what,
                   " (damage before the end of the file, not a torn write)");
    };
    for (;;) {
      std::size_t nl = buf.find('\n', pos);
      while (nl == std::string::npos) {
        buf.erase(0, pos);
        buf_off += pos;
        pos = 0;
        if (!fetch()) break;
        nl = buf.find('\n', pos);
      }
      if (nl == std::string::npos) break;  // no more complete line: a torn tail or the end
      ++line_no;
      line.assign(buf, pos, nl - pos);
      const std::uint64_t line_end = buf_off + nl + 1;
      pos = nl + 1;
      std::int64_t sp = 0, s = 0;
      double v[3];
      std::uint64_t nf = 0, nonfinite = 0;
      double dw = 0;
      const bool parsed = csv::split(line, fields) && fields.size() == n_fields && csv::parse_int(fields[0], sp) &&
                          csv::parse_int(fields[1], s) && csv::parse_double(fields[3], v[0]) &&
                          csv::parse_double(fields[4], v[1]) && csv::parse_double(fields[5], v[2]) &&
                          csv::parse_int(fields[6], nf) && csv::parse_int(fields[7], nonfinite) &&
                          (legacy_ || csv::parse_double(fields[8], dw));
      if (!parsed) {
        tail_or_fail(line_end, legacy_ ? "does not parse as a row of 8 fields" : "does not parse as a row of 9 fields");
        break;
      }
      const layer_info& want = layers[in_group];
      const bool fits = fields[2] == want.name && nf == want.filters() && sp < s &&
                        (in_group == 0 ? (records.empty() || s > records.back().first)
                                       : (sp == cur.step_prev && s == cur.step));
      if (!fits) {
        tail_or_fail(line_end, "is not the expected row (layer, filters or steps out of order)");
        break;
      }
      if (in_group == 0) {
        cur.step_prev = sp;
        cur.step = s;
        cur.dsz.assign(L, {0, 0, 0});
      }
      cur.dsz[in_group] = {v[0], v[1], v[2]};
      if (++in_group == L) {
        cur.end = line_end;
        records.emplace_back(s, line_end);
        kept.push_back(cur);
        if (kept.size() > keep_records) kept.pop_front();
        in_group = 0;
      }
    }
    return header.size();
  }

  /// The rows of one record, in the file's format (without D_per_weight in a run resumed from
  /// before that column).
  std::string rows(std::int64_t step_prev, std::int64_t step, const std::vector<layer_info>& layers,
                   const std::vector<layer_metrics>& metrics) const {
    std::string out;
    for (std::size_t k = 0; k < layers.size(); ++k) append_row(out, step_prev, step, layers[k].name, metrics[k]);
    return out;
  }

 private:
  void append_row(std::string& out, std::int64_t step_prev, std::int64_t step, const std::string& name,
                  const layer_metrics& m) const {
    csv::put_int(out, step_prev);
    out += ',';
    csv::put_int(out, step);
    out += ',';
    csv::put_field(out, name);
    out += ',';
    csv::put_double(out, m.D);
    out += ',';
    csv::put_double(out, m.S);
    out += ',';
    csv::put_double(out, m.Z);
    out += ',';
    csv::put_int(out, m.n_filters);
    out += ',';
    csv::put_int(out, m.nonfinite);
    if (!legacy_) {
      out += ',';
      csv::put_double(out, m.D_per_weight);
    }
    out += '\n';
  }

  std::string path_;
  bool legacy_ = false;  ///< a run started before the D_per_weight column: 8 fields per row
};

}  // namespace detail
}  // namespace fevo::record
