// The recorder's journal and checkpoint (fevo-state/ of a run directory): the source of the
// per-filter summaries and of the series files, and what makes a run resumable.
//
// fevo-state/journal.bin  Append-only binary journal. Per record: step_prev, step, D, S, Z,
//                         nonfinite of every layer and D_i, changed_i, zero_channels_i of every
//                         filter (24 bytes per filter per record), with a CRC32C per record.
// fevo-state/summary.ckpt Atomic checkpoint of the per-filter summary accumulators.
//
// Compaction. Without per_filter_series, once the journal has grown by journal_compact_bytes
// since the last checkpoint, the summary accumulators are checkpointed atomically (summary.ckpt)
// and the journal is emptied; so does the writer's close() (without fsync_each_record) where the
// records since the last checkpoint take more bytes than a checkpoint (compaction_pays). With
// per_filter_series the journal is kept whole (it is the series) and checkpoints only shorten the
// replay when a run is reopened. Disk: 24 bytes per filter per record with per_filter_series, at
// most about journal_compact_bytes without.
//
// Layout, all little-endian:
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
//
// After a crash, a torn last record (short, or its CRC does not match) is left out when the
// journal is reopened; a damaged record before the last is an error (not a torn write).
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../detail/atomic_file.hpp"
#include "../detail/little_endian.hpp"
#include "../detail/posix_file.hpp"
#include "../error.hpp"
#include "../layer_info.hpp"
#include "../results.hpp"
#include "detail/crc32c.hpp"
#include "detail/csv.hpp"

namespace fevo::record::detail {

using ::fevo::detail::atomic_file;
using ::fevo::detail::file;
using ::fevo::detail::get_f64;
using ::fevo::detail::get_u32;
using ::fevo::detail::get_u64;
using ::fevo::detail::join_path;
using ::fevo::detail::make_dirs;
using ::fevo::detail::path_exists;
using ::fevo::detail::put_f64;
using ::fevo::detail::put_u32;
using ::fevo::detail::put_u64;
using ::fevo::detail::read_file;
using ::fevo::detail::remove_file;
using ::fevo::detail::write_file_atomic;

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

/// journal.bin and summary.ckpt of one run (see the file comment).
class journal {
 public:
  /// The journal of a run with these layers and configuration; touches no file. `out_dir` names
  /// the run in messages.
  journal(std::string out_dir, const std::string& state_dir, std::vector<layer_info> layers,
          std::string dtype, double tau, bool per_filter_series)
      : out_dir_(std::move(out_dir)),
        state_dir_(state_dir),
        path_(join_path(state_dir, "journal.bin")),
        ckpt_path_(join_path(state_dir, "summary.ckpt")),
        layers_(std::move(layers)),
        dtype_(std::move(dtype)),
        tau_(tau),
        per_filter_series_(per_filter_series) {
    std::size_t total = 0;
    for (const auto& l : layers_) {
      first_filter_.push_back(total);
      total += l.filters();
    }
    total_filters_ = total;
    block_size_ = 24 + 32 * layers_.size() + 24 * total_filters_ + 8;
  }

  const std::string& path() const { return path_; }
  const std::string& checkpoint_path() const { return ckpt_path_; }
  bool exists() const { return path_exists(path_); }
  /// Filters of all layers (F), and the index of layer k's first filter among them.
  std::size_t total_filters() const { return total_filters_; }
  std::size_t first_filter(std::size_t k) const { return first_filter_[k]; }
  /// Bytes of one record.
  std::size_t block_size() const { return block_size_; }
  /// Offset in a record of layer k's per-filter data (24 bytes per filter).
  std::size_t filter_offset(std::size_t k) const { return 24 + 32 * layers_.size() + 24 * first_filter_[k]; }
  /// Bytes of the journal (header and records).
  std::uint64_t size() const { return size_; }
  /// Whether the journal holds exactly `records` records.
  bool holds(std::uint64_t records) const { return size_ == header_size_ + records * block_size_; }
  /// Reads n bytes at `offset` within record r; returns how many were read.
  std::size_t read_record(std::uint64_t r, std::size_t offset, void* out, std::size_t n) const {
    return f_.pread_some(out, n, header_size_ + r * block_size_ + offset);
  }

  // ---- a new run ----------------------------------------------------------------------------

  /// Writes a new journal (the header, with a new run_id) atomically, removes an old checkpoint
  /// and opens the journal.
  void create() {
    make_dirs(state_dir_);
    remove_file(ckpt_path_);
    const std::string header = header_bytes(text(new_run_id()));
    write_file_atomic(path_, header);
    header_size_ = header.size();
    run_crc_ = get_u32(reinterpret_cast<const unsigned char*>(header.data()) + header.size() - 4);
    f_.open(path_, O_RDWR);
    size_ = f_.size();
    ck_records_ = 0;
  }

  // ---- reopening a run ----------------------------------------------------------------------

  /// Opens the journal of an existing run and checks that it was recorded with this journal's
  /// layers and configuration. Returns the steps of its complete records (a torn last record is
  /// left out; damage before it throws). The journal keeps its size until keep_records().
  std::vector<std::int64_t> open_existing() {
    ck_records_ = 0;
    f_.open(path_, O_RDWR);
    const std::uint64_t jsize = f_.size();
    file_size_ = jsize;
    unsigned char fixed[24];
    FEVO_EXPECTS(f_.pread_some(fixed, 24, 0) == 24 && std::memcmp(fixed, "FEVOJRNL", 8) == 0,
                 "recorder: '", path_, "' is not a fevo journal");
    FEVO_EXPECTS(get_u32(fixed + 8) == version, "recorder: '", path_, "' has journal version ",
                 get_u32(fixed + 8), ", this fevo reads ", version);
    const std::uint32_t text_len = get_u32(fixed + 12);
    FEVO_EXPECTS(28 + std::uint64_t(text_len) <= jsize, "recorder: '", path_, "' has a truncated header");
    std::string header(28 + text_len, '\0');
    f_.pread_some(header.data(), header.size(), 0);
    const auto* hp = reinterpret_cast<const unsigned char*>(header.data());
    run_crc_ = get_u32(hp + 24 + text_len);
    FEVO_EXPECTS(crc32c(hp, 24 + text_len) == run_crc_, "recorder: '", path_,
                 "' has a corrupt header (CRC mismatch)");
    check_config(header.substr(24, text_len));
    FEVO_EXPECTS(get_u64(hp + 16) == block_size_, "recorder: '", path_, "' has records of ",
                 get_u64(hp + 16), " bytes, expected ", block_size_);
    header_size_ = header.size();

    std::vector<std::int64_t> jsteps;
    const std::uint64_t n_full = (jsize - header_size_) / block_size_;
    block_.resize(block_size_);
    for (std::uint64_t b = 0; b < n_full; ++b) {
      unsigned char h[24];
      f_.pread_some(h, 24, header_size_ + b * block_size_);
      const bool ok = get_u32(h) == block_magic && get_u32(h + 4) == layers_.size();
      const std::int64_t s = static_cast<std::int64_t>(get_u64(h + 16));
      const std::int64_t sp = static_cast<std::int64_t>(get_u64(h + 8));
      if (!ok || sp >= s || (!jsteps.empty() && s <= jsteps.back())) {
        FEVO_EXPECTS(b + 1 == n_full, "recorder: '", path_, "' is corrupt at record ", b,
                     " (not at its end, so not a torn write)");
        break;
      }
      jsteps.push_back(s);
    }
    if (!jsteps.empty()) {  // the last full record may be torn (bad CRC): check it whole
      f_.pread_some(block_.data(), block_size_, header_size_ + (jsteps.size() - 1) * block_size_);
      if (!block_valid(block_.data())) jsteps.pop_back();
    }
    return jsteps;
  }

  /// Keeps the first n records of the journal and truncates any later data.
  void keep_records(std::size_t n) {
    size_ = header_size_ + n * block_size_;
    if (file_size_ != size_) f_.truncate(size_);
  }

  /// Folds records [0, n) into the accumulators, skipping those whose step (jsteps) is at or
  /// before `after` (what the checkpoint covers); returns how many were folded.
  std::uint64_t replay(const std::vector<std::int64_t>& jsteps, std::size_t n,
                       const std::optional<std::int64_t>& after, std::vector<filter_acc>& acc) {
    std::uint64_t replayed = 0;
    for (std::size_t b = 0; b < n; ++b) {
      if (after && jsteps[b] <= *after) continue;
      f_.pread_some(block_.data(), block_size_, header_size_ + b * block_size_);
      FEVO_EXPECTS(block_valid(block_.data()), "recorder: '", path_, "' is corrupt at record ", b,
                   " (CRC mismatch, not at its end)");
      replay_block(block_.data(), acc);
      ++replayed;
    }
    return replayed;
  }

  // ---- records ------------------------------------------------------------------------------

  /// Encodes one record; append() writes it.
  void encode(std::int64_t step_prev, std::int64_t step, const std::vector<layer_metrics>& m,
              const std::vector<filter_results>& per) {
    block_.assign(block_size_, 0);
    unsigned char* p = block_.data();
    put_u32(p, block_magic);
    put_u32(p + 4, static_cast<std::uint32_t>(layers_.size()));
    put_u64(p + 8, static_cast<std::uint64_t>(step_prev));
    put_u64(p + 16, static_cast<std::uint64_t>(step));
    unsigned char* q = p + 24;
    for (const auto& x : m) {
      put_f64(q, x.D);
      put_f64(q + 8, x.S);
      put_f64(q + 16, x.Z);
      put_u64(q + 24, x.nonfinite);
      q += 32;
    }
    for (const auto& f : per) {
      const double* d = f.D.data();
      const auto* changed = f.changed.data();
      const auto* zero = f.zero_channels.data();
      for (std::size_t i = 0, n = f.size(); i < n; ++i) {
        put_f64(q, d[i]);
        put_u64(q + 8, changed[i]);
        put_u64(q + 16, zero[i]);
        q += 24;
      }
    }
    put_u32(q, crc32c(p, block_size_ - 8));
    put_u32(q + 4, block_end_magic);
  }

  /// Writes the encoded record at the end of the journal (one positioned write; fsync when
  /// asked). On an error the journal's size is unchanged; rollback() removes what was written.
  void append(bool fsync) {
    f_.pwrite_all(block_.data(), block_.size(), size_);
    if (fsync) f_.sync();
  }
  /// Counts the record append() wrote (once every file of the record is written).
  void appended() { size_ += block_.size(); }
  /// Cuts the journal back to `size` bytes (its size before a failed record).
  void rollback(std::uint64_t size) { f_.truncate(size); }

  // ---- compaction ---------------------------------------------------------------------------

  /// Where the journal stands at the last checkpoint (or at opening).
  void mark_checkpoint() { ck_size_ = size_; }

  /// Checkpoints the accumulators (and, unless the journal is kept whole, empties the journal)
  /// once the journal has grown by `compact_bytes` since the last checkpoint and holds records
  /// that the checkpoint lacks.
  void maybe_compact(std::uint64_t compact_bytes, const std::vector<filter_acc>& acc, std::uint64_t records,
                     const std::optional<std::int64_t>& last_step, bool fsync) {
    if (size_ - ck_size_ < compact_bytes || records == ck_records_) return;
    write_checkpoint(acc, records, last_step);
    if (!per_filter_series_) {
      f_.truncate(header_size_);
      size_ = header_size_;
      if (fsync) f_.sync();
    }
    ck_size_ = size_;
  }

  /// At close: whether checkpointing the accumulators and emptying the journal puts fewer bytes
  /// on disk than syncing the records written since the last checkpoint (only where the journal
  /// is not kept whole). A ResNet-50 run of 15 records: a 1.3 MB checkpoint instead of 9.6 MB of
  /// journal, whose sync the command's close waited on.
  bool compaction_pays(std::uint64_t records) const { return compaction_pays_after(records, 0); }
  /// compaction_pays(records) once `more` records are appended to the journal as it is now.
  bool compaction_pays_after(std::uint64_t records, std::uint64_t more) const {
    return !per_filter_series_ && records != ck_records_ && size_ + more * block_size_ - ck_size_ > checkpoint_bytes();
  }

  /// The first half of a compaction at close (compaction_pays()): the checkpoint of the
  /// accumulators written to its temporary file and going to disk while the caller does the rest
  /// of its close; finish_compaction() puts it in place and empties the journal.
  std::unique_ptr<atomic_file> begin_compaction(const std::vector<filter_acc>& acc, std::uint64_t records,
                                                const std::optional<std::int64_t>& last_step) const {
    auto f = std::make_unique<atomic_file>(ckpt_path_);
    const std::vector<unsigned char> b = checkpoint(acc, records, last_step);
    f->write(b.data(), b.size());
    f->start_writeback();
    return f;
  }
  /// Commits the checkpoint of begin_compaction() (covering `records`), then empties the journal
  /// and syncs it.
  void finish_compaction(atomic_file& ck, std::uint64_t records) {
    ck.commit();
    ck_records_ = records;
    f_.truncate(header_size_);
    size_ = header_size_;
    f_.sync();
    ck_size_ = size_;
  }

  bool checkpoint_exists() const { return path_exists(ckpt_path_); }

  /// Loads the checkpoint into the accumulators and `records`; returns the step it covers up to.
  std::optional<std::int64_t> read_checkpoint(std::vector<filter_acc>& acc, std::uint64_t& records) {
    const std::string s = read_file(ckpt_path_);
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t want = 48 + 48 * total_filters_ + 4;
    FEVO_EXPECTS(s.size() == want && std::memcmp(p, "FEVOCKPT", 8) == 0 && get_u32(p + 8) == 1 &&
                     get_u32(p + want - 4) == crc32c(p, want - 4),
                 "recorder: '", ckpt_path_, "' is corrupt (written atomically, so not by a crash)");
    FEVO_EXPECTS(get_u32(p + 12) == run_crc_ && get_u64(p + 32) == total_filters_, "recorder: '",
                 ckpt_path_, "' belongs to another run than '", path_, "'");
    records = ck_records_ = get_u64(p + 24);
    const unsigned char* q = p + 48;
    for (auto& a : acc) {
      a.sum = get_f64(q);
      a.min = get_f64(q + 8);
      a.max = get_f64(q + 16);
      a.s_zero = get_u64(q + 24);
      a.z_one = get_u64(q + 32);
      a.nan = get_u64(q + 40) != 0;
      q += 48;
    }
    if (get_u64(p + 40) == 0) return std::nullopt;
    return static_cast<std::int64_t>(get_u64(p + 16));
  }

  // ---- files --------------------------------------------------------------------------------

  void start_writeback() noexcept { f_.start_writeback(); }
  void sync() { f_.sync(); }
  void close() { f_.close(); }
  /// Closes without reporting errors (after a failed open).
  void reset() noexcept { f_ = file(); }

 private:
  static constexpr std::uint32_t block_magic = 0x42525646u;      // "FVRB"
  static constexpr std::uint32_t block_end_magic = 0x45525646u;  // "FVRE"
  static constexpr std::uint32_t version = 1;

  /// The header's text (see the file comment).
  std::string text(const std::string& run_id) const {
    std::string t = "fevo recorder journal\nrun_id " + run_id + "\ndtype " + dtype_ + "\ntau ";
    csv::put_double(t, tau_);
    t += "\nper_filter_series ";
    t += per_filter_series_ ? "1" : "0";
    t += "\nlayers " + std::to_string(layers_.size()) + "\n";
    for (const auto& l : layers_)
      t += "layer " + std::to_string(l.extents[0]) + " " + std::to_string(l.extents[1]) + " " +
           std::to_string(l.extents[2]) + " " + std::to_string(l.extents[3]) + " " + l.name + "\n";
    return t;
  }

  std::string header_bytes(const std::string& text) const {
    std::string h(24, '\0');
    auto* p = reinterpret_cast<unsigned char*>(h.data());
    std::memcpy(p, "FEVOJRNL", 8);
    put_u32(p + 8, version);
    put_u32(p + 12, static_cast<std::uint32_t>(text.size()));
    put_u64(p + 16, block_size_);
    h += text;
    unsigned char crc[4];
    put_u32(crc, crc32c(h.data(), h.size()));
    h.append(reinterpret_cast<const char*>(crc), 4);
    return h;
  }

  static std::string new_run_id() {
    using namespace std::chrono;
    const double now = duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
    std::random_device rd;
    const std::uint64_t v = (std::uint64_t(rd()) << 32) ^ rd() ^ static_cast<std::uint64_t>(now * 1e6) ^
                            (std::uint64_t(::getpid()) << 40);
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
  }

  /// Requires the recorded configuration `text` to be this journal's (but for the run_id).
  void check_config(const std::string& recorded) const {
    const std::string key = "run_id ";
    const auto p = recorded.find("\n" + key);
    FEVO_EXPECTS(p != std::string::npos, "recorder: '", path_, "' has no run_id");
    const auto e = recorded.find('\n', p + 1);
    const std::string id = recorded.substr(p + 1 + key.size(), e - (p + 1 + key.size()));
    const std::string mine = text(id);
    if (mine == recorded) return;
    // Name the first line that differs.
    std::size_t a = 0, b = 0;
    for (;;) {
      const auto ea = recorded.find('\n', a), eb = mine.find('\n', b);
      const std::string la = recorded.substr(a, ea == std::string::npos ? std::string::npos : ea - a);
      const std::string lb = mine.substr(b, eb == std::string::npos ? std::string::npos : eb - b);
      if (la != lb || ea == std::string::npos || eb == std::string::npos)
        ::fevo::detail::fail("recorder: the run in '", out_dir_,
                             "' was recorded with another configuration: it has '", la,
                             "' where this recorder has '", lb, "'");
      a = ea + 1;
      b = eb + 1;
    }
  }

  bool block_valid(const unsigned char* p) const {
    return get_u32(p) == block_magic && get_u32(p + 4) == layers_.size() &&
           get_u32(p + block_size_ - 4) == block_end_magic &&
           get_u32(p + block_size_ - 8) == crc32c(p, block_size_ - 8);
  }

  /// Folds a record into the summary accumulators.
  void replay_block(const unsigned char* p, std::vector<filter_acc>& acc) const {
    const unsigned char* q = p + 24 + 32 * layers_.size();
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const std::uint64_t C = layers_[k].channels();
      for (std::size_t i = 0; i < layers_[k].filters(); ++i, q += 24)
        acc[first_filter_[k] + i].add(get_f64(q), get_u64(q + 8) == 0, get_u64(q + 16) == C);
    }
  }

  std::uint64_t checkpoint_bytes() const { return 48 + 48 * total_filters_ + 4; }

  void write_checkpoint(const std::vector<filter_acc>& acc, std::uint64_t records,
                        const std::optional<std::int64_t>& last_step) {
    const std::vector<unsigned char> b = checkpoint(acc, records, last_step);
    atomic_file f(ckpt_path_);
    f.write(b.data(), b.size());
    f.commit();
    ck_records_ = records;
  }

  /// summary.ckpt's bytes (see the file comment).
  std::vector<unsigned char> checkpoint(const std::vector<filter_acc>& acc, std::uint64_t records,
                                        const std::optional<std::int64_t>& last_step) const {
    std::vector<unsigned char> b(checkpoint_bytes());
    unsigned char* p = b.data();
    std::memcpy(p, "FEVOCKPT", 8);
    put_u32(p + 8, 1);
    put_u32(p + 12, run_crc_);
    put_u64(p + 16, static_cast<std::uint64_t>(last_step.value_or(0)));
    put_u64(p + 24, records);
    put_u64(p + 32, total_filters_);
    put_u64(p + 40, last_step ? 1 : 0);
    unsigned char* q = p + 48;
    for (const auto& a : acc) {
      put_f64(q, a.sum);
      put_f64(q + 8, a.min);
      put_f64(q + 16, a.max);
      put_u64(q + 24, a.s_zero);
      put_u64(q + 32, a.z_one);
      put_u64(q + 40, a.nan ? 1 : 0);
      q += 48;
    }
    put_u32(q, crc32c(p, b.size() - 4));
    return b;
  }

  std::string out_dir_, state_dir_, path_, ckpt_path_;
  std::vector<layer_info> layers_;
  std::string dtype_;
  double tau_;
  bool per_filter_series_;
  std::vector<std::size_t> first_filter_;
  std::size_t total_filters_ = 0;
  std::size_t block_size_ = 0;

  file f_;
  std::uint64_t header_size_ = 0, size_ = 0, file_size_ = 0;
  std::uint64_t ck_size_ = 0, ck_records_ = 0;
  std::uint32_t run_crc_ = 0;
  std::vector<unsigned char> block_;
};

}  // namespace fevo::record::detail
