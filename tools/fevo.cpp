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
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fevo/cpu/isa.hpp>
#include <fevo/fevo.hpp>
#include <fevo/io/format.hpp>
#include <fevo/io/snapshot.hpp>

#include "analyze.hpp"
#include "world.hpp"

using namespace fevo_cli;

namespace {

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
  const char* with_mpi =
      fevo_cli::world::built_with_mpi() ? " (with MPI: mpirun -np K fevo analyze ...)" : " (without MPI)";
  // The version, then which of fevo::cpu's kernels (instruction sets) this machine runs.
  app.set_version_flag("--version", "fevo " + std::to_string(FEVO_VERSION_MAJOR) + "." +
                                        std::to_string(FEVO_VERSION_MINOR) + "." +
                                        std::to_string(FEVO_VERSION_PATCH) + with_mpi +
                                        "\nCPU kernels: " + fevo::cpu::instruction_set());

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
