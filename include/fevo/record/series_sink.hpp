// The per-filter outputs of a recording run, written atomically when it is closed.
//
// filter_summary.csv     One row per (layer, filter):
//                          layer,filter,steps,D_mean,D_min,D_max,frac_S_zero,frac_Z_one
//                        over the `steps` records of the run: mean, min and max of D_i (eq. 1
//                        before the mean, ||f_i(t+1) - f_i(t)||^2), the fraction of records in
//                        which filter i had S_i == 0 (no weight changed by more than tau) and the
//                        fraction in which Z_i == 1 (no channel had a weight that changed by more
//                        than tau). A NaN D_i makes that filter's D_mean, D_min, D_max "nan". With
//                        no record, every statistic is "nan". From the summary accumulators
//                        (journal.hpp), so it covers every record of the run.
// series/                With per_filter_series, from the journal (which then holds every record):
//                          series/<name>.D.npy, .S.npy, .Z.npy   float64, shape (records, N):
//                                               D_i, S_i, Z_i of every filter at every record
//                          series/steps.npy     int64, shape (records, 2): step_prev, step
//                          series/index.csv     layer,D,S,Z,n_filters: the file names of each layer
//                        <name> is the layer name with '/' and '\' replaced by "__", any other
//                        byte outside [A-Za-z0-9._-] by '_', at most 180 bytes, made unique with a
//                        "_<layer index>" suffix where two layers would collide (index.csv is the
//                        authority). NumPy .npy version 1.0, header padded to 64 bytes
//                        (<fevo/detail/npy_writer.hpp>).
#pragma once

#include "../config.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <unordered_set>
#include <vector>

#include "../detail/atomic_file.hpp"
#include "../detail/little_endian.hpp"
#include "../detail/npy_writer.hpp"
#include "../detail/posix_file.hpp"
#include "../error.hpp"
#include "../layer_info.hpp"
#include "detail/csv.hpp"
#include "journal.hpp"

namespace fevo::record {

inline constexpr const char* summary_header =
    "layer,filter,steps,D_mean,D_min,D_max,frac_S_zero,frac_Z_one";

namespace detail {

using ::fevo::detail::atomic_file;
using ::fevo::detail::get_f64;
using ::fevo::detail::get_u64;
using ::fevo::detail::join_path;
using ::fevo::detail::make_dirs;
using ::fevo::detail::npy_writer;
using ::fevo::detail::write_file_atomic;

/// The file name stem of each layer's series files (see the file comment).
inline std::vector<std::string> series_stems(const std::vector<layer_info>& layers) {
  std::vector<std::string> out;
  std::unordered_set<std::string> used;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    std::string s;
    for (unsigned char c : layers[k].name) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_') s += char(c);
      else if (c == '/' || c == '\\') s += "__";
      else s += '_';
    }
    if (s.size() > 180) s.resize(180);
    if (s.empty() || s[0] == '.') s.insert(s.begin(), '_');
    std::string u = s;
    for (int extra = 0; used.count(u); ++extra)
      u = s + "_" + std::to_string(k) + (extra ? "_" + std::to_string(extra) : std::string());
    used.insert(u);
    out.push_back(u);
  }
  return out;
}

/// Appends the summary rows of filters [i0, i1) of layer k to out.
inline void format_summary_rows(const std::vector<layer_info>& layers, const journal& j,
                                const std::vector<filter_acc>& acc, std::uint64_t records, std::size_t k,
                                std::size_t i0, std::size_t i1, const std::string& steps, std::string& out) {
  const double n = static_cast<double>(records);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const bool none = records == 0;
  std::string name;  // quoted once
  csv::put_field(name, layers[k].name);
  out.reserve((i1 - i0) * (name.size() + 96));
  for (std::size_t i = i0; i < i1; ++i) {
    const filter_acc& a = acc[j.first_filter(k) + i];
    out += name;
    out += ',';
    csv::put_int(out, i);
    out += ',';
    out += steps;
    out += ',';
    csv::put_double(out, none || a.nan ? nan : a.sum / n);
    out += ',';
    csv::put_double(out, none || a.nan ? nan : a.min);
    out += ',';
    csv::put_double(out, none || a.nan ? nan : a.max);
    out += ',';
    csv::put_double(out, none ? nan : double(a.s_zero) / n);
    out += ',';
    csv::put_double(out, none ? nan : double(a.z_one) / n);
    out += '\n';
  }
}

/// out_dir/filter_summary.csv, written atomically layer by layer: add_layers() appends the rows
/// of the next layers, commit() puts the file under its name (write_filter_summary writes it
/// whole; run_writer::summarize_ahead while the run's last records are computed).
class summary_csv {
 public:
  explicit summary_csv(const std::string& out_dir) : f_(join_path(out_dir, "filter_summary.csv")) {
    f_.write(std::string(summary_header) + "\n");
  }

  /// Appends the rows of layers [k0, k1) from `acc` (indexed as the journal's filters) over
  /// `records` records.
  void add_layers(const std::vector<layer_info>& layers, const journal& j, const std::vector<filter_acc>& acc,
                  std::uint64_t records, std::size_t k0, std::size_t k1) {
    // Rows are formatted in chunks of filters, in parallel where OpenMP is enabled (a ResNet-50
    // has 26,560 rows, about 9 ms of number formatting on one core), and written in order as they
    // are ready, going to disk meanwhile (writeback started every writeback_bytes), so that the
    // final fsync has little left to wait for.
    constexpr std::size_t chunk_rows = 512;
    constexpr std::size_t writeback_bytes = std::size_t{256} << 10;
    struct chunk {
      std::size_t layer, i0, i1;
    };
    std::vector<chunk> chunks;
    std::size_t rows = 0;
    for (std::size_t k = k0; k < k1; ++k) {
      rows += layers[k].filters();
      for (std::size_t i0 = 0; i0 < layers[k].filters(); i0 += chunk_rows)
        chunks.push_back({k, i0, std::min<std::size_t>(layers[k].filters(), i0 + chunk_rows)});
    }
    std::string steps;  // the same in every row
    csv::put_int(steps, records);
    std::exception_ptr failed;  // set and read in the ordered part alone
    const long n_chunks = static_cast<long>(chunks.size());
#ifdef _OPENMP
#pragma omp parallel for ordered schedule(dynamic, 1) if (rows >= 2 * chunk_rows)
#endif
    for (long c = 0; c < n_chunks; ++c) {
      std::string text;
      std::exception_ptr mine;
      try {
        const chunk& ch = chunks[std::size_t(c)];
        format_summary_rows(layers, j, acc, records, ch.layer, ch.i0, ch.i1, steps, text);
      } catch (...) {  // an exception must not leave an OpenMP region
        mine = std::current_exception();
      }
#ifdef _OPENMP
#pragma omp ordered
#endif
      {
        if (!failed && mine) failed = mine;
        if (!failed) {
          try {
            f_.write(text);
            pending_ += text.size();
            if (pending_ >= writeback_bytes) {
              f_.start_writeback();
              pending_ = 0;
            }
          } catch (...) {
            failed = std::current_exception();
          }
        }
      }
    }
    if (failed) std::rethrow_exception(failed);
  }

  /// Makes what was written so far durable on a thread of its own (atomic_file), so that
  /// commit() has little left to wait for.
  void sync_in_background() {
    f_.sync_in_background();
    pending_ = 0;
  }
  void commit() { f_.commit(); }

 private:
  atomic_file f_;
  std::size_t pending_ = 0;  // written since the last start of writeback
};

/// Writes out_dir/filter_summary.csv atomically from the accumulators of `records` records.
inline void write_filter_summary(const std::string& out_dir, const std::vector<layer_info>& layers,
                                 const journal& j, const std::vector<filter_acc>& acc, std::uint64_t records) {
  summary_csv f(out_dir);
  f.add_layers(layers, j, acc, records, 0, layers.size());
  f.commit();
}

/// Writes the series files of `records` records into `dir` (created if missing), atomically
/// each, from the journal, which must hold every record.
inline void write_series(const std::string& dir, const std::vector<layer_info>& layers, const journal& j,
                         std::uint64_t records) {
  make_dirs(dir);
  const std::uint64_t R = records;
  FEVO_EXPECTS(j.holds(R), "recorder: '", j.path(), "' does not hold every record of the series");
  {
    npy_writer steps(join_path(dir, "steps.npy"), "<i8", {R, 2});
    for (std::uint64_t r = 0; r < R; ++r) {
      unsigned char h[16];
      j.read_record(r, 8, h, 16);
      const std::int64_t v[2] = {static_cast<std::int64_t>(get_u64(h)), static_cast<std::int64_t>(get_u64(h + 8))};
      steps.write_i64(v, 2);
    }
    steps.commit();
  }
  const auto stems = series_stems(layers);
  std::string index = "layer,D,S,Z,n_filters\n";
  std::vector<unsigned char> raw;
  std::vector<double> d, s, z;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const std::uint64_t N = layers[k].filters();
    const double chw = double(layers[k].filter_size());
    const double C = double(layers[k].channels());
    const std::string base = join_path(dir, stems[k]);
    npy_writer wd(base + ".D.npy", "<f8", {R, N}), ws(base + ".S.npy", "<f8", {R, N}),
        wz(base + ".Z.npy", "<f8", {R, N});
    raw.resize(24 * N);
    d.resize(N);
    s.resize(N);
    z.resize(N);
    for (std::uint64_t r = 0; r < R; ++r) {
      FEVO_EXPECTS(j.read_record(r, j.filter_offset(k), raw.data(), raw.size()) == raw.size(), "recorder: '",
                   j.path(), "' is shorter than its records");
      for (std::uint64_t i = 0; i < N; ++i) {
        d[i] = get_f64(&raw[24 * i]);
        s[i] = double(get_u64(&raw[24 * i + 8])) / chw;
        z[i] = double(get_u64(&raw[24 * i + 16])) / C;
      }
      wd.write_f64(d.data(), N);
      ws.write_f64(s.data(), N);
      wz.write_f64(z.data(), N);
    }
    wd.commit();
    ws.commit();
    wz.commit();
    csv::put_field(index, layers[k].name);
    index += "," + stems[k] + ".D.npy," + stems[k] + ".S.npy," + stems[k] + ".Z.npy," + std::to_string(N) + "\n";
  }
  write_file_atomic(join_path(dir, "index.csv"), index);
}

}  // namespace detail
}  // namespace fevo::record
