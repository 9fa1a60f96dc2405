// fevo, the command-line tool.
//
//   fevo analyze SNAPSHOTS... --tau T --out DIR [--backend seq|cpu|thrust|cuda] [--layers PATTERN]
//                [--reference prev|STEP] [--per-filter-series] [--tensorboard]
//                [--layout oihw|hwio] [--include-2d] [--threads N] [--resume | --overwrite]
//                [--report-io]
//   mpirun -np K fevo analyze ...     (or srun): the same files, the work spread over K processes
//   fevo inspect FILE [--layout oihw|hwio] [--layers PATTERN] [--include-2d]
//
// Exit status 0 on success; 2 on bad input or usage, with one line on stderr that names the file,
// the tensor and the problem. Every input (each snapshot's header, the layers, tau, --out) is
// checked before anything is written, and a run that fails after its output directory was
// created removes it. See docs/cli.md.
#include <fnmatch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fevo/cpu.hpp>
#include <fevo/fevo.hpp>
#include <fevo/io/format.hpp>
#include <fevo/io/snapshot.hpp>
#include <fevo/record/run_writer.hpp>
#include <fevo/thrust.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#ifdef FEVO_CLI_HAVE_CUDA
#include "cuda_backend.hpp"
#endif
#include "world.hpp"

namespace {

using fevo::detail::fail;
namespace io = fevo::io;

using io::snapshot;

// ---- layer selection ------------------------------------------------------------------------------

struct selection {
  std::vector<std::string> patterns;  // fnmatch patterns; empty: every candidate
  io::layout lay = io::layout::oihw;
  bool include_2d = false;
};

/// Why a tensor is not analysed, or "" when it is.
std::string why_not(const snapshot::entry& e, const selection& sel) {
  if (!io::is_analysable(e.type)) return std::string("dtype ") + io::dtype_name(e.type) + " is not analysed";
  if (e.shape.size() == 2 && !sel.include_2d) return "2-D (add --include-2d)";
  if (e.shape.size() != 4 && e.shape.size() != 2) return std::to_string(e.shape.size()) + "-D";
  for (auto d : e.shape)
    if (d == 0) return "has a zero dimension";
  if (!sel.patterns.empty()) {
    bool any = false;
    for (const auto& p : sel.patterns) any = any || ::fnmatch(p.c_str(), e.name.c_str(), 0) == 0;
    if (!any) return "does not match --layers";
  }
  return "";
}

std::string shape_text(const std::vector<std::uint64_t>& s) {
  std::string t = "[";
  for (std::size_t k = 0; k < s.size(); ++k) t += (k ? ", " : "") + std::to_string(s[k]);
  return t + "]";
}

// ---- backends -----------------------------------------------------------------------------------

enum class backend { seq, cpu, thrust, cuda };

template <class T>
std::vector<fevo::layer_metrics> compute_with(backend b, const std::vector<fevo::layer_pair<T>>& pairs,
                                              double tau, std::vector<fevo::filter_results>& per) {
  switch (b) {
    case backend::seq: return fevo::compute_layers(fevo::seq, pairs, tau, &per);
    case backend::thrust: return fevo::compute_layers(fevo::thrust::par, pairs, tau, &per);
#ifdef FEVO_CLI_HAVE_CUDA
    case backend::cuda: return fevo_cli::compute_on_cuda(pairs, tau, per);
#else
    case backend::cuda: break;  // refused in analyze()
#endif
    case backend::cpu: break;
  }
  return fevo::compute_layers(fevo::cpu::par, pairs, tau, &per);
}

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

/// Requires every chosen layer in `next` with the dtype and shape it has in `first`.
void check_layers(const snapshot::header& next, const snapshot::header& first,
                  const std::vector<snapshot::entry>& layers) {
  for (const auto& l : layers) {
    const snapshot::entry* e = next.find(l.name);
    FEVO_EXPECTS(e, next.path, ": tensor '", l.name, "' is missing (it is in ", first.path, ")");
    FEVO_EXPECTS(e->type == l.type && e->shape == l.shape, next.path, ": tensor '", l.name, "' is ",
                 io::dtype_name(e->type), " ", shape_text(e->shape), ", but ", io::dtype_name(l.type), " ",
                 shape_text(l.shape), " in ", first.path);
  }
}

/// A byte count for people: "512 B", "44.8 kB", "1.23 GB".
std::string byte_text(double b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  char t[32];
  std::snprintf(t, sizeof t, u == 0 ? "%.0f %s" : "%.3g %s", b, units[u]);
  return t;
}

/// "'a', 'b', ... (k more)": up to 20 names.
std::string some_names(const std::vector<std::string>& names) {
  std::string t;
  const std::size_t shown = std::min<std::size_t>(names.size(), 20);
  for (std::size_t k = 0; k < shown; ++k) t += (k ? ", '" : "'") + names[k] + "'";
  if (names.size() > shown) t += ", ... (" + std::to_string(names.size() - shown) + " more)";
  return t;
}

/// The files a run of the recorder writes in its directory (docs/cli.md, "Output files"), which
/// --overwrite removes: nothing else in the directory is touched.
void remove_run(const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  for (const char* f : {"metrics.csv", "filter_summary.csv"}) fs::remove(out / f);
  fs::remove_all(out / "series");
  fs::remove_all(out / "fevo-state");
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("events.out.tfevents.", 0) == 0 && n.size() > 5 && n.compare(n.size() - 5, 5, ".fevo") == 0)
      fs::remove(e.path());
  }
}

/// The layers in runs of consecutive layers of at most `budget` bytes each (a layer larger than
/// the budget makes a run of its own).
std::vector<std::vector<std::size_t>> layer_chunks(const std::vector<snapshot::entry>& layers,
                                                   std::uint64_t budget) {
  std::vector<std::vector<std::size_t>> out;
  std::uint64_t acc = 0;
  for (std::size_t j = 0; j < layers.size(); ++j) {
    if (out.empty() || acc + layers[j].nbytes > budget) {
      out.emplace_back();
      acc = 0;
    }
    out.back().push_back(j);
    acc += layers[j].nbytes;
  }
  return out;
}

/// The metrics of the layers `chunk` for every pair of `jobs`: one backend call per element
/// type, results put in metrics[pair][layer] and per[pair][layer].
void compute_chunk(backend b, const std::vector<pair_job>& jobs, const std::vector<snapshot::entry>& layers,
                   const std::vector<std::size_t>& chunk, const analyze_options& o,
                   std::vector<std::vector<fevo::layer_metrics>>& metrics,
                   std::vector<std::vector<fevo::filter_results>>& per) {
  for (io::dtype t : {io::dtype::f16, io::dtype::bf16, io::dtype::f32, io::dtype::f64}) {
    std::vector<std::size_t> idx;
    for (std::size_t j : chunk)
      if (layers[j].type == t) idx.push_back(j);
    if (idx.empty()) continue;
    io::visit_element(t, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      std::deque<std::vector<T>> scratch;  // stable: views may point into it
      std::vector<fevo::layer_pair<T>> group;
      for (const auto& job : jobs)
        for (std::size_t j : idx) {
          const std::string& name = layers[j].name;
          scratch.emplace_back();
          const auto pv = job.prev->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          scratch.emplace_back();
          const auto nv = job.next->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          group.push_back({name, pv, nv});
        }
      std::vector<fevo::filter_results> gper;
      const auto m = compute_with(b, group, o.tau, gper);
      std::size_t q = 0;
      for (std::size_t p = 0; p < jobs.size(); ++p)
        for (std::size_t j : idx) {
          metrics[p][j] = m[q];
          per[p][j] = std::move(gper[q]);
          ++q;
        }
      return 0;
    });
  }
}

/// The backend asked for, after the checks of the options every run starts with (threads,
/// --resume with --overwrite, tau); sets the OpenMP threads.
backend setup(const analyze_options& o) {
  backend b = backend::cpu;
  if (o.backend_name == "seq") b = backend::seq;
  else if (o.backend_name == "thrust") b = backend::thrust;
  else if (o.backend_name == "cuda") {
#ifdef FEVO_CLI_HAVE_CUDA
    fevo_cli::require_cuda_device();
    b = backend::cuda;
#else
    fail("--backend cuda: this fevo command was built without CUDA (configure with nvcc found, "
         "FEVO_ENABLE_CUDA=ON); use --backend cpu");
#endif
  }
  else FEVO_EXPECTS(o.backend_name == "cpu", "--backend must be seq, cpu, thrust or cuda, got '", o.backend_name, "'");
  FEVO_EXPECTS(o.threads >= 0, "--threads must be at least 1, got ", o.threads);
  FEVO_EXPECTS(!(o.resume && o.overwrite), "--resume and --overwrite exclude each other");
#if defined(_OPENMP)
  if (o.threads > 0) omp_set_num_threads(o.threads);  // fevo::cpu::par and Thrust's OpenMP system
#endif
  fevo::detail::check_tau(o.tau, "--");
  return b;
}

/// The series, the --reference step and the index of the snapshot the layers are chosen in (the
/// first, or the reference).
struct series_plan {
  std::vector<io::series_item> series;
  std::optional<std::int64_t> ref_step;
  std::size_t first = 0;
};

series_plan plan_series(const analyze_options& o) {
  series_plan s;
  s.series = io::make_series(o.inputs);
  FEVO_EXPECTS(s.series.size() >= 2, "need at least two snapshots, got ", s.series.size());
  if (o.reference != "prev") {
    s.ref_step = io::parse_step(o.reference, "--reference");
    FEVO_EXPECTS(std::any_of(s.series.begin(), s.series.end(), [&](const auto& i) { return i.step == *s.ref_step; }),
                 "--reference ", *s.ref_step, ": no snapshot has that step");
    while (s.series[s.first].step != *s.ref_step) ++s.first;
  }
  return s;
}

/// The layers analysed: the tensors of `base` that the selection takes (fevo::error, listing the
/// candidates, when none).
std::vector<snapshot::entry> choose_layers(const snapshot::header& base, const selection& sel) {
  std::vector<snapshot::entry> layers;
  for (const auto& e : base.entries)
    if (why_not(e, sel).empty()) layers.push_back(e);
  if (layers.empty()) {
    selection any = sel;
    any.patterns.clear();
    std::vector<std::string> candidates;
    for (const auto& e : base.entries)
      if (why_not(e, any).empty()) candidates.push_back(e.name);
    FEVO_EXPECTS(sel.patterns.empty() || candidates.empty(), base.path, ": --layers matches none of the ",
                 candidates.size(), " tensors that could be analysed: ", some_names(candidates));
    fail(base.path, ": no tensor to analyse (4-D", sel.include_2d ? " or 2-D" : "",
         ", f16/bf16/f32/f64; see fevo inspect ", base.path, sel.include_2d ? "" : ", or --include-2d", ")");
  }
  return layers;
}

/// The layers as the run's files describe them, and their dtypes ("f32,bf16"); checks tau in each
/// layer's compute type.
void describe(const std::vector<snapshot::entry>& layers, const analyze_options& o,
              std::vector<fevo::layer_info>& descs, std::string& dtypes) {
  for (const auto& l : layers) {
    const auto ext = io::layer_extents(l.shape, o.sel.lay);
    descs.push_back(fevo::layer_info{l.name, *ext});
    io::visit_element(l.type, [&](auto* tag) {  // tau must be a usable threshold in each compute type
      using T = std::remove_pointer_t<decltype(tag)>;
      fevo::detail::check_tau<fevo::compute_t<T>>(o.tau, "--");
      return 0;
    });
    if (dtypes.find(io::dtype_name(l.type)) == std::string::npos)
      dtypes += (dtypes.empty() ? "" : ",") + std::string(io::dtype_name(l.type));
  }
}

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
                   double secs) {
  std::string files = "metrics.csv, filter_summary.csv";
  if (o.per_filter_series) files += ", series/";
  if (o.tensorboard) files += ", events.out.tfevents.*";
  std::printf("fevo analyze: %zu snapshot pair%s x %zu layer%s%s, %s read in %.2f s (%s/s); %s in %s\n", done,
              done == 1 ? "" : "s", layers, layers == 1 ? "" : "s",
              skipped ? (" (" + std::to_string(skipped) + " more already in the run)").c_str() : "",
              byte_text(bytes).c_str(), secs, byte_text(secs > 0 ? bytes / secs : 0).c_str(), files.c_str(),
              o.out.c_str());
}

/// What one process read (--report-io): its bytes of tensor data and the seconds it spent
/// computing (reading the pages and folding them; not waiting for other ranks).
struct io_report {
  std::uint64_t bytes = 0;
  double busy = 0;
  std::size_t tensors = 0, split = 0;  ///< layers (or parts of layers) it held, and how many were parts
};

void print_io_report(const std::vector<io_report>& ranks, double wall) {
  std::uint64_t total = 0;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const io_report& x = ranks[r];
    total += x.bytes;
    std::printf("fevo analyze: rank %zu: %zu tensor%s (%zu split), %s read in %.2f s busy, %s/s\n", r, x.tensors,
                x.tensors == 1 ? "" : "s", x.split, byte_text(double(x.bytes)).c_str(), x.busy,
                byte_text(x.busy > 0 ? double(x.bytes) / x.busy : 0).c_str());
  }
  std::printf("fevo analyze: %zu rank%s: %s read in %.2f s, %s/s\n", ranks.size(), ranks.size() == 1 ? "" : "s",
              byte_text(double(total)).c_str(), wall, byte_text(wall > 0 ? double(total) / wall : 0).c_str());
}

/// One process: every input checked, then the pairs computed in windows, then the summaries.
int analyze_single(const analyze_options& o) {
  const progress clock(0);  // times the whole command, for the summary line
  const backend b = setup(o);

  // ---- every input, before anything is written: the series, each snapshot's header, the layers
  // and tau in their compute types.
  const series_plan sp = plan_series(o);
  const auto& series = sp.series;
  const auto& ref_step = sp.ref_step;
  const std::size_t first = sp.first;
  std::vector<snapshot::header> headers;
  headers.reserve(series.size());
  for (const auto& item : series) headers.push_back(snapshot::read_header(item.path));

  // The layers: chosen in the first snapshot (the reference's, with --reference), required with
  // the same dtype and shape in every other.
  const snapshot::header& base = headers[first];
  const std::vector<snapshot::entry> layers = choose_layers(base, o.sel);
  for (const auto& h : headers)
    if (&h != &base) check_layers(h, base, layers);
  std::vector<fevo::layer_info> descs;
  std::string dtypes;
  describe(layers, o, descs, dtypes);

  output_dir od(o);
  std::size_t done = 0, skipped = 0;
  double bytes = 0;
  io_report me;
  const progress loop(0);
  try {
    fevo::record::run_writer writer(od.ro, descs, dtypes);
    writer.open();
    // (--resume) the pairs already in the run, up to its last step, are not computed again.
    const std::optional<std::int64_t> last = writer.last_step();

    // Snapshot pairs are computed a window of w at a time. Within a window every pair's blocks at
    // the same filters are processed together (the CPU backend interleaves tasks that share a
    // snapshot), so a snapshot shared by two pairs, or the reference, is read from memory once.
    // The layers go in chunks of at most 1/w of a snapshot, and after each chunk its pages are
    // dropped from every snapshot of the window except the one the next window starts from (the
    // last, or the reference). Resident at any time: one snapshot (what is left of the window's
    // first plus what is done of its last) and w chunks, so at most two snapshots however long the
    // series. w is the largest up to stream_window for which every layer fits in a chunk; loaded
    // (.npy, .npz) snapshots cannot drop pages, so a series with any of them goes pair by pair.
    std::size_t first_next = first + 1;
    if (last)
      while (first_next < series.size() && series[first_next].step <= *last) ++first_next, ++skipped;
    const std::size_t pairs = series.size() - first_next;
    const bool all_mapped = std::all_of(headers.begin() + std::ptrdiff_t(first), headers.end(),
                                        [](const auto& h) { return h.format == io::file_format::safetensors; });
    std::uint64_t snapshot_bytes = 0, largest = 0;
    for (const auto& l : layers) {
      snapshot_bytes += l.nbytes;
      largest = std::max(largest, l.nbytes);
    }
    const std::size_t window =
        all_mapped ? std::size_t(std::clamp<std::uint64_t>(snapshot_bytes / largest, 1, stream_window)) : 1;
    const std::vector<std::vector<std::size_t>> chunks = layer_chunks(layers, snapshot_bytes / window);
    const double pair_bytes = 2.0 * double(snapshot_bytes);  // read per pair, for the progress line

    progress prog(pairs);
    // With --reference the base is the reference; else the snapshot before the first pair.
    const std::size_t start = ref_step ? first : first_next - 1;
    std::shared_ptr<const snapshot> prev = pairs ? std::make_shared<const snapshot>(series[start].path) : nullptr;
    std::int64_t prev_step = series[start].step;
    if (pairs) me.bytes += snapshot_bytes;
    for (std::size_t k = first_next; k < series.size();) {
      const std::size_t w = std::min(window, series.size() - k);
      std::vector<pair_job> jobs;
      for (std::size_t p = 0; p < w; ++p) {
        auto next = std::make_shared<const snapshot>(series[k + p].path);
        jobs.push_back({prev, next, prev_step, series[k + p].step});
        if (!ref_step) {
          prev = next;
          prev_step = series[k + p].step;
        }
      }
      std::vector<std::vector<fevo::layer_metrics>> metrics(w, std::vector<fevo::layer_metrics>(layers.size()));
      std::vector<std::vector<fevo::filter_results>> per(w, std::vector<fevo::filter_results>(layers.size()));
      const progress busy(0);
      for (const auto& chunk : chunks) {
        compute_chunk(b, jobs, layers, chunk, o, metrics, per);
        // Every snapshot of the window but the one the next window starts from (the last, or the
        // reference) is done with these layers.
        for (const auto& j : jobs)
          if (j.next != prev)
            for (std::size_t l : chunk) j.next->evict(layers[l].name);
        if (!ref_step)
          for (std::size_t l : chunk) jobs.front().prev->evict(layers[l].name);
      }
      me.busy += busy.seconds();
      me.bytes += w * snapshot_bytes;
      for (std::size_t p = 0; p < w; ++p) {
        writer.maybe_compact();  // keep the journal small: summaries are checkpointed
        writer.write(jobs[p].step_prev, jobs[p].step, metrics[p], per[p]);
        prog.step(++done, pair_bytes);
        bytes += pair_bytes;
      }
      k += w;
    }
    writer.close();
    prog.finish();
  } catch (...) {
    od.clean_up(o);
    throw;
  }
  print_summary(o, done, skipped, layers.size(), bytes, clock.seconds());
  if (o.report_io) {
    me.tensors = layers.size();
    print_io_report({me}, loop.seconds());
  }
  return 0;
}

// ---- analyze under MPI ------------------------------------------------------------------------
//
// The analysed layers, in their order, are cut into one contiguous share per rank of about the
// same bytes (plan_shares); a layer a cut falls inside is split by filter ranges. Each rank reads
// only its share of every snapshot (the shards that hold it), computes the per-filter totals of
// its pieces for a window of pairs, and rank 0 gathers them, merges each layer's filters in filter
// order (as one process does) and writes the run, so the files are byte for byte those of one
// process. Every input is checked first, the checks spread over the ranks: rank 0 reads the base
// snapshot's headers and sends them to all; each rank checks the shards it will read (and a share
// of those nobody reads), and the shards' bytes are summed over the ranks against each index's
// total_size.

/// Filters [first, first + count) of layer `layer`: what a rank computes of it.
struct piece {
  std::size_t layer, first, count;
};

/// The pieces of each of `ranks` ranks: byte-balanced contiguous shares of the layers in order.
/// Each cut at r/K of the bytes goes to the nearest filter boundary, or to a layer boundary when
/// one is within 1/64 of a share (so that a layer is split only where that balances the shares;
/// a layer larger than a share always is).
std::vector<std::vector<piece>> plan_shares(const std::vector<snapshot::entry>& layers,
                                            const std::vector<fevo::layer_info>& descs, int ranks) {
  std::vector<std::uint64_t> start(layers.size() + 1, 0);
  for (std::size_t j = 0; j < layers.size(); ++j) start[j + 1] = start[j] + layers[j].nbytes;
  const std::uint64_t K = std::uint64_t(ranks), total = start.back(), slack = total / K / 64;
  // A cut is a position (layer, filter), normalised so that filter < N.
  using pos = std::pair<std::size_t, std::size_t>;
  std::vector<pos> cut = {{0, 0}};
  for (std::uint64_t r = 1; r < K; ++r) {
    // r/K of the bytes, without overflow: (total / K) r + (total % K) r / K.
    const std::uint64_t t = total / K * r + total % K * r / K;
    const std::size_t j = std::size_t(std::upper_bound(start.begin(), start.end(), t) - start.begin()) - 1;
    pos c = {layers.size(), 0};
    if (j < layers.size()) {
      const std::uint64_t n = descs[j].filters(), fb = layers[j].nbytes / n;
      const std::uint64_t f = std::min<std::uint64_t>(n, (t - start[j] + fb / 2) / fb);
      if (t - start[j] <= slack || f == 0) c = {j, 0};
      else if (start[j + 1] - t <= slack || f == n) c = {j + 1, 0};
      else c = {j, std::size_t(f)};
    }
    cut.push_back(std::max(c, cut.back()));
  }
  cut.push_back({layers.size(), 0});
  std::vector<std::vector<piece>> out(static_cast<std::size_t>(ranks));
  for (std::size_t r = 0; r < out.size(); ++r) {
    const pos a = cut[r], b = cut[r + 1];
    for (std::size_t j = a.first; j < layers.size() && pos{j, 0} < b; ++j) {
      const std::size_t from = j == a.first ? a.second : 0;
      const std::size_t to = j == b.first ? b.second : descs[j].filters();
      if (to > from) out[r].push_back({j, from, to - from});
    }
  }
  return out;
}

/// The bytes of a piece.
std::uint64_t piece_bytes(const piece& p, const std::vector<snapshot::entry>& layers,
                          const std::vector<fevo::layer_info>& descs) {
  return layers[p.layer].nbytes / descs[p.layer].filters() * p.count;
}

/// Little-endian fields, for what travels between ranks.
struct writer_bytes {
  std::vector<unsigned char> b;
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
  void f64(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  void text(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};
struct reader_bytes {
  const std::vector<unsigned char>& b;
  std::size_t at = 0;
  std::uint64_t u64() {
    FEVO_EXPECTS(at + 8 <= b.size(), "internal: a message between ranks is cut short");
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[at + std::size_t(i)];
    at += 8;
    return v;
  }
  double f64() {
    const std::uint64_t u = u64();
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }
  std::string text() {
    const std::uint64_t n = u64();
    FEVO_EXPECTS(n <= b.size() - at, "internal: a message between ranks is cut short");
    std::string s(reinterpret_cast<const char*>(b.data() + at), std::size_t(n));
    at += std::size_t(n);
    return s;
  }
};

std::vector<unsigned char> header_bytes(const snapshot::header& h) {
  writer_bytes w;
  w.text(h.path);
  w.u64(std::uint64_t(h.format));
  w.u64(h.entries.size());
  for (const auto& e : h.entries) {
    w.text(e.name);
    w.u64(std::uint64_t(e.type));
    w.u64(e.shape.size());
    for (auto d : e.shape) w.u64(d);
    w.u64(e.nbytes);
    w.u64(e.source);
  }
  return w.b;
}
snapshot::header header_from(const std::vector<unsigned char>& b) {
  reader_bytes r{b};
  snapshot::header h;
  h.path = r.text();
  h.format = io::file_format(r.u64());
  h.entries.resize(std::size_t(r.u64()));
  for (auto& e : h.entries) {
    e.name = r.text();
    e.type = io::dtype(r.u64());
    e.shape.resize(std::size_t(r.u64()));
    for (auto& d : e.shape) d = r.u64();
    e.nbytes = r.u64();
    e.source = std::size_t(r.u64());
  }
  return h;
}

/// The per-filter totals of `pieces` for each pair of a window, computed as compute_chunk does
/// for whole layers: per[pair][piece].
void compute_pieces(backend b, const std::vector<pair_job>& jobs, const std::vector<snapshot::entry>& layers,
                    const std::vector<piece>& pieces, const std::vector<std::size_t>& chunk, const analyze_options& o,
                    std::vector<std::vector<fevo::filter_results>>& per) {
  for (io::dtype t : {io::dtype::f16, io::dtype::bf16, io::dtype::f32, io::dtype::f64}) {
    std::vector<std::size_t> idx;
    for (std::size_t q : chunk)
      if (layers[pieces[q].layer].type == t) idx.push_back(q);
    if (idx.empty()) continue;
    io::visit_element(t, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      std::deque<std::vector<T>> scratch;  // stable: views may point into it
      std::vector<fevo::layer_pair<T>> group;
      for (const auto& job : jobs)
        for (std::size_t q : idx) {
          const piece& pc = pieces[q];
          const std::string& name = layers[pc.layer].name;
          scratch.emplace_back();
          const auto pv = job.prev->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          scratch.emplace_back();
          const auto nv = job.next->view<T>(name, o.sel.lay, scratch.back(), o.sel.include_2d);
          group.push_back({name, pv.filter_slice(pc.first, pc.count), nv.filter_slice(pc.first, pc.count)});
        }
      std::vector<fevo::filter_results> gper;
      compute_with(b, group, o.tau, gper);
      std::size_t g = 0;
      for (std::size_t p = 0; p < jobs.size(); ++p)
        for (std::size_t q : idx) per[p][q] = std::move(gper[g++]);
      return 0;
    });
  }
}

/// Drops the pages of a piece from a snapshot's mapping: the whole tensor's, or, for a filter
/// range of an [O, I, H, W] tensor, those of its bytes.
void evict_piece(const snapshot& s, const piece& p, const std::vector<snapshot::entry>& layers,
                 const std::vector<fevo::layer_info>& descs, io::layout lay) {
  const std::string& name = layers[p.layer].name;
  if (p.count == descs[p.layer].filters() || lay != io::layout::oihw) {
    s.evict(name);
    return;
  }
  const std::uint64_t fb = layers[p.layer].nbytes / descs[p.layer].filters();
  s.evict(name, p.first * fb, p.count * fb);
}

int analyze_distributed(const analyze_options& o, const fevo_cli::world& w) {
  const progress clock(0);
  const std::size_t K = std::size_t(w.size());
  backend b = backend::cpu;
  series_plan sp;
  std::vector<io::file_format> formats;
  std::vector<unsigned char> base_bytes;
  // 1. Options, the series (every rank lists it), each snapshot's format; rank 0 reads the headers
  //    of the snapshot the layers are chosen in.
  w.step([&] {
    b = setup(o);
    sp = plan_series(o);
    for (const auto& item : sp.series)
      formats.push_back(io::detail::is_directory(item.path) ? io::file_format::safetensors : io::detect_format(item.path));
    if (w.root()) base_bytes = header_bytes(snapshot::read_header(sp.series[sp.first].path));
  });
  w.broadcast(base_bytes);
  const snapshot::header base = header_from(base_bytes);
  const auto& series = sp.series;

  // 2. The layers, the shares, and the checks of every other snapshot, spread over the ranks.
  std::vector<snapshot::entry> layers;
  std::vector<fevo::layer_info> descs;
  std::string dtypes;
  std::vector<std::vector<piece>> plan;
  std::vector<std::optional<io::shard_index>> index(series.size());
  std::vector<std::uint64_t> shard_bytes(series.size(), 0);  // the bytes of the shards this rank owns
  w.step([&] {
    layers = choose_layers(base, o.sel);
    describe(layers, o, descs, dtypes);
    plan = plan_shares(layers, descs, w.size());
    const auto& mine = plan[std::size_t(w.rank())];
    std::vector<snapshot::entry> my_layers;
    for (const piece& p : mine)
      if (my_layers.empty() || my_layers.back().name != layers[p.layer].name) my_layers.push_back(layers[p.layer]);
    std::unordered_map<std::string, std::size_t> layer_of;
    for (std::size_t j = 0; j < layers.size(); ++j) layer_of.emplace(layers[j].name, j);
    for (std::size_t s = 0; s < series.size(); ++s) {
      if (s == sp.first) continue;
      const std::string& path = series[s].path;
      if (io::checkpoint_kind_of(path) != io::checkpoint_kind::sharded) {
        // A file, or a checkpoint of one file: checked by every rank that reads some of it.
        if (!mine.empty()) check_layers(snapshot::read_header(path), base, my_layers);
        continue;
      }
      index[s] = io::read_shard_index(path);
      const io::shard_index& ix = *index[s];
      // Who reads each shard: the ranks whose pieces it holds; the lowest of them owns it (checks
      // it, counts its bytes). A shard nobody reads is checked by rank k % K.
      std::vector<int> owner(ix.shards.size(), -1);
      std::vector<bool> read_by_me(ix.shards.size(), false);
      for (std::size_t r = 0; r < K; ++r)
        for (const piece& p : plan[r]) {
          const auto it = ix.shard_of.find(layers[p.layer].name);
          if (it == ix.shard_of.end()) {
            if (r == std::size_t(w.rank()))
              fail(ix.path, ": tensor '", layers[p.layer].name, "' is missing (it is in ", base.path, ")");
            continue;
          }
          if (owner[it->second] < 0) owner[it->second] = int(r);
          if (r == std::size_t(w.rank())) read_by_me[it->second] = true;
        }
      for (std::size_t k = 0; k < ix.shards.size(); ++k) {
        if (owner[k] < 0) owner[k] = int(k % K);
        if (!read_by_me[k] && owner[k] != w.rank()) continue;
        const std::vector<snapshot::entry> entries = snapshot::read_shard(ix, k);
        for (const auto& e : entries) {
          const auto it = layer_of.find(e.name);
          if (it == layer_of.end()) continue;
          const snapshot::entry& l = layers[it->second];
          FEVO_EXPECTS(e.type == l.type && e.shape == l.shape, ix.shards[k], ": tensor '", l.name, "' is ",
                       io::dtype_name(e.type), " ", shape_text(e.shape), ", but ", io::dtype_name(l.type), " ",
                       shape_text(l.shape), " in ", base.path);
        }
        if (owner[k] == w.rank())
          for (const auto& e : entries) shard_bytes[s] += e.nbytes;
      }
    }
  });
  // Every shard of every sharded checkpoint was counted by one rank: their sum against total_size.
  const std::vector<std::uint64_t> bytes_of = w.sum(shard_bytes);
  w.step([&] {
    for (std::size_t s = 0; s < series.size(); ++s)
      if (index[s]) io::check_total_size(*index[s], bytes_of[s]);
  });

  // 3. Rank 0 opens the run (or reopens it: --resume); every rank learns where it stands.
  std::unique_ptr<output_dir> od;
  std::unique_ptr<fevo::record::run_writer> writer;
  std::vector<unsigned char> last_bytes;
  const auto fail_root = [&] {
    if (od) od->clean_up(o);
  };
  try {
    w.step([&] {
      if (!w.root()) return;
      od = std::make_unique<output_dir>(o);
      writer = std::make_unique<fevo::record::run_writer>(od->ro, descs, dtypes);
      writer->open();
      writer_bytes lb;
      lb.u64(writer->last_step() ? 1 : 0);
      lb.u64(std::uint64_t(writer->last_step().value_or(0)));
      last_bytes = lb.b;
    });
    w.broadcast(last_bytes);
    reader_bytes lr{last_bytes};
    std::optional<std::int64_t> last;
    if (lr.u64()) last = std::int64_t(lr.u64());

    // 4. The pairs, in windows, as one process computes them (analyze_single), each rank on its
    //    share; rank 0 writes each window's records.
    const std::vector<piece>& mine = plan[std::size_t(w.rank())];
    std::vector<std::string> wanted;
    for (const piece& p : mine)
      if (wanted.empty() || wanted.back() != layers[p.layer].name) wanted.push_back(layers[p.layer].name);
    const auto open = [&](std::size_t s) {
      return std::make_shared<const snapshot>(series[s].path, wanted);
    };
    std::size_t first_next = sp.first + 1, skipped = 0, done = 0;
    if (last)
      while (first_next < series.size() && series[first_next].step <= *last) ++first_next, ++skipped;
    const std::size_t pairs = series.size() - first_next;
    const bool all_mapped = std::all_of(formats.begin() + std::ptrdiff_t(sp.first), formats.end(),
                                        [](io::file_format f) { return f == io::file_format::safetensors; });
    // The window is the same on every rank (each window is one gather): the smallest of theirs.
    std::size_t window = stream_window;
    std::vector<std::uint64_t> share_bytes(K, 0);
    for (std::size_t r = 0; r < K; ++r) {
      std::uint64_t largest = 0;
      for (const piece& p : plan[r]) {
        const std::uint64_t pb = piece_bytes(p, layers, descs);
        share_bytes[r] += pb;
        largest = std::max(largest, pb);
      }
      if (largest) window = std::min<std::size_t>(window, std::clamp<std::uint64_t>(share_bytes[r] / largest, 1, stream_window));
    }
    if (!all_mapped) window = 1;
    const std::uint64_t my_bytes = share_bytes[std::size_t(w.rank())];
    std::vector<std::vector<std::size_t>> chunks;  // of my pieces, at most my_bytes / window each
    {
      std::uint64_t acc = 0;
      for (std::size_t q = 0; q < mine.size(); ++q) {
        const std::uint64_t pb = piece_bytes(mine[q], layers, descs);
        if (chunks.empty() || acc + pb > my_bytes / window) {
          chunks.emplace_back();
          acc = 0;
        }
        chunks.back().push_back(q);
        acc += pb;
      }
    }
    std::uint64_t snapshot_bytes = 0;
    for (const auto& l : layers) snapshot_bytes += l.nbytes;
    const double pair_bytes = 2.0 * double(snapshot_bytes);
    double bytes = 0;
    io_report me;
    me.tensors = mine.size();
    for (const piece& p : mine) me.split += p.count != descs[p.layer].filters();
    const progress loop(0);
    progress prog(pairs, w.root());

    const std::size_t start = sp.ref_step ? sp.first : first_next - 1;
    std::shared_ptr<const snapshot> prev;
    std::int64_t prev_step = series[start].step;
    w.step([&] {
      if (pairs && !mine.empty()) {
        prev = open(start);
        me.bytes += my_bytes;
      }
    });
    std::uint64_t window_no = 0;
    for (std::size_t k = first_next; k < series.size();) {
      const std::size_t wn = std::min(window, series.size() - k);
      std::vector<pair_job> jobs;
      std::vector<std::vector<fevo::filter_results>> per(wn, std::vector<fevo::filter_results>(mine.size()));
      writer_bytes out;
      w.step([&] {
        for (std::size_t p = 0; p < wn; ++p) {
          auto next = mine.empty() ? nullptr : open(k + p);
          jobs.push_back({prev, next, prev_step, series[k + p].step});
          if (!sp.ref_step) {
            prev = next;
            prev_step = series[k + p].step;
          }
        }
        const progress busy(0);
        if (!mine.empty())
          for (const auto& chunk : chunks) {
            compute_pieces(b, jobs, layers, mine, chunk, o, per);
            for (const auto& j : jobs)
              if (j.next != prev)
                for (std::size_t q : chunk) evict_piece(*j.next, mine[q], layers, descs, o.sel.lay);
            if (!sp.ref_step)
              for (std::size_t q : chunk) evict_piece(*jobs.front().prev, mine[q], layers, descs, o.sel.lay);
          }
        me.busy += busy.seconds();
        if (!mine.empty()) me.bytes += wn * my_bytes;
        out.u64(window_no);
        for (std::size_t p = 0; p < wn; ++p)
          for (std::size_t q = 0; q < mine.size(); ++q)
            for (std::size_t i = 0; i < mine[q].count; ++i) {
              const fevo::filter_results& f = per[p][q];
              out.f64(f.D[i]);
              out.u64(f.changed[i]);
              out.u64(f.zero_channels[i]);
              out.u64(f.nonfinite[i]);
            }
      });
      const std::vector<std::vector<unsigned char>> got = w.gather(out.b);
      w.step([&] {
        if (!w.root()) return;
        // Every layer's filters from the ranks that hold them, then each layer's totals merged
        // in filter order, as the backends do for a whole layer.
        std::vector<std::vector<fevo::filter_results>> all(wn, std::vector<fevo::filter_results>(layers.size()));
        for (std::size_t p = 0; p < wn; ++p)
          for (std::size_t j = 0; j < layers.size(); ++j)
            all[p][j].resize(descs[j].filters(), descs[j].channels(), descs[j].filter_size(), false);
        for (std::size_t r = 0; r < K; ++r) {
          reader_bytes in{got[r]};
          FEVO_EXPECTS(in.u64() == window_no, "internal: rank ", r, " sent another window");
          for (std::size_t p = 0; p < wn; ++p)
            for (const piece& pc : plan[r])
              for (std::size_t i = 0; i < pc.count; ++i) {
                fevo::partial f;
                f.sum_sq = in.f64();
                f.changed = in.u64();
                f.zero_channels = in.u64();
                f.nonfinite = in.u64();
                f.weights = descs[pc.layer].filter_size();
                f.channels = descs[pc.layer].channels();
                all[p][pc.layer].store(pc.first + i, f);
              }
          FEVO_EXPECTS(in.at == got[r].size(), "internal: rank ", r, " sent ", got[r].size() - in.at, " bytes too many");
        }
        for (std::size_t p = 0; p < wn; ++p) {
          std::vector<fevo::layer_metrics> metrics(layers.size());
          for (std::size_t j = 0; j < layers.size(); ++j) {
            fevo::partial layer;
            for (std::size_t i = 0; i < descs[j].filters(); ++i) fevo::merge(layer, all[p][j].filter_partial(i));
            metrics[j] = fevo::finalize(layer, descs[j].filters());
          }
          writer->maybe_compact();
          writer->write(jobs[p].step_prev, jobs[p].step, metrics, all[p]);
          prog.step(++done, pair_bytes);
          bytes += pair_bytes;
        }
      });
      ++window_no;
      k += wn;
    }
    w.step([&] {
      if (w.root()) {
        writer->close();
        prog.finish();
      }
    });
    // The summary and (--report-io) what each rank read.
    writer_bytes rep;
    rep.u64(me.bytes);
    rep.f64(me.busy);
    rep.u64(me.tensors);
    rep.u64(me.split);
    const double wall = loop.seconds();
    const auto reports = w.gather(rep.b);
    if (w.root()) {
      print_summary(o, done, skipped, layers.size(), bytes, clock.seconds());
      if (o.report_io) {
        std::vector<io_report> rs;
        for (const auto& x : reports) {
          reader_bytes in{x};
          io_report r;
          r.bytes = in.u64();
          r.busy = in.f64();
          r.tensors = std::size_t(in.u64());
          r.split = std::size_t(in.u64());
          rs.push_back(r);
        }
        print_io_report(rs, wall);
      }
    }
  } catch (...) {
    fail_root();
    throw;
  }
  return 0;
}

int analyze(const analyze_options& o, const fevo_cli::world& w) {
  return w.mpi() ? analyze_distributed(o, w) : analyze_single(o);
}

// ---- inspect ------------------------------------------------------------------------------------

int inspect(const std::string& path, const selection& sel) {
  const snapshot s(path);
  const std::string shards = s.sharded() ? ", " + std::to_string(s.sources().size()) + " shards" : "";
  std::printf("%s: %s%s, %zu tensors\n", path.c_str(), io::format_name(s.format()), shards.c_str(),
              s.entries().size());
  for (const auto& [k, v] : s.metadata()) std::printf("  metadata %s = %s\n", k.c_str(), v.c_str());
  std::printf("%-40s %-8s %-24s %14s  %s\n", "tensor", "dtype", "shape", "bytes", "analysed");
  std::size_t n = 0;
  for (const auto& e : s.entries()) {
    const std::string why = why_not(e, sel);
    n += why.empty();
    std::printf("%-40s %-8s %-24s %14llu  %s\n", e.name.c_str(), io::dtype_name(e.type),
                shape_text(e.shape).c_str(), (unsigned long long)e.nbytes,
                why.empty() ? "yes" : ("no: " + why).c_str());
  }
  std::printf("%zu of %zu tensors would be analysed\n", n, s.entries().size());
  return 0;
}

}  // namespace

namespace {

/// Edit distance of two short words (the commands), to suggest one for a misspelled command.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

constexpr const char* help_footer = R"(
Exit status: 0 on success; 2 on bad input or usage, with one line on stderr that names the file,
the tensor and the problem. Nothing is written before every input is checked, and a run that
fails leaves no output behind.

Examples:
  fevo inspect run/step_100.safetensors
  fevo analyze run/ --tau 2e-4 --out metrics/ --per-filter-series --threads 2

Snapshot steps: a safetensors file's __metadata__ "step", else the number that ends the last word
of the file's name (step_400, checkpoint-400, epoch3-step400: 400); a checkpoint directory's
trainer_state.json "global_step", else the number ending its name. See docs/cli.md.
)";

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun or srun: MPI starts here (and is finalized when `w` goes); a build without MPI
  // started as several processes stops with a message from the launcher's rank 0.
  std::unique_ptr<fevo_cli::world> w;
  try {
    w = std::make_unique<fevo_cli::world>(argc, argv);
  } catch (const fevo_cli::collective_error& e) {
    if (fevo_cli::launched().rank == 0) std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  const bool root = w->root();  // what every rank would print, rank 0 prints

  CLI::App app{"fevo: how the conv filters of a network evolve between training snapshots", "fevo"};
  app.require_subcommand(1);
  app.footer(help_footer);
#ifdef FEVO_CLI_HAVE_MPI
  const char* with_mpi = " (with MPI: mpirun -np K fevo analyze ...)";
#else
  const char* with_mpi = " (without MPI)";
#endif
  app.set_version_flag("--version", "fevo " + std::to_string(FEVO_VERSION_MAJOR) + "." +
                                        std::to_string(FEVO_VERSION_MINOR) + "." +
                                        std::to_string(FEVO_VERSION_PATCH) + with_mpi);

  analyze_options ao;
  std::string layout = "oihw", patterns;
  auto* an = app.add_subcommand("analyze", "D, S and Z between consecutive snapshots (or against one step)");
  an->add_option("snapshots", ao.inputs,
                 "snapshot files (.safetensors, .npy, .npz), checkpoint directories, or directories of either")
      ->required();
  an->add_option("--tau", ao.tau, "threshold of S and Z (the paper: the initial learning rate)")->required();
  an->add_option("--out", ao.out, "output directory (one that holds a run needs --resume or --overwrite)")->required();
  an->add_option("--backend", ao.backend_name, "seq, cpu (default), thrust or cuda");
  an->add_option("--threads", ao.threads, "CPU threads (default: OMP_NUM_THREADS, else every core)");
  an->add_option("--layers", patterns, "comma-separated name patterns (fnmatch: *, ?, [..])");
  an->add_option("--reference", ao.reference, "prev (default: consecutive snapshots) or a step to compare every later snapshot with");
  an->add_flag("--per-filter-series", ao.per_filter_series, "also write series/<layer>.{D,S,Z}.npy");
  an->add_flag("--tensorboard", ao.tensorboard, "also write TensorBoard scalars fevo/<layer>/{D,S,Z}");
  an->add_option("--layout", layout, "oihw (PyTorch, default) or hwio (Keras/TF/JAX)");
  an->add_flag("--include-2d", ao.sel.include_2d, "also analyse 2-D [out, in] weights as N x C x 1 x 1");
  an->add_flag("--resume", ao.resume, "continue the run --out holds (one that was killed): pairs it has are skipped");
  an->add_flag("--overwrite", ao.overwrite, "replace the run --out holds");
  an->add_flag("--report-io", ao.report_io, "at the end, the bytes read and GB/s of each process (MPI rank) and in all");

  std::string inspect_path;
  selection isel;
  auto* in = app.add_subcommand("inspect", "list a file's tensors and which would be analysed");
  in->add_option("file", inspect_path, "a .safetensors, .npy or .npz file, or a checkpoint directory")->required();
  in->add_option("--layers", patterns, "comma-separated name patterns (fnmatch)");
  in->add_option("--layout", layout, "oihw (default) or hwio");
  in->add_flag("--include-2d", isel.include_2d, "count 2-D [out, in] weights as layers");

  // A misspelled command: say which was meant, rather than "a subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    if (cmd != "analyze" && cmd != "inspect") {
      std::string near;
      for (const char* c : {"analyze", "inspect"})
        if (edit_distance(cmd, c) <= 2) near = c;
      if (root)
        std::fprintf(stderr, "fevo: unknown command '%s'%s (commands: analyze, inspect; see fevo --help)\n",
                     cmd.c_str(), near.empty() ? "" : ("; did you mean '" + near + "'?").c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return root ? app.exit(e) : 0;
    if (root) std::fprintf(stderr, "fevo: %s (see fevo --help)\n", e.what());
    return 2;
  }
  try {
    selection& sel = an->parsed() ? ao.sel : isel;
    FEVO_EXPECTS(layout == "oihw" || layout == "hwio", "--layout must be oihw or hwio, got '", layout, "'");
    sel.lay = layout == "hwio" ? io::layout::hwio : io::layout::oihw;
    std::stringstream ps(patterns);
    for (std::string p; std::getline(ps, p, ',');)
      if (!p.empty()) sel.patterns.push_back(p);
    if (an->parsed()) return analyze(ao, *w);
    return root ? inspect(inspect_path, isel) : 0;
  } catch (const fevo::error& e) {
    // Under MPI every error here is every rank's (collective_error, or the same options on all).
    if (root) std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    if (root) std::fprintf(stderr, "fevo: %s\n", e.what());
    return 2;
  }
}
