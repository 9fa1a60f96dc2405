// fevo::record::run_writer: the files of a recording run, crash-safe. The recorder
// (<fevo/record/recorder.hpp>) computes the metrics and hands each record to a run_writer; any
// other producer of per-step metrics (e.g. an offline analysis) can use it the same way:
//   run_writer w(options, layers, "f32");  w.open();
//   for each record: w.maybe_compact(); w.write(step_prev, step, metrics, per_filter);
//   w.close();
// (maybe_compact() keeps the journal bounded; without it the journal holds every record.)
//
// ---- Files in out_dir ---------------------------------------------------------------------------
//
// metrics.csv            One row per (record, layer), appended and written to the kernel (one
//                        write() per record, no user-space buffering) before record() returns:
//                          step_prev,step,layer,D,S,Z,n_filters,nonfinite
//                        Rows of one record are consecutive, layers in registration order. The
//                        layer name is quoted per RFC 4180 when it contains ',' or '"' (quotes
//                        doubled). Integers in decimal; D, S, Z in the shortest decimal form that
//                        reads back to the same double (std::to_chars; "nan", "inf", "-inf").
// filter_summary.csv     Written atomically by close(): one row per (layer, filter):
//                          layer,filter,steps,D_mean,D_min,D_max,frac_S_zero,frac_Z_one
//                        over the `steps` records of the run: mean, min and max of D_i (eq. 1
//                        before the mean, ||f_i(t+1) - f_i(t)||^2), the fraction of records in
//                        which filter i had S_i == 0 (no weight changed by more than tau) and the
//                        fraction in which Z_i == 1 (no channel had a weight that changed by more
//                        than tau). A NaN D_i makes that filter's D_mean, D_min, D_max "nan". With
//                        no record, every statistic is "nan".
// series/                With per_filter_series, written atomically by close():
//                          series/<name>.D.npy, .S.npy, .Z.npy   float64, shape (records, N):
//                                               D_i, S_i, Z_i of every filter at every record
//                          series/steps.npy     int64, shape (records, 2): step_prev, step
//                          series/index.csv     layer,D,S,Z,n_filters: the file names of each layer
//                        <name> is the layer name with '/' and '\' replaced by "__", any other
//                        byte outside [A-Za-z0-9._-] by '_', at most 180 bytes, made unique with a
//                        "_<layer index>" suffix where two layers would collide (index.csv is the
//                        authority). NumPy .npy version 1.0, header padded to 64 bytes.
// events.out.tfevents.<unix time>.<host>.fevo
//                        With tensorboard: TensorBoard scalars fevo/<layer>/D, /S, /Z (float32),
//                        one Event per record at its `step`, written before record() returns. A
//                        resumed run appends to the newest such file of out_dir; a run that turns
//                        tensorboard on later starts a file with the records from then on.
// fevo-state/journal.bin Append-only binary journal (the recorder's own; see below).
// fevo-state/summary.ckpt
//                        Atomic checkpoint of the per-filter summary accumulators.
//
// ---- Crash safety -------------------------------------------------------------------------------
//
// Each record is written journal first, then metrics.csv, then the event file; each with one
// positioned write of the whole record, and with fsync when fsync_each_record is set. A record
// that failed to write (an I/O error, reported as fevo::error naming the path) is rolled back
// (the files are truncated to their previous sizes) so the caller may retry it.
//
// The journal holds, per record, step_prev, step, D, S, Z, nonfinite of every layer and D_i,
// changed_i, zero_channels_i of every filter (24 bytes per filter per record), with a CRC32C per
// record. It is the source of the per-filter summaries and of the series files. Without
// per_filter_series it is compacted: once it holds journal_compact_bytes, the summary
// accumulators are checkpointed atomically (summary.ckpt) and the journal is emptied. With
// per_filter_series the journal is kept whole (it is the series) and checkpoints only shorten the
// replay when a run is reopened. Disk: 24 bytes per filter per record with per_filter_series,
// at most about journal_compact_bytes without.
//
// After a crash (kill -9, power loss with fsync_each_record) opening the run again (resume)
//   - drops a torn last journal record (short, or its CRC does not match),
//   - drops a torn last line of metrics.csv (no '\n', or it does not parse) and the rows of an
//     incomplete last record,
//   - keeps the records present completely in both the journal and metrics.csv and truncates any
//     later data of either (at most the one record whose write was interrupted),
//   - truncates the event file after the last record it keeps and re-emits the scalars of
//     records it lacks (from metrics.csv; at most the last 16 records),
//   - rebuilds the summary accumulators from the checkpoint and the journal.
// So every record whose record() returned survives, none is duplicated, and the summaries cover
// exactly the rows of metrics.csv. Leftover temporary files of interrupted atomic writes are
// removed. A run directory is locked (flock on out_dir) while open: a second writer is refused.
#pragma once

#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../accumulator.hpp"
#include "../detail/tau.hpp"
#include "../error.hpp"
#include "../layer_info.hpp"
#include "../results.hpp"
#include "../detail/atomic_file.hpp"
#include "../detail/little_endian.hpp"
#include "../detail/npy_writer.hpp"
#include "../detail/posix_file.hpp"
#include "detail/crc32c.hpp"
#include "detail/csv.hpp"
#include "detail/tfevents.hpp"

namespace fevo::record {

namespace detail {
using ::fevo::detail::atomic_file;
using ::fevo::detail::file;
using ::fevo::detail::fsync_dir;
using ::fevo::detail::get_f64;
using ::fevo::detail::get_u32;
using ::fevo::detail::get_u64;
using ::fevo::detail::io_fail;
using ::fevo::detail::join_path;
using ::fevo::detail::list_dir;
using ::fevo::detail::make_dirs;
using ::fevo::detail::npy_writer;
using ::fevo::detail::path_exists;
using ::fevo::detail::put_f64;
using ::fevo::detail::put_u32;
using ::fevo::detail::put_u64;
using ::fevo::detail::read_file;
using ::fevo::detail::remove_file;
using ::fevo::detail::temp_marker;
using ::fevo::detail::write_file_atomic;
}  // namespace detail

struct recorder_options {
  std::string out_dir;            ///< created if missing
  double tau = 0;                 ///< the threshold of S and Z (the paper: the initial learning rate)
  bool per_filter_series = false; ///< also write series/<layer>.{D,S,Z}.npy at close
  bool tensorboard = false;       ///< also write TensorBoard scalars to an event file in out_dir
  bool resume = true;             ///< reopen an existing run in out_dir (else: refuse it)
  bool fsync_each_record = false; ///< fsync the journal, metrics.csv and event file per record
  std::uint64_t journal_compact_bytes = std::uint64_t{64} << 20;  ///< see run_writer.hpp
};

/// A layer as the files describe it (name and extents). The core's fevo::layer_info, under the
/// name fevo::record has always used.
using layer_desc = ::fevo::layer_info;

inline constexpr const char* csv_header = "step_prev,step,layer,D,S,Z,n_filters,nonfinite";
inline constexpr const char* summary_header =
    "layer,filter,steps,D_mean,D_min,D_max,frac_S_zero,frac_Z_one";

namespace detail {

/// Per-filter running statistics behind filter_summary.csv.
struct filter_acc {
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  std::uint64_t s_zero = 0;  ///< records with S_i == 0 (changed_i == 0)
  std::uint64_t z_one = 0;   ///< records with Z_i == 1 (zero_channels_i == C)
  bool nan = false;          ///< some D_i was NaN
  void add(double d, bool s_zero_now, bool z_one_now) {
    if (d != d) nan = true;
    sum += d;
    if (d < min) min = d;
    if (d > max) max = d;
    s_zero += s_zero_now;
    z_one += z_one_now;
  }
};

/// The file name stem of each layer's series files (see the header comment).
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

inline double wall_clock() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

}  // namespace detail

class run_writer {
 public:
  /// Describes the run; touches no file (open() does).
  run_writer(recorder_options opts, std::vector<layer_info> layers, std::string dtype)
      : opts_(std::move(opts)), layers_(std::move(layers)), dtype_(std::move(dtype)) {
    FEVO_EXPECTS(!opts_.out_dir.empty(), "recorder: out_dir is empty");
    ::fevo::detail::check_tau(opts_.tau, "recorder: ");
    FEVO_EXPECTS(!layers_.empty(), "recorder: no layer to record (add_layer before start)");
    std::size_t total = 0;
    for (const auto& l : layers_) {
      first_filter_.push_back(total);
      total += l.filters();
    }
    total_filters_ = total;
    block_size_ = 24 + 32 * layers_.size() + 24 * total_filters_ + 8;
    state_dir_ = detail::join_path(opts_.out_dir, "fevo-state");
    journal_path_ = detail::join_path(state_dir_, "journal.bin");
    ckpt_path_ = detail::join_path(state_dir_, "summary.ckpt");
    csv_path_ = detail::join_path(opts_.out_dir, "metrics.csv");
  }
  run_writer(const run_writer&) = delete;
  run_writer& operator=(const run_writer&) = delete;
  /// Closes the files without writing the summaries (close() writes them). Never throws.
  ~run_writer() = default;

  const recorder_options& options() const { return opts_; }
  const std::vector<layer_info>& layers() const { return layers_; }
  bool is_open() const { return open_; }
  /// The step of the last record in the files; empty for a run without records.
  std::optional<std::int64_t> last_step() const { return last_step_; }
  /// Records in the run (all sessions).
  std::uint64_t records() const { return records_; }
  /// The event file in use (empty without tensorboard).
  const std::string& events_path() const { return tb_.path(); }
  const std::string& metrics_path() const { return csv_path_; }

  /// Creates out_dir and a new run, or reopens (options().resume) the run it holds, repairing
  /// what a crash left (see the header comment).
  void open() {
    FEVO_EXPECTS(!open_, "recorder: the run in '", opts_.out_dir, "' is already open");
    detail::make_dirs(opts_.out_dir);
    lock_.open(opts_.out_dir, O_RDONLY | O_DIRECTORY);
    if (::flock(lock_.fd(), LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      lock_ = detail::file();
      if (err == EWOULDBLOCK)
        ::fevo::detail::fail("recorder: '", opts_.out_dir,
                             "' is in use by another recorder (it holds the directory's lock)");
      detail::io_fail("cannot lock", opts_.out_dir, err);
    }
    try {
      remove_temporaries(opts_.out_dir);
      if (detail::path_exists(state_dir_)) remove_temporaries(state_dir_);
      if (detail::path_exists(detail::join_path(opts_.out_dir, "series")))
        remove_temporaries(detail::join_path(opts_.out_dir, "series"));
      if (detail::path_exists(journal_path_)) {
        FEVO_EXPECTS(opts_.resume, "recorder: '", opts_.out_dir,
                     "' already holds a run (", journal_path_,
                     "); pass resume = true to continue it, or use another directory");
        resume();
      } else {
        create();
      }
      ck_journal_size_ = journal_size_;
      open_ = true;
    } catch (...) {
      journal_ = detail::file();
      csv_ = detail::file();
      tb_ = detail::file();
      lock_ = detail::file();
      throw;
    }
  }

  /// Appends one record: metrics[k] and per_filter[k] of layer k, between step_prev and step.
  /// On an I/O error the files are rolled back to their state before the call and fevo::error
  /// (naming the path) is thrown; the record may be retried.
  void write(std::int64_t step_prev, std::int64_t step, const std::vector<layer_metrics>& metrics,
             const std::vector<filter_results>& per_filter) {
    check_usable();
    FEVO_EXPECTS(step_prev < step, "recorder: step ", step, " must be greater than step_prev ", step_prev);
    FEVO_EXPECTS(!last_step_ || step > *last_step_, "recorder: step ", step,
                 " is not after the last recorded step ", *last_step_);
    FEVO_EXPECTS(metrics.size() == layers_.size() && per_filter.size() == layers_.size(),
                 "recorder: got results of ", metrics.size(), " layers, the run has ", layers_.size());
    for (std::size_t k = 0; k < layers_.size(); ++k)
      FEVO_EXPECTS(per_filter[k].size() == layers_[k].filters() &&
                       metrics[k].n_filters == layers_[k].filters(),
                   "recorder: layer '", layers_[k].name, "' has ", layers_[k].filters(),
                   " filters, got results of ", per_filter[k].size());

    encode_block(step_prev, step, metrics, per_filter);
    std::string rows;
    for (std::size_t k = 0; k < layers_.size(); ++k)
      append_row(rows, step_prev, step, layers_[k].name, metrics[k].D, metrics[k].S, metrics[k].Z,
                 metrics[k].n_filters, metrics[k].nonfinite);
    std::string ev;
    if (tb_.is_open()) ev = detail::tb::frame(scalars_event(step, metrics));

    const std::uint64_t j0 = journal_size_, c0 = csv_size_, t0 = tb_size_;
    try {
      journal_.pwrite_all(block_.data(), block_.size(), j0);
      if (opts_.fsync_each_record) journal_.sync();
      csv_.pwrite_all(rows.data(), rows.size(), c0);
      if (opts_.fsync_each_record) csv_.sync();
      if (tb_.is_open()) {
        tb_.pwrite_all(ev.data(), ev.size(), t0);
        if (opts_.fsync_each_record) tb_.sync();
      }
    } catch (const std::exception& e) {
      rollback(j0, c0, t0, e.what());
      throw;
    }
    journal_size_ += block_.size();
    csv_size_ += rows.size();
    tb_size_ += ev.size();
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const filter_results& f = per_filter[k];
      for (std::size_t i = 0; i < f.size(); ++i)
        acc_[first_filter_[k] + i].add(f.D[i], f.changed[i] == 0, f.zero_channels[i] == f.channels);
    }
    last_step_ = step;
    ++records_;
  }

  /// Checkpoints the summaries (and empties the journal, without per_filter_series) once the
  /// journal has grown by journal_compact_bytes since the last checkpoint. The recorder calls it
  /// before each record, so that a failure here never leaves a record half written.
  void maybe_compact() {
    check_usable();
    if (journal_size_ - ck_journal_size_ < opts_.journal_compact_bytes || records_ == ck_records_) return;
    write_checkpoint();
    if (!opts_.per_filter_series) {
      journal_.truncate(journal_header_size_);
      journal_size_ = journal_header_size_;
      if (opts_.fsync_each_record) journal_.sync();
    }
    ck_journal_size_ = journal_size_;
  }

  /// Writes filter_summary.csv (and the series files) atomically, syncs and closes every file and
  /// releases the directory lock. Idempotent; a failed close may be retried.
  void close() {
    if (!open_) return;
    // The journal, the CSV and the event file start going to disk while the summary is formatted.
    journal_.start_writeback();
    csv_.start_writeback();
    tb_.start_writeback();
    write_summary();
    if (opts_.per_filter_series) write_series();
    journal_.sync();
    csv_.sync();
    if (tb_.is_open()) tb_.sync();
    journal_.close();
    csv_.close();
    tb_.close();
    lock_ = detail::file();
    open_ = false;
  }

 private:
  // ---- layout of the journal and the checkpoint ------------------------------------------------
  // All little-endian.
  // journal.bin header: "FEVOJRNL", u32 version (1), u32 text length, u64 record size, the text
  //   (lines: the magic line, run_id, dtype, tau, per_filter_series, layers L, then one
  //   "layer N C H W name" per layer), u32 CRC32C of all of the above. Reopening requires the same
  //   text except run_id.
  // journal.bin records, fixed size 24 + 32 L + 24 F + 8 (F: filters of all layers): u32 "FVRB",
  //   u32 L, i64 step_prev, i64 step; per layer f64 D, f64 S, f64 Z, u64 nonfinite; per filter
  //   f64 D_i, u64 changed_i, u64 zero_channels_i; u32 CRC32C of the record so far, u32 "FVRE".
  // summary.ckpt: "FEVOCKPT", u32 version (1), u32 the journal header's CRC, i64 last step,
  //   u64 records, u64 F, u64 has-last-step; per filter f64 sum, min, max of D_i, u64 records
  //   with S_i == 0, u64 records with Z_i == 1, u64 flags (1: a D_i was NaN); u32 CRC32C.
  static constexpr std::uint32_t block_magic = 0x42525646u;      // "FVRB"
  static constexpr std::uint32_t block_end_magic = 0x45525646u;  // "FVRE"
  static constexpr std::uint32_t journal_version = 1;
  static constexpr std::size_t keep_csv_records = 16;

  struct csv_record {
    std::int64_t step_prev, step;
    std::uint64_t end;                       ///< offset just past its last row
    std::vector<std::array<double, 3>> dsz;  ///< D, S, Z of each layer
  };

  void check_usable() const {
    FEVO_EXPECTS(open_, "recorder: the run in '", opts_.out_dir, "' is not open");
    FEVO_EXPECTS(broken_.empty(), "recorder: '", opts_.out_dir,
                 "' cannot be written after an I/O error whose rollback failed (", broken_,
                 "); reopen the run (resume) to repair it");
  }

  void rollback(std::uint64_t j0, std::uint64_t c0, std::uint64_t t0, const char* why) {
    try {
      journal_.truncate(j0);
      csv_.truncate(c0);
      if (tb_.is_open()) tb_.truncate(t0);
    } catch (const std::exception& e) {
      broken_ = std::string(why) + "; then " + e.what();
    }
  }

  static void remove_temporaries(const std::string& dir) {
    for (const auto& n : detail::list_dir(dir))
      if (n.find(detail::temp_marker) != std::string::npos) detail::remove_file(detail::join_path(dir, n));
  }

  std::string journal_text(const std::string& run_id) const {
    std::string t = "fevo recorder journal\nrun_id " + run_id + "\ndtype " + dtype_ + "\ntau ";
    detail::csv::put_double(t, opts_.tau);
    t += "\nper_filter_series ";
    t += opts_.per_filter_series ? "1" : "0";
    t += "\nlayers " + std::to_string(layers_.size()) + "\n";
    for (const auto& l : layers_)
      t += "layer " + std::to_string(l.extents[0]) + " " + std::to_string(l.extents[1]) + " " +
           std::to_string(l.extents[2]) + " " + std::to_string(l.extents[3]) + " " + l.name + "\n";
    return t;
  }

  std::string journal_header(const std::string& text) const {
    std::string h(24, '\0');
    auto* p = reinterpret_cast<unsigned char*>(h.data());
    std::memcpy(p, "FEVOJRNL", 8);
    detail::put_u32(p + 8, journal_version);
    detail::put_u32(p + 12, static_cast<std::uint32_t>(text.size()));
    detail::put_u64(p + 16, block_size_);
    h += text;
    unsigned char crc[4];
    detail::put_u32(crc, detail::crc32c(h.data(), h.size()));
    h.append(reinterpret_cast<const char*>(crc), 4);
    return h;
  }

  static std::string new_run_id() {
    std::random_device rd;
    const std::uint64_t v = (std::uint64_t(rd()) << 32) ^ rd() ^
                            static_cast<std::uint64_t>(detail::wall_clock() * 1e6) ^
                            (std::uint64_t(::getpid()) << 40);
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
  }

  static void append_row(std::string& out, std::int64_t step_prev, std::int64_t step,
                         const std::string& name, double D, double S, double Z,
                         std::uint64_t n_filters, std::uint64_t nonfinite) {
    namespace csv = detail::csv;
    csv::put_int(out, step_prev);
    out += ',';
    csv::put_int(out, step);
    out += ',';
    csv::put_field(out, name);
    out += ',';
    csv::put_double(out, D);
    out += ',';
    csv::put_double(out, S);
    out += ',';
    csv::put_double(out, Z);
    out += ',';
    csv::put_int(out, n_filters);
    out += ',';
    csv::put_int(out, nonfinite);
    out += '\n';
  }

  /// float(d) rounded to nearest, without the undefined behaviour of converting a double beyond
  /// the float range: those become FLT_MAX (within half an ulp of it) or an infinity.
  static float to_float(double d) {
    const double top = std::numeric_limits<float>::max();
    const double half_ulp = 0x1p103;  // half the spacing of floats at FLT_MAX
    const float inf = std::numeric_limits<float>::infinity();
    if (d > top) return d - top < half_ulp ? std::numeric_limits<float>::max() : inf;
    if (d < -top) return -top - d < half_ulp ? -std::numeric_limits<float>::max() : -inf;
    return static_cast<float>(d);  // NaN stays NaN
  }

  std::string scalars_event(std::int64_t step, const std::vector<std::array<double, 3>>& dsz) const {
    std::vector<std::pair<std::string, float>> v;
    v.reserve(3 * layers_.size());
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const std::string base = "fevo/" + layers_[k].name + "/";
      v.emplace_back(base + "D", to_float(dsz[k][0]));
      v.emplace_back(base + "S", to_float(dsz[k][1]));
      v.emplace_back(base + "Z", to_float(dsz[k][2]));
    }
    return detail::tb::scalars_event(detail::wall_clock(), step, v);
  }
  std::string scalars_event(std::int64_t step, const std::vector<layer_metrics>& m) const {
    std::vector<std::array<double, 3>> dsz;
    for (const auto& x : m) dsz.push_back({x.D, x.S, x.Z});
    return scalars_event(step, dsz);
  }

  void encode_block(std::int64_t step_prev, std::int64_t step, const std::vector<layer_metrics>& m,
                    const std::vector<filter_results>& per) {
    block_.assign(block_size_, 0);
    unsigned char* p = block_.data();
    detail::put_u32(p, block_magic);
    detail::put_u32(p + 4, static_cast<std::uint32_t>(layers_.size()));
    detail::put_u64(p + 8, static_cast<std::uint64_t>(step_prev));
    detail::put_u64(p + 16, static_cast<std::uint64_t>(step));
    unsigned char* q = p + 24;
    for (const auto& x : m) {
      detail::put_f64(q, x.D);
      detail::put_f64(q + 8, x.S);
      detail::put_f64(q + 16, x.Z);
      detail::put_u64(q + 24, x.nonfinite);
      q += 32;
    }
    for (const auto& f : per)
      for (std::size_t i = 0; i < f.size(); ++i) {
        detail::put_f64(q, f.D[i]);
        detail::put_u64(q + 8, f.changed[i]);
        detail::put_u64(q + 16, f.zero_channels[i]);
        q += 24;
      }
    detail::put_u32(q, detail::crc32c(p, block_size_ - 8));
    detail::put_u32(q + 4, block_end_magic);
  }

  bool block_valid(const unsigned char* p) const {
    return detail::get_u32(p) == block_magic && detail::get_u32(p + 4) == layers_.size() &&
           detail::get_u32(p + block_size_ - 4) == block_end_magic &&
           detail::get_u32(p + block_size_ - 8) == detail::crc32c(p, block_size_ - 8);
  }

  /// Folds a journal block into the summary accumulators.
  void replay_block(const unsigned char* p) {
    const unsigned char* q = p + 24 + 32 * layers_.size();
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const std::uint64_t C = layers_[k].channels();
      for (std::size_t i = 0; i < layers_[k].filters(); ++i, q += 24)
        acc_[first_filter_[k] + i].add(detail::get_f64(q), detail::get_u64(q + 8) == 0,
                                       detail::get_u64(q + 16) == C);
    }
  }

  // ---- a new run ----------------------------------------------------------------------------
  void create() {
    if (detail::path_exists(csv_path_)) {
      // Only a header, or a part of it, or a header and a torn line: nothing was recorded.
      const std::string content = detail::read_file(csv_path_);
      const std::string h = std::string(csv_header) + "\n";
      const bool empty = content.size() <= h.size()
                             ? h.compare(0, content.size(), content) == 0
                             : content.compare(0, h.size(), h) == 0 && content.find('\n', h.size()) == std::string::npos;
      FEVO_EXPECTS(empty, "recorder: '", csv_path_, "' holds rows but '", journal_path_,
                   "' does not exist: not a run this recorder can continue; use another directory");
    }
    detail::write_file_atomic(csv_path_, std::string(csv_header) + "\n");
    detail::make_dirs(state_dir_);
    detail::remove_file(ckpt_path_);
    const std::string header = journal_header(journal_text(new_run_id()));
    detail::write_file_atomic(journal_path_, header);
    journal_header_size_ = header.size();
    run_crc_ = detail::get_u32(reinterpret_cast<const unsigned char*>(header.data()) + header.size() - 4);
    journal_.open(journal_path_, O_RDWR);
    journal_size_ = journal_.size();
    csv_.open(csv_path_, O_RDWR);
    csv_size_ = csv_.size();
    acc_.assign(total_filters_, detail::filter_acc());
    records_ = ck_records_ = 0;
    last_step_.reset();
    if (opts_.tensorboard) create_events_file();
  }

  void create_events_file() {
    char host[256] = {0};
    if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
    std::string h;
    for (const char* c = host; *c; ++c) h += (*c == '/' || *c == ' ') ? '_' : *c;
    const std::string stem = "events.out.tfevents." +
                             std::to_string(static_cast<long long>(detail::wall_clock())) + "." + h;
    std::string path = detail::join_path(opts_.out_dir, stem + ".fevo");
    for (int n = 1; detail::path_exists(path); ++n)
      path = detail::join_path(opts_.out_dir, stem + "-" + std::to_string(n) + ".fevo");
    tb_.open(path, O_RDWR | O_CREAT | O_EXCL, 0666);
    const std::string v = detail::tb::frame(detail::tb::file_version_event(detail::wall_clock()));
    tb_.pwrite_all(v.data(), v.size(), 0);
    tb_size_ = v.size();
    detail::fsync_dir(opts_.out_dir);
  }

  // ---- reopening a run ------------------------------------------------------------------------
  void resume() {
    // Journal header: the run's configuration must be this recorder's.
    journal_.open(journal_path_, O_RDWR);
    const std::uint64_t jsize = journal_.size();
    unsigned char fixed[24];
    FEVO_EXPECTS(journal_.pread_some(fixed, 24, 0) == 24 && std::memcmp(fixed, "FEVOJRNL", 8) == 0,
                 "recorder: '", journal_path_, "' is not a fevo journal");
    FEVO_EXPECTS(detail::get_u32(fixed + 8) == journal_version, "recorder: '", journal_path_,
                 "' has journal version ", detail::get_u32(fixed + 8), ", this fevo reads ", journal_version);
    const std::uint32_t text_len = detail::get_u32(fixed + 12);
    FEVO_EXPECTS(28 + std::uint64_t(text_len) <= jsize, "recorder: '", journal_path_, "' has a truncated header");
    std::string header(28 + text_len, '\0');
    journal_.pread_some(header.data(), header.size(), 0);
    const auto* hp = reinterpret_cast<const unsigned char*>(header.data());
    run_crc_ = detail::get_u32(hp + 24 + text_len);
    FEVO_EXPECTS(detail::crc32c(hp, 24 + text_len) == run_crc_, "recorder: '", journal_path_,
                 "' has a corrupt header (CRC mismatch)");
    check_config(header.substr(24, text_len));
    FEVO_EXPECTS(detail::get_u64(hp + 16) == block_size_, "recorder: '", journal_path_,
                 "' has records of ", detail::get_u64(hp + 16), " bytes, expected ", block_size_);
    journal_header_size_ = header.size();

    // Journal records: steps of each complete one; a torn tail is dropped.
    std::vector<std::int64_t> jsteps;
    const std::uint64_t n_full = (jsize - journal_header_size_) / block_size_;
    block_.resize(block_size_);
    for (std::uint64_t b = 0; b < n_full; ++b) {
      unsigned char h[24];
      journal_.pread_some(h, 24, journal_header_size_ + b * block_size_);
      const bool ok = detail::get_u32(h) == block_magic && detail::get_u32(h + 4) == layers_.size();
      const std::int64_t s = static_cast<std::int64_t>(detail::get_u64(h + 16));
      const std::int64_t sp = static_cast<std::int64_t>(detail::get_u64(h + 8));
      if (!ok || sp >= s || (!jsteps.empty() && s <= jsteps.back())) {
        FEVO_EXPECTS(b + 1 == n_full, "recorder: '", journal_path_, "' is corrupt at record ", b,
                     " (not at its end, so not a torn write)");
        break;
      }
      jsteps.push_back(s);
    }
    if (!jsteps.empty()) {  // the last full record may be torn (bad CRC): check it whole
      journal_.pread_some(block_.data(), block_size_, journal_header_size_ + (jsteps.size() - 1) * block_size_);
      if (!block_valid(block_.data())) jsteps.pop_back();
    }

    // Checkpoint.
    acc_.assign(total_filters_, detail::filter_acc());
    records_ = ck_records_ = 0;
    std::optional<std::int64_t> ck_step;
    if (detail::path_exists(ckpt_path_)) ck_step = read_checkpoint();

    // metrics.csv.
    std::deque<csv_record> kept;
    std::vector<std::pair<std::int64_t, std::uint64_t>> csv_steps;  // step, end offset
    const std::uint64_t csv_start = scan_csv(csv_steps, kept);

    // The last record present in both.
    std::optional<std::int64_t> J = ck_step;
    if (!jsteps.empty() && (!J || jsteps.back() > *J)) J = jsteps.back();
    std::optional<std::int64_t> C = csv_steps.empty() ? std::nullopt : std::optional<std::int64_t>(csv_steps.back().first);
    std::optional<std::int64_t> common;
    if (J && C) common = std::min(*J, *C);
    FEVO_EXPECTS(!ck_step || (common && *common >= *ck_step), "recorder: '", csv_path_,
                 "' lacks records up to step ", *ck_step, " that '", ckpt_path_,
                 "' covers (lost by a system crash without fsync_each_record?); cannot resume");

    // Truncate metrics.csv and the journal after `common`.
    std::uint64_t csv_end = csv_start;
    std::size_t n_csv = 0;
    for (const auto& [s, end] : csv_steps)
      if (common && s <= *common) {
        csv_end = end;
        ++n_csv;
      }
    csv_.open(csv_path_, O_RDWR);
    if (csv_.size() != csv_end) csv_.truncate(csv_end);
    csv_size_ = csv_end;
    std::size_t n_blocks = 0;
    while (n_blocks < jsteps.size() && common && jsteps[n_blocks] <= *common) ++n_blocks;
    journal_size_ = journal_header_size_ + n_blocks * block_size_;
    if (jsize != journal_size_) journal_.truncate(journal_size_);

    // Summaries: the checkpoint, then the journal records after it.
    std::uint64_t replayed = 0;
    for (std::size_t b = 0; b < n_blocks; ++b) {
      if (ck_step && jsteps[b] <= *ck_step) continue;
      journal_.pread_some(block_.data(), block_size_, journal_header_size_ + b * block_size_);
      FEVO_EXPECTS(block_valid(block_.data()), "recorder: '", journal_path_, "' is corrupt at record ", b,
                   " (CRC mismatch, not at its end)");
      replay_block(block_.data());
      ++replayed;
    }
    records_ = ck_records_ + replayed;
    FEVO_EXPECTS(n_csv == records_, "recorder: '", csv_path_, "' holds ", n_csv, " records but '",
                 journal_path_, "' and its checkpoint ", records_, "; cannot resume");
    FEVO_EXPECTS(!opts_.per_filter_series || n_blocks == records_, "recorder: '", journal_path_,
                 "' lacks records of the per-filter series");
    last_step_ = common;
    if (opts_.fsync_each_record) {
      csv_.sync();
      journal_.sync();
    }

    if (opts_.tensorboard) resume_events(common, kept);
  }

  void check_config(const std::string& text) const {
    const std::string key = "run_id ";
    const auto p = text.find("\n" + key);
    FEVO_EXPECTS(p != std::string::npos, "recorder: '", journal_path_, "' has no run_id");
    const auto e = text.find('\n', p + 1);
    const std::string id = text.substr(p + 1 + key.size(), e - (p + 1 + key.size()));
    const std::string mine = journal_text(id);
    if (mine == text) return;
    // Name the first line that differs.
    std::size_t a = 0, b = 0;
    for (;;) {
      const auto ea = text.find('\n', a), eb = mine.find('\n', b);
      const std::string la = text.substr(a, ea == std::string::npos ? std::string::npos : ea - a);
      const std::string lb = mine.substr(b, eb == std::string::npos ? std::string::npos : eb - b);
      if (la != lb || ea == std::string::npos || eb == std::string::npos)
        ::fevo::detail::fail("recorder: the run in '", opts_.out_dir,
                             "' was recorded with another configuration: it has '", la,
                             "' where this recorder has '", lb, "'");
      a = ea + 1;
      b = eb + 1;
    }
  }

  /// Reads metrics.csv: the (step, end offset) of every complete record and the values of the
  /// last few; returns the offset just past the header. A torn tail is left out; damage before the
  /// tail throws.
  std::uint64_t scan_csv(std::vector<std::pair<std::int64_t, std::uint64_t>>& records,
                         std::deque<csv_record>& kept) {
    FEVO_EXPECTS(detail::path_exists(csv_path_), "recorder: '", csv_path_, "' is missing; cannot resume the run");
    detail::file f(csv_path_, O_RDONLY);
    const std::uint64_t size = f.size();
    const std::string header = std::string(csv_header) + "\n";
    std::string head(std::min<std::uint64_t>(size, header.size()), '\0');
    f.pread_some(head.data(), head.size(), 0);
    if (head.size() < header.size()) {
      // Interrupted creation (cannot happen with the atomic create, but harmless to repair).
      FEVO_EXPECTS(header.compare(0, head.size(), head) == 0, "recorder: '", csv_path_,
                   "' does not start with the header ", csv_header);
      detail::file w(csv_path_, O_RDWR);
      w.truncate(0);
      w.pwrite_all(header.data(), header.size(), 0);
      return header.size();
    }
    FEVO_EXPECTS(head == header, "recorder: '", csv_path_, "' does not start with the header ", csv_header);

    const std::size_t L = layers_.size();
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
      FEVO_EXPECTS(line_end >= size, "recorder: '", csv_path_, "' line ", line_no, ": ", what,
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
      const bool parsed = detail::csv::split(line, fields) && fields.size() == 8 &&
                          detail::csv::parse_int(fields[0], sp) && detail::csv::parse_int(fields[1], s) &&
                          detail::csv::parse_double(fields[3], v[0]) &&
                          detail::csv::parse_double(fields[4], v[1]) &&
                          detail::csv::parse_double(fields[5], v[2]) &&
                          detail::csv::parse_int(fields[6], nf) && detail::csv::parse_int(fields[7], nonfinite);
      if (!parsed) {
        tail_or_fail(line_end, "does not parse as a row of 8 fields");
        break;
      }
      const layer_info& want = layers_[in_group];
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
        if (kept.size() > keep_csv_records) kept.pop_front();
        in_group = 0;
      }
    }
    return header.size();
  }

  void resume_events(const std::optional<std::int64_t>& common, const std::deque<csv_record>& kept) {
    std::string newest;
    for (const auto& n : detail::list_dir(opts_.out_dir))
      if (n.rfind("events.out.tfevents.", 0) == 0 && n.size() > 5 && n.compare(n.size() - 5, 5, ".fevo") == 0 &&
          n > newest)
        newest = n;
    if (newest.empty()) {
      create_events_file();  // tensorboard newly enabled: scalars from now on
      return;
    }
    tb_.open(detail::join_path(opts_.out_dir, newest), O_RDWR);
    std::uint64_t valid_end = 0;
    const auto recs = detail::tb::scan(tb_, valid_end);
    std::optional<std::int64_t> last;  // the last scalar step kept
    std::uint64_t keep_end = 0;
    if (!recs.empty() && recs.front().ev.file_version.rfind("brain.Event:", 0) == 0) {
      keep_end = recs.front().end;
      for (const auto& r : recs)
        if (r.ev.has_summary && common && r.ev.step <= *common) {
          keep_end = r.end;
          last = r.ev.step;
        }
    }
    if (keep_end == 0) {  // not even a complete first record: start the file again
      tb_.truncate(0);
      const std::string v = detail::tb::frame(detail::tb::file_version_event(detail::wall_clock()));
      tb_.pwrite_all(v.data(), v.size(), 0);
      keep_end = v.size();
    } else if (tb_.size() != keep_end) {
      tb_.truncate(keep_end);
    }
    tb_size_ = keep_end;
    for (const auto& r : kept)
      if (common && r.step <= *common && (!last || r.step > *last)) {
        const std::string ev = detail::tb::frame(scalars_event(r.step, r.dsz));
        tb_.pwrite_all(ev.data(), ev.size(), tb_size_);
        tb_size_ += ev.size();
      }
    if (opts_.fsync_each_record) tb_.sync();
  }

  // ---- checkpoint ---------------------------------------------------------------------------
  void write_checkpoint() {
    std::vector<unsigned char> b(48 + 48 * total_filters_ + 4);
    unsigned char* p = b.data();
    std::memcpy(p, "FEVOCKPT", 8);
    detail::put_u32(p + 8, 1);
    detail::put_u32(p + 12, run_crc_);
    detail::put_u64(p + 16, static_cast<std::uint64_t>(last_step_.value_or(0)));
    detail::put_u64(p + 24, records_);
    detail::put_u64(p + 32, total_filters_);
    detail::put_u64(p + 40, last_step_ ? 1 : 0);
    unsigned char* q = p + 48;
    for (const auto& a : acc_) {
      detail::put_f64(q, a.sum);
      detail::put_f64(q + 8, a.min);
      detail::put_f64(q + 16, a.max);
      detail::put_u64(q + 24, a.s_zero);
      detail::put_u64(q + 32, a.z_one);
      detail::put_u64(q + 40, a.nan ? 1 : 0);
      q += 48;
    }
    detail::put_u32(q, detail::crc32c(p, b.size() - 4));
    detail::atomic_file f(ckpt_path_);
    f.write(b.data(), b.size());
    f.commit();
    ck_records_ = records_;
  }

  /// Loads the checkpoint into the accumulators; returns the step it covers up to.
  std::optional<std::int64_t> read_checkpoint() {
    const std::string s = detail::read_file(ckpt_path_);
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t want = 48 + 48 * total_filters_ + 4;
    FEVO_EXPECTS(s.size() == want && std::memcmp(p, "FEVOCKPT", 8) == 0 && detail::get_u32(p + 8) == 1 &&
                     detail::get_u32(p + want - 4) == detail::crc32c(p, want - 4),
                 "recorder: '", ckpt_path_, "' is corrupt (written atomically, so not by a crash)");
    FEVO_EXPECTS(detail::get_u32(p + 12) == run_crc_ && detail::get_u64(p + 32) == total_filters_,
                 "recorder: '", ckpt_path_, "' belongs to another run than '", journal_path_, "'");
    records_ = ck_records_ = detail::get_u64(p + 24);
    const unsigned char* q = p + 48;
    for (auto& a : acc_) {
      a.sum = detail::get_f64(q);
      a.min = detail::get_f64(q + 8);
      a.max = detail::get_f64(q + 16);
      a.s_zero = detail::get_u64(q + 24);
      a.z_one = detail::get_u64(q + 32);
      a.nan = detail::get_u64(q + 40) != 0;
      q += 48;
    }
    if (detail::get_u64(p + 40) == 0) return std::nullopt;
    return static_cast<std::int64_t>(detail::get_u64(p + 16));
  }

  // ---- outputs written at close -------------------------------------------------------------
  void write_summary() const {
    // Rows are formatted in chunks of filters, in parallel where OpenMP is enabled (a ResNet-50
    // has 26,560 rows, about 9 ms of number formatting on one core), then written in order.
    constexpr std::size_t chunk_rows = 2048;
    struct chunk {
      std::size_t layer, i0, i1;
    };
    std::vector<chunk> chunks;
    for (std::size_t k = 0; k < layers_.size(); ++k)
      for (std::size_t i0 = 0; i0 < layers_[k].filters(); i0 += chunk_rows)
        chunks.push_back({k, i0, std::min<std::size_t>(layers_[k].filters(), i0 + chunk_rows)});
    std::vector<std::string> text(chunks.size());
    std::string steps;  // the same in every row
    detail::csv::put_int(steps, records_);
    std::exception_ptr failed;
    const long n_chunks = static_cast<long>(chunks.size());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (total_filters_ >= 2 * chunk_rows)
#endif
    for (long c = 0; c < n_chunks; ++c) {
      try {
        format_summary_rows(chunks[std::size_t(c)].layer, chunks[std::size_t(c)].i0,
                            chunks[std::size_t(c)].i1, steps, text[std::size_t(c)]);
      } catch (...) {  // an exception must not leave an OpenMP region
#ifdef _OPENMP
#pragma omp critical(fevo_record_summary)
#endif
        failed = std::current_exception();
      }
    }
    if (failed) std::rethrow_exception(failed);
    detail::atomic_file f(detail::join_path(opts_.out_dir, "filter_summary.csv"));
    f.write(std::string(summary_header) + "\n");
    for (const auto& t : text) f.write(t);
    f.commit();
  }

  /// Appends the summary rows of filters [i0, i1) of layer k to out.
  void format_summary_rows(std::size_t k, std::size_t i0, std::size_t i1, const std::string& steps,
                           std::string& out) const {
    namespace csv = detail::csv;
    const double n = static_cast<double>(records_);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const bool none = records_ == 0;
    std::string name;  // quoted once
    csv::put_field(name, layers_[k].name);
    out.reserve((i1 - i0) * (name.size() + 96));
    for (std::size_t i = i0; i < i1; ++i) {
      const detail::filter_acc& a = acc_[first_filter_[k] + i];
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

  void write_series() {
    const std::string dir = detail::join_path(opts_.out_dir, "series");
    detail::make_dirs(dir);
    const std::uint64_t R = records_;
    FEVO_EXPECTS(journal_size_ == journal_header_size_ + R * block_size_, "recorder: '", journal_path_,
                 "' does not hold every record of the series");
    {
      detail::npy_writer steps(detail::join_path(dir, "steps.npy"), "<i8", {R, 2});
      for (std::uint64_t r = 0; r < R; ++r) {
        unsigned char h[16];
        journal_.pread_some(h, 16, journal_header_size_ + r * block_size_ + 8);
        const std::int64_t v[2] = {static_cast<std::int64_t>(detail::get_u64(h)),
                                   static_cast<std::int64_t>(detail::get_u64(h + 8))};
        steps.write_i64(v, 2);
      }
      steps.commit();
    }
    const auto stems = detail::series_stems(layers_);
    std::string index = "layer,D,S,Z,n_filters\n";
    std::vector<unsigned char> raw;
    std::vector<double> d, s, z;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const std::uint64_t N = layers_[k].filters();
      const double chw = double(layers_[k].filter_size());
      const double C = double(layers_[k].channels());
      const std::string base = detail::join_path(dir, stems[k]);
      detail::npy_writer wd(base + ".D.npy", "<f8", {R, N}), ws(base + ".S.npy", "<f8", {R, N}),
          wz(base + ".Z.npy", "<f8", {R, N});
      raw.resize(24 * N);
      d.resize(N);
      s.resize(N);
      z.resize(N);
      const std::uint64_t off = 24 + 32 * layers_.size() + 24 * first_filter_[k];
      for (std::uint64_t r = 0; r < R; ++r) {
        FEVO_EXPECTS(journal_.pread_some(raw.data(), raw.size(), journal_header_size_ + r * block_size_ + off) ==
                         raw.size(),
                     "recorder: '", journal_path_, "' is shorter than its records");
        for (std::uint64_t i = 0; i < N; ++i) {
          d[i] = detail::get_f64(&raw[24 * i]);
          s[i] = double(detail::get_u64(&raw[24 * i + 8])) / chw;
          z[i] = double(detail::get_u64(&raw[24 * i + 16])) / C;
        }
        wd.write_f64(d.data(), N);
        ws.write_f64(s.data(), N);
        wz.write_f64(z.data(), N);
      }
      wd.commit();
      ws.commit();
      wz.commit();
      detail::csv::put_field(index, layers_[k].name);
      index += "," + stems[k] + ".D.npy," + stems[k] + ".S.npy," + stems[k] + ".Z.npy," + std::to_string(N) + "\n";
    }
    detail::write_file_atomic(detail::join_path(dir, "index.csv"), index);
  }

  recorder_options opts_;
  std::vector<layer_info> layers_;
  std::string dtype_;
  std::vector<std::size_t> first_filter_;
  std::size_t total_filters_ = 0;
  std::size_t block_size_ = 0;
  std::string state_dir_, journal_path_, ckpt_path_, csv_path_;

  detail::file lock_, journal_, csv_, tb_;
  std::uint64_t journal_header_size_ = 0, journal_size_ = 0, csv_size_ = 0, tb_size_ = 0;
  std::uint64_t ck_journal_size_ = 0, ck_records_ = 0;
  std::uint32_t run_crc_ = 0;
  std::vector<unsigned char> block_;
  std::vector<detail::filter_acc> acc_;
  std::uint64_t records_ = 0;
  std::optional<std::int64_t> last_step_;
  bool open_ = false;
  std::string broken_;
};

}  // namespace fevo::record
