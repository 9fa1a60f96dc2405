// fevo, the command-line tool.
//
//   fevo analyze SNAPSHOTS... --tau T --out DIR [--backend seq|cpu|thrust|cuda] [--layers PATTERN]
//                [--reference prev|STEP] [--per-filter-series] [--tensorboard]
//                [--layout oihw|hwio] [--include-2d] [--threads N] [--resume | --overwrite]
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
#include <deque>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
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
  explicit progress(std::size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}
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

int analyze(const analyze_options& o) {
  namespace fs = std::filesystem;
  const progress clock(0);  // times the whole command, for the summary line
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

  // ---- every input, before anything is written: the series, each snapshot's header, the layers
  // and tau in their compute types.
  const std::vector<io::series_item> series = io::make_series(o.inputs);
  FEVO_EXPECTS(series.size() >= 2, "need at least two snapshots, got ", series.size());
  std::optional<std::int64_t> ref_step;
  if (o.reference != "prev") {
    ref_step = io::parse_step(o.reference, "--reference");
    FEVO_EXPECTS(std::any_of(series.begin(), series.end(), [&](const auto& s) { return s.step == *ref_step; }),
                 "--reference ", *ref_step, ": no snapshot has that step");
  }
  std::vector<snapshot::header> headers;
  headers.reserve(series.size());
  for (const auto& item : series) headers.push_back(snapshot::read_header(item.path));

  // The layers: chosen in the first snapshot (the reference's, with --reference), required with
  // the same dtype and shape in every other.
  std::size_t first = 0;
  if (ref_step)
    while (series[first].step != *ref_step) ++first;
  const snapshot::header& base = headers[first];
  std::vector<snapshot::entry> layers;
  for (const auto& e : base.entries)
    if (why_not(e, o.sel).empty()) layers.push_back(e);
  if (layers.empty()) {
    selection any = o.sel;
    any.patterns.clear();
    std::vector<std::string> candidates;
    for (const auto& e : base.entries)
      if (why_not(e, any).empty()) candidates.push_back(e.name);
    FEVO_EXPECTS(o.sel.patterns.empty() || candidates.empty(), base.path, ": --layers matches none of the ",
                 candidates.size(), " tensors that could be analysed: ", some_names(candidates));
    fail(base.path, ": no tensor to analyse (4-D", o.sel.include_2d ? " or 2-D" : "",
         ", f16/bf16/f32/f64; see fevo inspect ", base.path, o.sel.include_2d ? "" : ", or --include-2d", ")");
  }
  for (const auto& h : headers)
    if (&h != &base) check_layers(h, base, layers);
  std::vector<fevo::layer_info> descs;
  std::string dtypes;
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

  // ---- the output directory: a new run, or (--resume) the run it holds, or (--overwrite) a new
  // run in its place.
  const fs::path out(o.out);
  const bool holds_run = fs::exists(out / "fevo-state");
  FEVO_EXPECTS(!holds_run || o.resume || o.overwrite, "--out ", o.out,
               ": the directory already holds a run; --resume continues it (after a kill), --overwrite "
               "replaces it, or choose another directory");
  FEVO_EXPECTS(!fs::exists(out) || fs::is_directory(out), "--out ", o.out, ": exists and is not a directory");
  if (holds_run && o.overwrite) remove_run(out);
  const bool created = !fs::exists(out);  // removed again if the run fails
  fevo::record::recorder_options ro;
  ro.out_dir = o.out;
  ro.tau = o.tau;
  ro.per_filter_series = o.per_filter_series;
  ro.tensorboard = o.tensorboard;
  ro.resume = o.resume;
  std::size_t done = 0, skipped = 0;
  double bytes = 0;
  try {
    fevo::record::run_writer writer(ro, descs, dtypes);
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
    // Nothing is left of a new run that did not complete: its files, and the directory if this
    // run made it. (A resumed run stays as it was, to be resumed again.)
    std::error_code ignored;
    if (created) {
      fs::remove_all(out, ignored);
    } else if (!(holds_run && o.resume)) {
      try {
        remove_run(out);
      } catch (const std::exception&) {  // the run's own error is the one to report
      }
    }
    throw;
  }

  const double secs = clock.seconds();
  std::string files = "metrics.csv, filter_summary.csv";
  if (o.per_filter_series) files += ", series/";
  if (o.tensorboard) files += ", events.out.tfevents.*";
  std::printf("fevo analyze: %zu snapshot pair%s x %zu layer%s%s, %s read in %.2f s (%s/s); %s in %s\n", done,
              done == 1 ? "" : "s", layers.size(), layers.size() == 1 ? "" : "s",
              skipped ? (" (" + std::to_string(skipped) + " more already in the run)").c_str() : "",
              byte_text(bytes).c_str(), secs, byte_text(secs > 0 ? bytes / secs : 0).c_str(), files.c_str(),
              o.out.c_str());
  return 0;
}

// ---- inspect ------------------------------------------------------------------------------------

int inspect(const std::string& path, const selection& sel) {
  const snapshot s(path);
  std::printf("%s: %s, %zu tensors\n", path.c_str(), io::format_name(s.format()), s.entries().size());
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
of the file's name (step_400, checkpoint-400, epoch3-step400: 400). See docs/cli.md.
)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fevo: how the conv filters of a network evolve between training snapshots", "fevo"};
  app.require_subcommand(1);
  app.footer(help_footer);
  // The version, then which of fevo::cpu's kernels (instruction sets) this machine runs.
  app.set_version_flag("--version", "fevo " + std::to_string(FEVO_VERSION_MAJOR) + "." +
                                        std::to_string(FEVO_VERSION_MINOR) + "." +
                                        std::to_string(FEVO_VERSION_PATCH) + "\nCPU kernels: " +
                                        fevo::cpu::instruction_set());

  analyze_options ao;
  std::string layout = "oihw", patterns;
  auto* an = app.add_subcommand("analyze", "D, S and Z between consecutive snapshots (or against one step)");
  an->add_option("snapshots", ao.inputs, "snapshot files or directories (.safetensors, .npy, .npz)")->required();
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

  std::string inspect_path;
  selection isel;
  auto* in = app.add_subcommand("inspect", "list a file's tensors and which would be analysed");
  in->add_option("file", inspect_path, "a .safetensors, .npy or .npz file")->required();
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
      std::fprintf(stderr, "fevo: unknown command '%s'%s (commands: analyze, inspect; see fevo --help)\n",
                   cmd.c_str(), near.empty() ? "" : ("; did you mean '" + near + "'?").c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "fevo: %s (see fevo --help)\n", e.what());
    return 2;
  }
  try {
    selection& sel = an->parsed() ? ao.sel : isel;
    FEVO_EXPECTS(layout == "oihw" || layout == "hwio", "--layout must be oihw or hwio, got '", layout, "'");
    sel.lay = layout == "hwio" ? io::layout::hwio : io::layout::oihw;
    std::stringstream ps(patterns);
    for (std::string p; std::getline(ps, p, ',');)
      if (!p.empty()) sel.patterns.push_back(p);
    if (an->parsed()) return analyze(ao);
    return inspect(inspect_path, isel);
  } catch (const fevo::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fevo: %s\n", e.what());
    return 2;
  }
}
