// CSV of the recorder (RFC 4180): fields separated by ',', rows ended by '\n', a field quoted with
// '"' (quotes doubled) when it contains ',' or '"'. Numbers are written locale-independently with
// std::to_chars: integers in decimal, doubles in the shortest form that reads back to the same
// bits ("nan", "inf", "-inf" for non-finite values; Python's float() and NumPy read these).
#pragma once

#include "../../config.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace fevo::record::detail::csv {

inline void put_field(std::string& out, std::string_view s) {
  if (s.find_first_of(",\"") == std::string_view::npos) {
    out += s;
    return;
  }
  out += '"';
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

inline void put_double(std::string& out, double v) {
  if (v == 0 && !std::signbit(v)) {  // common in summaries (no change); what to_chars writes
    out += '0';
    return;
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

template <class I>
inline void put_int(std::string& out, I v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

/// Splits one line (without its '\n') into fields; false when the quoting is malformed.
inline bool split(std::string_view line, std::vector<std::string>& fields) {
  fields.clear();
  std::size_t i = 0;
  for (;;) {
    std::string f;
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size()) return false;  // unterminated quote
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            f += '"';
            i += 2;
          } else {
            ++i;
            break;
          }
        } else {
          f += line[i++];
        }
      }
      if (i < line.size() && line[i] != ',') return false;  // text after the closing quote
    } else {
      const std::size_t e = line.find(',', i);
      const std::size_t stop = e == std::string_view::npos ? line.size() : e;
      f.assign(line.substr(i, stop - i));
      if (f.find('"') != std::string::npos) return false;
      i = stop;
    }
    fields.push_back(std::move(f));
    if (i >= line.size()) return true;
    ++i;  // the ','
    if (i == line.size()) {
      fields.emplace_back();
      return true;
    }
  }
}

template <class I>
inline bool parse_int(const std::string& s, I& v) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

/// Parses what put_double writes (and any decimal or "nan"/"inf" form).
inline bool parse_double(const std::string& s, double& v) {
  if (s.empty()) return false;
  // from_chars accepts "nan" and "-nan", "inf" and "-inf"; a leading '+' is refused.
  const char* e = s.data() + s.size();
  const auto r = std::from_chars(s.data(), e, v);
  return r.ec == std::errc() && r.ptr == e;
}

}  // namespace fevo::record::detail::csv
