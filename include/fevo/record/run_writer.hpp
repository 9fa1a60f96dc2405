// fevo::record::run_writer: the files of a recording run, crash-safe. The recorder
// (<fevo/record/recorder.hpp>) computes the metrics and hands each record to a run_writer; any
// other producer of per-step metrics (e.g. an offline analysis) can use it the same way:
//   run_writer w(options, layers, "f32");  w.open();
//   for each record: w.maybe_compact(); w.write(step_prev, step, metrics, per_filter);
//   w.close();
// (maybe_compact() keeps the journal bounded; without it the journal holds every record until
// close(), which compacts it where a checkpoint is smaller: journal.hpp. A producer that computes
// its last records layer by layer may hand them to summarize_ahead() first, so that the files of
// close() go to disk while it computes.)
//
// ---- Files in out_dir ---------------------------------------------------------------------------
//
// Each file's format is described next to the code that writes it:
// metrics.csv            one row per (record, layer), before write() returns     csv_sink.hpp
// filter_summary.csv     one row per (layer, filter), atomically by close()      series_sink.hpp
// series/                with per_filter_series: D_i, S_i, Z_i of every filter at every record
//                        as .npy, atomically by close()                          series_sink.hpp
// events.out.tfevents.<unix time>.<host>.fevo
//                        with tensorboard: scalars fevo/<layer>/D, /S, /Z per record
//                                                                                tensorboard_sink.hpp
// fevo-state/journal.bin the recorder's journal: every record, CRC-checked       journal.hpp
// fevo-state/summary.ckpt
//                        atomic checkpoint of the per-filter summary accumulators journal.hpp
// The directory itself (its lock, temporary files): run_dir.hpp.
//
// ---- Crash safety -------------------------------------------------------------------------------
//
// Each record is written journal first, then metrics.csv, then the event file; each with one
// positioned write of the whole record, and with fsync when fsync_each_record is set. A record
// that failed to write (an I/O error, reported as fevo::error naming the path) is rolled back
// (the files are truncated to their previous sizes) so the caller may retry it.
//
// The journal is the source of the per-filter summaries and of the series files. Without
// per_filter_series it is compacted: once it holds journal_compact_bytes, the summary
// accumulators are checkpointed and the journal is emptied (journal.hpp).
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

#include "../config.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../detail/tau.hpp"
#include "../error.hpp"
#include "../layer_info.hpp"
#include "../results.hpp"
#include "csv_sink.hpp"
#include "journal.hpp"
#include "run_dir.hpp"
#include "series_sink.hpp"
#include "tensorboard_sink.hpp"

namespace fevo::record {

struct recorder_options {
  std::string out_dir;            ///< created if missing
  double tau = 0;                 ///< the threshold of S and Z (the paper: the initial learning rate)
  bool per_filter_series = false; ///< also write series/<layer>.{D,S,Z}.npy at close
  bool tensorboard = false;       ///< also write TensorBoard scalars to an event file in out_dir
  bool resume = true;             ///< reopen an existing run in out_dir (else: refuse it)
  bool fsync_each_record = false; ///< fsync the journal, metrics.csv and event file per record
  std::uint64_t journal_compact_bytes = std::uint64_t{64} << 20;  ///< see journal.hpp
};

/// A layer as the files describe it (name and extents). The core's fevo::layer_info, under the
/// name fevo::record has always used.
using layer_desc = ::fevo::layer_info;

class run_writer {
 public:
  /// Describes the run; touches no file (open() does).
  run_writer(recorder_options opts, std::vector<layer_info> layers, std::string dtype)
      : opts_(std::move(opts)),
        layers_(std::move(layers)),
        dtype_(std::move(dtype)),
        dir_(opts_.out_dir),
        journal_(opts_.out_dir, dir_.state_dir(), layers_, dtype_, opts_.tau, opts_.per_filter_series),
        csv_(dir_.path_of("metrics.csv")),
        tb_(opts_.out_dir, layers_) {
    FEVO_EXPECTS(!opts_.out_dir.empty(), "recorder: out_dir is empty");
    ::fevo::detail::check_tau(opts_.tau, "recorder: ");
    FEVO_EXPECTS(!layers_.empty(), "recorder: no layer to record (add_layer before start)");
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
  const std::string& metrics_path() const { return csv_.path(); }

  /// Creates out_dir and a new run, or reopens (options().resume) the run it holds, repairing
  /// what a crash left (see the header comment).
  void open() {
    FEVO_EXPECTS(!open_, "recorder: the run in '", opts_.out_dir, "' is already open");
    dir_.lock();
    try {
      dir_.remove_temporaries();
      if (journal_.exists()) {
        FEVO_EXPECTS(opts_.resume, "recorder: '", opts_.out_dir, "' already holds a run (", journal_.path(),
                     "); pass resume = true to continue it, or use another directory");
        resume();
      } else {
        create();
      }
      journal_.mark_checkpoint();
      open_ = true;
      ahead_failed_ = false;
    } catch (...) {
      journal_.reset();
      csv_.reset();
      tb_.reset();
      dir_.unlock();
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

    journal_.encode(step_prev, step, metrics, per_filter);
    const std::string rows = csv_.rows(step_prev, step, layers_, metrics);
    std::string ev;
    if (tb_.is_open()) ev = tb_.event(step, metrics);

    // Journal first, then metrics.csv, then the event file: a record in metrics.csv is always in
    // the journal. Sizes advance only once all three are written.
    const std::uint64_t j0 = journal_.size(), c0 = csv_.size(), t0 = tb_.size();
    const bool fsync = opts_.fsync_each_record;
    try {
      journal_.append(fsync);
      csv_.append(rows, fsync);
      if (tb_.is_open()) tb_.append(ev, fsync);
    } catch (const std::exception& e) {
      rollback(j0, c0, t0, e.what());
      throw;
    }
    journal_.appended();
    csv_.appended(rows.size());
    tb_.appended(ev.size());
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const filter_results& f = per_filter[k];
      for (std::size_t i = 0; i < f.size(); ++i)
        acc_[journal_.first_filter(k) + i].add(f.D[i], f.changed[i] == 0, f.zero_channels[i] == f.channels);
    }
    last_step_ = step;
    ++records_;
  }

  /// Writes the files of close() ahead, while the records that end the run are still being
  /// computed, so that they go to disk meanwhile rather than after them (fevo analyze does this
  /// in its last window): filter_summary.csv and, where close() would write one, the checkpoint.
  /// `pending[r][k]` are the per-filter results of layer k in the r-th of the `pending.size()`
  /// records that will end the run, the last of them at `last_step`, complete for layers [0, k1);
  /// each call goes on from the layer where the last stopped, with no record written in between.
  /// close() keeps the files where the run then ends with exactly those records (the summary
  /// accumulators they were made from are compared with the run's, bit for bit, and the last
  /// step) and every layer was given, and writes them anew otherwise. Nothing of the run changes
  /// here: an I/O error drops what was written ahead (later calls do nothing), and close() writes
  /// the files itself, reporting the error if it recurs. Calls out of order, or results of another
  /// shape than the run's layers, throw fevo::error.
  void summarize_ahead(std::size_t k1, const std::vector<std::vector<filter_results>>& pending,
                       std::int64_t last_step) {
    check_usable();
    FEVO_EXPECTS(!pending.empty(), "recorder: summarize_ahead needs the results of at least one record");
    if (ahead_failed_) return;
    FEVO_EXPECTS(!ahead_ || (ahead_->base_records == records_ && ahead_->records == pending.size() &&
                             ahead_->last_step == last_step),
                 "recorder: summarize_ahead: a record was written, or the pending records changed, since its "
                 "last call");
    const std::size_t k0 = ahead_ ? ahead_->next_layer : 0;
    FEVO_EXPECTS(k1 > k0 && k1 <= layers_.size(), "recorder: summarize_ahead: layers up to ", k1,
                 " after the first ", k0, " of ", layers_.size());
    for (const auto& rec : pending) {
      FEVO_EXPECTS(rec.size() == layers_.size(), "recorder: got results of ", rec.size(), " layers, the run has ",
                   layers_.size());
      for (std::size_t k = k0; k < k1; ++k)
        FEVO_EXPECTS(rec[k].size() == layers_[k].filters(), "recorder: layer '", layers_[k].name, "' has ",
                     layers_[k].filters(), " filters, got results of ", rec[k].size());
    }
    try {
      if (!ahead_)
        ahead_ = std::make_unique<summary_ahead>(opts_.out_dir, records_, pending.size(), last_step, acc_.size());
      summary_ahead& a = *ahead_;
      for (std::size_t k = k0; k < k1; ++k) {  // as write() will add them
        const std::size_t first = journal_.first_filter(k);
        for (std::size_t i = 0; i < layers_[k].filters(); ++i) a.acc[first + i] = acc_[first + i];
        for (const auto& rec : pending) {
          const filter_results& f = rec[k];
          for (std::size_t i = 0; i < f.size(); ++i)
            a.acc[first + i].add(f.D[i], f.changed[i] == 0, f.zero_channels[i] == f.channels);
        }
      }
      a.file.add_layers(layers_, journal_, a.acc, records_ + pending.size(), k0, k1);
      a.file.sync_in_background();
      a.next_layer = k1;
      if (k1 == layers_.size() && !opts_.fsync_each_record &&
          journal_.compaction_pays_after(records_ + pending.size(), pending.size())) {
        a.ck = journal_.begin_compaction(a.acc, records_ + pending.size(), last_step);
        a.ck->sync_in_background();
      }
    } catch (const ::fevo::error&) {  // an I/O error: close() writes the files itself
      ahead_.reset();
      ahead_failed_ = true;
    }
  }

  /// Checkpoints the summaries (and empties the journal, without per_filter_series) once the
  /// journal has grown by journal_compact_bytes since the last checkpoint. The recorder calls it
  /// before each record, so that a failure here never leaves a record half written.
  void maybe_compact() {
    check_usable();
    journal_.maybe_compact(opts_.journal_compact_bytes, acc_, records_, last_step_, opts_.fsync_each_record);
  }

  /// Writes filter_summary.csv (and the series files) atomically, syncs and closes every file and
  /// releases the directory lock. Idempotent; a failed close may be retried.
  void close() {
    if (!open_) return;
    // Where a checkpoint is smaller than the journal's records since the last one, the journal is
    // compacted rather than synced (after metrics.csv, which must hold every record that the
    // checkpoint covers). The files to sync start going to disk while the summary is formatted.
    // The checkpoint is written first and committed last.
    // Files written ahead (summarize_ahead) are kept where they are the run's.
    std::unique_ptr<summary_ahead> ahead = std::move(ahead_);
    if (ahead && !ahead->matches(acc_, records_, last_step_, layers_.size())) ahead.reset();
    std::unique_ptr<detail::atomic_file> ck;
    if (ahead && ahead->ck)
      ck = std::move(ahead->ck);
    else if (!opts_.fsync_each_record && journal_.compaction_pays(records_))
      ck = journal_.begin_compaction(acc_, records_, last_step_);
    else
      journal_.start_writeback();
    csv_.start_writeback();
    tb_.start_writeback();
    if (ahead)
      ahead->file.commit();
    else
      detail::write_filter_summary(opts_.out_dir, layers_, journal_, acc_, records_);
    if (opts_.per_filter_series) detail::write_series(dir_.series_dir(), layers_, journal_, records_);
    if (!ck) journal_.sync();
    csv_.sync();
    if (tb_.is_open()) tb_.sync();
    if (ck) journal_.finish_compaction(*ck, records_);
    journal_.close();
    csv_.close();
    tb_.close();
    dir_.unlock();
    open_ = false;
  }

 private:
  void check_usable() const {
    FEVO_EXPECTS(open_, "recorder: the run in '", opts_.out_dir, "' is not open");
    FEVO_EXPECTS(broken_.empty(), "recorder: '", opts_.out_dir,
                 "' cannot be written after an I/O error whose rollback failed (", broken_,
                 "); reopen the run (resume) to repair it");
  }

  void rollback(std::uint64_t j0, std::uint64_t c0, std::uint64_t t0, const char* why) {
    try {
      journal_.rollback(j0);
      csv_.rollback(c0);
      if (tb_.is_open()) tb_.rollback(t0);
    } catch (const std::exception& e) {
      broken_ = std::string(why) + "; then " + e.what();
    }
  }

  // ---- a new run ----------------------------------------------------------------------------
  void create() {
    csv_.create(journal_.path());
    journal_.create();
    csv_.open();
    acc_.assign(journal_.total_filters(), detail::filter_acc());
    records_ = 0;
    last_step_.reset();
    if (opts_.tensorboard) tb_.create();
  }

  // ---- reopening a run ------------------------------------------------------------------------
  void resume() {
    // Journal: the run's configuration must be this writer's; the steps of its complete records.
    const std::vector<std::int64_t> jsteps = journal_.open_existing();

    // Checkpoint.
    acc_.assign(journal_.total_filters(), detail::filter_acc());
    records_ = 0;
    std::uint64_t ck_records = 0;
    std::optional<std::int64_t> ck_step;
    if (journal_.checkpoint_exists()) ck_step = journal_.read_checkpoint(acc_, ck_records);

    // metrics.csv.
    std::deque<detail::csv_record> kept;
    std::vector<std::pair<std::int64_t, std::uint64_t>> csv_steps;  // step, end offset
    const std::uint64_t csv_start = csv_.scan(layers_, csv_steps, kept);

    // The last record present in both.
    std::optional<std::int64_t> J = ck_step;
    if (!jsteps.empty() && (!J || jsteps.back() > *J)) J = jsteps.back();
    std::optional<std::int64_t> C = csv_steps.empty() ? std::nullopt : std::optional<std::int64_t>(csv_steps.back().first);
    std::optional<std::int64_t> common;
    if (J && C) common = std::min(*J, *C);
    FEVO_EXPECTS(!ck_step || (common && *common >= *ck_step), "recorder: '", csv_.path(),
                 "' lacks records up to step ", *ck_step, " that '", journal_.checkpoint_path(),
                 "' covers (lost by a system crash without fsync_each_record?); cannot resume");

    // Truncate metrics.csv and the journal after `common`.
    std::uint64_t csv_end = csv_start;
    std::size_t n_csv = 0;
    for (const auto& [s, end] : csv_steps)
      if (common && s <= *common) {
        csv_end = end;
        ++n_csv;
      }
    csv_.open_truncated(csv_end);
    std::size_t n_blocks = 0;
    while (n_blocks < jsteps.size() && common && jsteps[n_blocks] <= *common) ++n_blocks;
    journal_.keep_records(n_blocks);

    // Summaries: the checkpoint, then the journal records after it.
    records_ = ck_records + journal_.replay(jsteps, n_blocks, ck_step, acc_);
    FEVO_EXPECTS(n_csv == records_, "recorder: '", csv_.path(), "' holds ", n_csv, " records but '",
                 journal_.path(), "' and its checkpoint ", records_, "; cannot resume");
    FEVO_EXPECTS(!opts_.per_filter_series || n_blocks == records_, "recorder: '", journal_.path(),
                 "' lacks records of the per-filter series");
    last_step_ = common;
    if (opts_.fsync_each_record) {
      csv_.sync();
      journal_.sync();
    }

    if (opts_.tensorboard) tb_.resume(common, kept, opts_.fsync_each_record);
  }

  /// The files of close() written ahead of the last records (summarize_ahead).
  struct summary_ahead {
    summary_ahead(const std::string& out_dir, std::uint64_t base, std::size_t n, std::int64_t step,
                  std::size_t filters)
        : file(out_dir), base_records(base), records(n), last_step(step), acc(filters) {}
    /// Whether the files are the run's: every layer given, the run ended with the pending
    /// records, and the accumulators they came from are the run's, bit for bit.
    bool matches(const std::vector<detail::filter_acc>& run, std::uint64_t run_records,
                 const std::optional<std::int64_t>& run_last_step, std::size_t layers) const {
      if (next_layer != layers || run_records != base_records + records || run_last_step != last_step ||
          run.size() != acc.size())
        return false;
      const auto same = [](double x, double y) { return std::memcmp(&x, &y, sizeof x) == 0; };
      for (std::size_t i = 0; i < acc.size(); ++i) {
        const detail::filter_acc &x = acc[i], &y = run[i];
        if (!same(x.sum, y.sum) || !same(x.min, y.min) || !same(x.max, y.max) || x.s_zero != y.s_zero ||
            x.z_one != y.z_one || x.nan != y.nan)
          return false;
      }
      return true;
    }
    detail::summary_csv file;                  ///< filter_summary.csv
    std::unique_ptr<detail::atomic_file> ck;   ///< the checkpoint, where close() would write one
    std::uint64_t base_records;                ///< records in the run when it was started
    std::size_t records;                       ///< records pending then
    std::int64_t last_step;                    ///< the step of the last of them
    std::size_t next_layer = 0;                ///< layers [0, next_layer) are in the file
    std::vector<detail::filter_acc> acc;
  };

  recorder_options opts_;
  std::vector<layer_info> layers_;
  std::string dtype_;
  detail::run_dir dir_;
  detail::journal journal_;
  detail::csv_sink csv_;
  detail::tensorboard_sink tb_;
  std::vector<detail::filter_acc> acc_;
  std::uint64_t records_ = 0;
  std::optional<std::int64_t> last_step_;
  bool open_ = false;
  std::string broken_;
  std::unique_ptr<summary_ahead> ahead_;
  bool ahead_failed_ = false;  ///< summarize_ahead met an I/O error in this session
};

}  // namespace fevo::record
