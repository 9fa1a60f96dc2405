// Helpers shared by the recorder's tests, its crash worker and its fixture writer: synthetic
// "training" weights that are a pure function of (seed, layer, position, step), so that a process
// restarted at any step sees exactly the weights an uninterrupted run saw; temporary directories;
// an independent CSV reader and .npy reader.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <fevo/fevo.hpp>

namespace fevo_record_test {

inline std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
inline double unit(std::uint64_t h) { return double(h >> 11) * 0x1p-53 * 2.0 - 1.0; }  // [-1, 1)

/// Threshold the synthetic weights are designed around.
inline constexpr double synth_tau = 0.05;

/// The weight (i, c, h, w) of layer `layer` at `step` (step >= 0). Each channel moves every
/// `period` steps (1..4); "quiet" filters and some channels move by at most 0.02 (< tau), so
/// S_i == 0 and Z_i == 1 both happen; the rest move by up to 0.4.
inline double synth_value(std::uint64_t seed, unsigned layer, std::size_t i, std::size_t c,
                          std::size_t h, std::size_t w, std::int64_t step) {
  const std::uint64_t f = mix(seed ^ mix(0x1000u + layer * 1000003ull + i));
  const std::uint64_t ch = mix(f ^ mix(c + 17));
  const bool quiet = f % 4 == 0;
  const double amp = (quiet || ch % 3 == 0) ? 0.01 : 0.2;
  const std::int64_t period = 1 + std::int64_t(ch % 4);
  const std::uint64_t pos = mix(ch ^ mix(h * 131 + w + 7));
  const double base = unit(pos) * 0.5;
  const std::int64_t epoch = step / period;
  return base + amp * unit(mix(pos ^ std::uint64_t(epoch) * 0x2545f4914f6cdd1dull));
}

/// Fills a view with the layer's weights at `step` (T converted from double).
template <class T>
void synth_fill(const fevo::filter_view<T>& v, std::uint64_t seed, unsigned layer, std::int64_t step) {
  for (std::size_t i = 0; i < v.filters(); ++i)
    for (std::size_t c = 0; c < v.channels(); ++c)
      for (std::size_t h = 0; h < v.rows(); ++h)
        for (std::size_t w = 0; w < v.cols(); ++w) {
          const double x = synth_value(seed, layer, i, c, h, w, step);
          if constexpr (std::is_same_v<T, fevo::half>) v(i, c, h, w) = fevo::half::from_float(float(x));
          else if constexpr (std::is_same_v<T, fevo::bfloat16>) v(i, c, h, w) = fevo::bfloat16::from_float(float(x));
          else v(i, c, h, w) = static_cast<T>(x);
        }
}

// ---- files --------------------------------------------------------------------------------------

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

inline void append_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << bytes;
}

inline void truncate_to(const std::string& path, std::uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) throw std::runtime_error("truncate " + path);
}

inline void remove_tree(const std::string& dir) {
  ::nftw(dir.c_str(),
         [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
         FTW_DEPTH | FTW_PHYS);
}

/// A fresh directory removed with its content at the end of the scope.
class temp_dir {
 public:
  explicit temp_dir(const std::string& tag = "rec") {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/fevo-" + tag + "-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~temp_dir() { remove_tree(path_); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ---- CSV (written independently of the library's reader) ----------------------------------------

/// Splits a whole CSV text into rows of fields (RFC 4180 quoting). `complete` is false when the
/// text does not end with '\n' or a quote is unterminated.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text, bool* complete = nullptr) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, ok = true;
  std::size_t i = 0;
  bool at_field_start = true;
  while (i < text.size()) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        field += ch;
      }
      ++i;
      continue;
    }
    if (ch == '"' && at_field_start) {
      quoted = true;
      at_field_start = false;
    } else if (ch == ',') {
      row.push_back(field);
      field.clear();
      at_field_start = true;
    } else if (ch == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
      at_field_start = true;
    } else {
      field += ch;
      at_field_start = false;
    }
    ++i;
  }
  if (quoted || !field.empty() || !row.empty()) ok = false;
  if (complete) *complete = ok;
  return rows;
}

inline double to_double(const std::string& s) {
  if (s == "nan" || s == "-nan") return std::numeric_limits<double>::quiet_NaN();
  if (s == "inf") return std::numeric_limits<double>::infinity();
  if (s == "-inf") return -std::numeric_limits<double>::infinity();
  std::size_t used = 0;
  const double v = std::stod(s, &used);
  if (used != s.size()) throw std::runtime_error("not a number: " + s);
  return v;
}

// ---- .npy (parsed independently of the library's writer) ----------------------------------------

struct npy_array {
  std::string descr;
  bool fortran = true;
  std::vector<std::uint64_t> shape;
  std::string data;  ///< raw little-endian bytes
  std::size_t header_total = 0;
  double f64(std::size_t k) const {
    double v;
    std::memcpy(&v, data.data() + 8 * k, 8);
    return v;
  }
  std::int64_t i64(std::size_t k) const {
    std::int64_t v;
    std::memcpy(&v, data.data() + 8 * k, 8);
    return v;
  }
};

inline npy_array read_npy(const std::string& path) {
  const std::string s = slurp(path);
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + ": bad magic");
  if (s[6] != 1 || s[7] != 0) throw std::runtime_error(path + ": not version 1.0");
  const std::size_t hlen = std::size_t((unsigned char)s[8]) | std::size_t((unsigned char)s[9]) << 8;
  npy_array a;
  a.header_total = 10 + hlen;
  const std::string h = s.substr(10, hlen);
  auto value_of = [&](const std::string& key) {
    const auto p = h.find("'" + key + "':");
    if (p == std::string::npos) throw std::runtime_error(path + ": no key " + key);
    std::size_t q = p + key.size() + 3;
    while (h[q] == ' ') ++q;
    return q;
  };
  std::size_t q = value_of("descr");
  a.descr = h.substr(q + 1, h.find('\'', q + 1) - q - 1);
  q = value_of("fortran_order");
  a.fortran = h.compare(q, 4, "True") == 0;
  q = value_of("shape");
  const std::size_t e = h.find(')', q);
  std::string dims = h.substr(q + 1, e - q - 1);
  std::stringstream ss(dims);
  std::string tok;
  while (std::getline(ss, tok, ','))
    if (tok.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoull(tok));
  a.data = s.substr(10 + hlen);
  return a;
}

}  // namespace fevo_record_test
