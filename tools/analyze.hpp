// fevo analyze: what its run in one process (analyze.cpp) and its run over the ranks of an MPI
// job (analyze_mpi.cpp) share: the options, the layer selection, the backends, the checks every
// run starts with, the output directory and the summaries.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include <fevo/fevo.hpp>
#include <fevo/io/snapshot.hpp>
#include <fevo/record/run_writer.hpp>

#include "world.hpp"

namespace fevo_cli {

namespace io = fevo::io;
using io::snapshot;

// ---- layer selection ------------------------------------------------------------------------------

struct selection {
  std::vector<std::string> patterns;  // fnmatch patterns; empty: every candidate
  io::layout lay = io::layout::oihw;
  bool include_2d = false;
};

/// Why a tensor is not analysed, or "" when it is.
std::string why_not(const snapshot::entry& e, const selection& sel);
/// "[2, 3, 4]"
std::string shape_text(const std::vector<std::uint64_t>& s);

// ---- backends -----------------------------------------------------------------------------------

enum class backend { seq, cpu, thrust, cuda };

/// The metrics of `pairs` (and their per-filter results) on backend `b`; defined for fevo::half,
/// fevo::bfloat16, float and double.
template <class T>
std::vector<fevo::layer_metrics> compute_with(backend b, const std::vector<fevo::layer_pair<T>>& pairs,
                                              double tau, std::vector<fevo::filter_results>& per);

// ---- progress -----------------------------------------------------------------------------------

class progress {
 public:
  /// `show`: print the progress line when stderr is a terminal (rank 0 of an MPI run alone).
  explicit progress(std::size_t total, bool show = true)
      : total_(total), tty_(show && ::isatty(STDERR_FILENO) == 1) {}
  void step(std::size_t done, double bytes) {
    bytes_ += bytes;
    if (!tty_) return;
    const double s = seconds();
    const double left = done ? s / double(done) * double(total_ - done) : 0;
    std::fprintf(stderr, "\rfevo analyze: %zu/%zu snapshot pairs, %.2f GB/s, %.0f s left   ", done,
                 total_, s > 0 ? bytes_ / s / 1e9 : 0.0, left);
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  double bytes() const { return bytes_; }

 private:
  std::size_t total_;
  bool tty_;
  double bytes_ = 0;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};
// ---- analyze ------------------------------------------------------------------------------------

struct analyze_options {
  std::vector<std::string> inputs;
  double tau = -1;
  std::string out;
  std::string backend_name = "cpu";
  std::string reference = "prev";
  bool per_filter_series = false;
  bool tensorboard = false;
  bool resume = false;     ///< continue the run --out holds (a killed one)
  bool overwrite = false;  ///< replace the run --out holds
  bool report_io = false;  ///< bytes read and GB/s per rank at the end
  int threads = 0;         ///< 0: OpenMP's default
  selection sel;
};

/// Pairs computed together (see analyze): enough to read a shared snapshot once for several pairs,
/// few enough that the window's layer chunks stay large.
constexpr std::size_t stream_window = 4;

/// One pair of snapshots of the series.
struct pair_job {
  std::shared_ptr<const snapshot> prev, next;
  std::int64_t step_prev, step;
};

/// The backend calls of a window: for each element type in turn, one compute_with call over every
/// pair of `jobs` and every item of `items` whose layer (layer_of(item), an index into `layers`)
/// has that type, its views cut by slice(item, view); done(pair, item, metrics, per_filter) takes
/// each result. Items are whole layers (the run in one process) or filter ranges of layers (the
/// shares of an MPI run).
template <class LayerOf, class Slice, class Done>
void compute_by_type(backend b, const std::vector<pair_job>& jobs, const std::vector<snapshot::entry>& layers,
                     const std::vector<std::size_t>& items, const analyze_options& o, LayerOf layer_of,
                     Slice slice, Done done) {
  for (io::dtype t : {io::dtype::f16, io::dtype::bf16, io::dtype::f32, io::dtype::f64}) {
    std::vector<std::size_t> idx;
    for (std::size_t q : items)
      if (layers[layer_of(q)].type == t) idx.push_back(q);
    if (idx.empty()) continue;
    io::visit_element(t, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      std::deque<std::vector<T>> scratch;  // stable: views may point into it
      std::vector<fevo::layer_pair<T>> group;
      for (const auto& job : jobs)
        for (std::size_t q : idx) {
          const std::string& name = layers[layer_of(q)].name;
          scratch.emplace_back();
          const auto pv = job.prev->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          scratch.emplace_back();
          const auto nv = job.next->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          group.push_back({name, slice(q, pv), slice(q, nv)});
        }
      std::vector<fevo::filter_results> per;
      const auto m = compute_with(b, group, o.tau, per);
      std::size_t g = 0;
      for (std::size_t p = 0; p < jobs.size(); ++p)
        for (std::size_t q : idx) {
          done(p, q, m[g], per[g]);
          ++g;
        }
      return 0;
    });
  }
}

/// Requires every chosen layer in `next` with the dtype and shape it has in `first`.
void check_layers(const snapshot::header& next, const snapshot::header& first,
                  const std::vector<snapshot::entry>& layers);

/// The backend asked for, after the checks of the options every run starts with (threads,
/// --resume with --overwrite, tau); sets the OpenMP threads.
backend setup(const analyze_options& o);

/// The series, the --reference step and the index of the snapshot the layers are chosen in (the
/// first, or the reference).
struct series_plan {
  std::vector<io::series_item> series;
  std::optional<std::int64_t> ref_step;
  std::size_t first = 0;
};

/// With `headers`: each snapshot's header too, in the order of the series (io::make_series).
series_plan plan_series(const analyze_options& o, std::vector<snapshot::header>* headers = nullptr);

/// The layers analysed: the tensors of `base` that the selection takes (fevo::error, listing the
/// candidates, when none).
std::vector<snapshot::entry> choose_layers(const snapshot::header& base, const selection& sel);

/// The layers as the run's files describe them, and their dtypes ("f32,bf16"); checks tau in each
/// layer's compute type.
void describe(const std::vector<snapshot::entry>& layers, const analyze_options& o,
              std::vector<fevo::layer_info>& descs, std::string& dtypes);

/// The files a run of the recorder writes in its directory (docs/cli.md, "Output files"), which
/// --overwrite removes: nothing else in the directory is touched.
void remove_run(const std::filesystem::path& out);

/// The output directory of a run: a new run, or (--resume) the run it holds, or (--overwrite) a
/// new run in its place; and what to remove when the run fails.
struct output_dir {
  std::filesystem::path out;
  bool holds_run = false, created = false;
  fevo::record::recorder_options ro;

  explicit output_dir(const analyze_options& o) : out(o.out) {
    namespace fs = std::filesystem;
    holds_run = fs::exists(out / "fevo-state");
    FEVO_EXPECTS(!holds_run || o.resume || o.overwrite, "--out ", o.out,
                 ": the directory already holds a run; --resume continues it (after a kill), --overwrite "
                 "replaces it, or choose another directory");
    FEVO_EXPECTS(!fs::exists(out) || fs::is_directory(out), "--out ", o.out, ": exists and is not a directory");
    if (holds_run && o.overwrite) remove_run(out);
    created = !fs::exists(out);  // removed again if the run fails
    ro.out_dir = o.out;
    ro.tau = o.tau;
    ro.per_filter_series = o.per_filter_series;
    ro.tensorboard = o.tensorboard;
    ro.resume = o.resume;
  }
  /// After a failure: nothing is left of a new run that did not complete: its files, and the
  /// directory if this run made it. (A resumed run stays as it was, to be resumed again.)
  void clean_up(const analyze_options& o) const noexcept {
    std::error_code ignored;
    if (created) {
      std::filesystem::remove_all(out, ignored);
    } else if (!(holds_run && o.resume)) {
      try {
        remove_run(out);
      } catch (const std::exception&) {  // the run's own error is the one to report
      }
    }
  }
};

/// The summary line of a run that succeeded.
void print_summary(const analyze_options& o, std::size_t done, std::size_t skipped, std::size_t layers, double bytes,
                   double secs);

/// What one process read (--report-io): its bytes of tensor data and the seconds it spent
/// computing (reading the pages and folding them; not waiting for other ranks).
struct io_report {
  std::uint64_t bytes = 0;
  double busy = 0;
  std::size_t tensors = 0, split = 0;  ///< layers (or parts of layers) it held, and how many were parts
};

void print_io_report(const std::vector<io_report>& ranks, double wall);

/// One process: every input checked, then the pairs computed in windows, then the summaries.
int analyze_single(const analyze_options& o);

/// The ranks of an MPI job: the layers cut into one share per rank, rank 0 writing the run
/// (analyze_mpi.cpp).
int analyze_distributed(const analyze_options& o, const world& w);

inline int analyze(const analyze_options& o, const world& w) {
  return w.mpi() ? analyze_distributed(o, w) : analyze_single(o);
}

}  // namespace fevo_cli
