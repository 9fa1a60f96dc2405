// fevo analyze in one process, and what its MPI run shares with it (analyze.hpp).
#include "analyze.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <exception>
#include <type_traits>

#include <fevo/cpu.hpp>
#include <fevo/io/format.hpp>
#include <fevo/thrust.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cuda_backend.hpp"

namespace fevo_cli {

using fevo::detail::fail;

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

template <class T>
std::vector<fevo::layer_metrics> compute_with(backend b, const std::vector<fevo::layer_pair<T>>& pairs,
                                              double tau, std::vector<fevo::filter_results>& per) {
  switch (b) {
    case backend::seq: return fevo::compute_layers(fevo::seq, pairs, tau, &per);
    case backend::thrust: return fevo::compute_layers(fevo::thrust::par, pairs, tau, &per);
    case backend::cuda: return fevo_cli::compute_on_cuda(pairs, tau, per);
    case backend::cpu: break;
  }
  return fevo::compute_layers(fevo::cpu::par, pairs, tau, &per);
}

template std::vector<fevo::layer_metrics> compute_with<fevo::half>(backend, const std::vector<fevo::layer_pair<fevo::half>>&,
                                                                   double, std::vector<fevo::filter_results>&);
template std::vector<fevo::layer_metrics> compute_with<fevo::bfloat16>(
    backend, const std::vector<fevo::layer_pair<fevo::bfloat16>>&, double, std::vector<fevo::filter_results>&);
template std::vector<fevo::layer_metrics> compute_with<float>(backend, const std::vector<fevo::layer_pair<float>>&,
                                                              double, std::vector<fevo::filter_results>&);
template std::vector<fevo::layer_metrics> compute_with<double>(backend, const std::vector<fevo::layer_pair<double>>&,
                                                               double, std::vector<fevo::filter_results>&);

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
  compute_by_type(
      b, jobs, layers, chunk, o, [](std::size_t j) { return j; }, [](std::size_t, const auto& v) { return v; },
      [&](std::size_t p, std::size_t j, const fevo::layer_metrics& m, fevo::filter_results& f) {
        metrics[p][j] = m;
        per[p][j] = std::move(f);
      });
}

/// The backend asked for, after the checks of the options every run starts with (threads,
/// --resume with --overwrite, tau); sets the OpenMP threads.
backend setup(const analyze_options& o) {
  backend b = backend::cpu;
  if (o.backend_name == "seq") b = backend::seq;
  else if (o.backend_name == "thrust") b = backend::thrust;
  else if (o.backend_name == "cuda") {
    fevo_cli::require_cuda_device();  // throws in a build without CUDA (without_cuda.cpp)
    b = backend::cuda;
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


series_plan plan_series(const analyze_options& o, std::vector<snapshot::header>* headers) {
  series_plan s;
  s.series = io::make_series(o.inputs, headers);
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

/// Drops the pages of `names` from each of `done` (snapshot::evict), each snapshot's share cut in
/// as many parts as there are OpenMP threads: unmapping costs the kernel work on every page, and
/// on the main thread alone it left the others waiting (26-27 ms of a 16-snapshot ResNet-50
/// series).
void evict_all(const std::vector<const snapshot*>& done, const std::vector<std::string>& names) {
  const std::size_t parts = std::size_t(std::max(1, omp_get_max_threads())), tasks = done.size() * parts;
  std::exception_ptr failed;
#pragma omp parallel for schedule(dynamic, 1)
  for (std::size_t k = 0; k < tasks; ++k) {
    try {
      done[k / parts]->evict_part(names, k % parts, parts);
    } catch (...) {
#pragma omp critical(fevo_cli_evict)
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
}

/// One process: every input checked, then the pairs computed in windows, then the summaries.
int analyze_single(const analyze_options& o) {
  const progress clock(0);  // times the whole command, for the summary line
  const backend b = setup(o);

  // ---- every input, before anything is written: the series, each snapshot's header, the layers
  // and tau in their compute types.
  std::vector<snapshot::header> headers;
  const series_plan sp = plan_series(o, &headers);
  const auto& series = sp.series;
  const auto& ref_step = sp.ref_step;
  const std::size_t first = sp.first;

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
      // Every snapshot of the window but the one the next window starts from (the last, or the
      // reference) is done with each chunk once it is computed; in the last window, every one: its
      // pages are dropped by all threads here rather than by the main thread alone at the unmap.
      const bool last_window = k + w == series.size();
      std::vector<const snapshot*> done_with;
      for (const auto& j : jobs)
        if (last_window || j.next != prev) done_with.push_back(j.next.get());
      if (!ref_step || last_window) done_with.push_back(jobs.front().prev.get());
      const progress busy(0);
      for (const auto& chunk : chunks) {
        compute_chunk(b, jobs, layers, chunk, o, metrics, per);
        std::vector<std::string> names;
        for (std::size_t l : chunk) names.push_back(layers[l].name);
        evict_all(done_with, names);
        // The run ends with this window: its summary and checkpoint go to disk while the rest computes.
        if (last_window) writer.summarize_ahead(chunk.back() + 1, per, jobs.back().step);
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

}  // namespace fevo_cli
