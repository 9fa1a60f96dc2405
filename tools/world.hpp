// The processes of a fevo command: this one alone, or the ranks of an MPI job started by mpirun
// or srun. Without MPI (a build with FEVO_ENABLE_MPI off) a command started as one of several
// processes says so and stops, rather than letting each process run the whole analysis.
//
// Errors are collective in an MPI job: every step that may fail on some ranks ends with agree(),
// after which every rank has the message of the lowest rank that failed (collective_error), the
// root prints it and all exit 2; no rank is left waiting for another.
//
// Only world.cpp depends on whether the command has MPI (FEVO_CLI_HAVE_MPI): the other files of
// the command compile once for a build with MPI and one without (tests/mpi's fevo_nompi).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <fevo/error.hpp>

namespace fevo_cli {

/// An error every rank has (after agree()); the root prints it.
struct collective_error : fevo::error {
  using fevo::error::error;
};

/// What a launcher (mpirun, mpiexec, srun) says about this process: how many it started, this
/// one's rank, and which launcher. size 1 when none.
struct launch_info {
  int size = 1, rank = 0;
  std::string by;
};

inline launch_info launched() {
  const auto num = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : -1;
  };
  struct var {
    const char *size, *rank, *by;
  };
  // Open MPI's mpirun; PMI (MPICH's mpiexec, srun --mpi=pmi2); Slurm's srun alone.
  for (const var& v : {var{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "mpirun"},
                       var{"PMI_SIZE", "PMI_RANK", "mpiexec"},
                       var{"SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "srun"}})
    if (num(v.size) > 0) return {num(v.size), std::max(0, num(v.rank)), v.by};
  if (num("PMIX_RANK") >= 0) return {1, num("PMIX_RANK"), "a PMIx launcher"};
  return {};
}

class world {
 public:
  /// Starts MPI when a launcher started this process (in a build with MPI). Throws
  /// collective_error (printed by the launcher's rank 0 alone) when the processes cannot work
  /// together: a build without MPI started as several, or an MPI that sees each alone.
  world(int& argc, char**& argv);
  ~world();
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  /// Whether this command was built with MPI (FEVO_CLI_HAVE_MPI in world.cpp, the one file that
  /// depends on it).
  static bool built_with_mpi();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  /// Started by an MPI launcher in a build with MPI (even as one process): the distributed path.
  bool mpi() const { return mpi_; }

  /// Collective: each rank's error message or none. When any rank has one, every rank throws
  /// collective_error with the lowest failing rank's message.
  void agree(const std::optional<std::string>& mine) const;

  /// Runs f, then agree() on whether it failed on any rank.
  template <class F>
  void step(F&& f) const {
    std::optional<std::string> err;
    try {
      f();
    } catch (const collective_error&) {
      throw;
    } catch (const fevo::error& e) {
      err = e.what();
    } catch (const std::exception& e) {
      err = std::string("fevo: ") + e.what();
    }
    agree(err);
  }

  /// Rank 0's bytes on every rank.
  void broadcast(std::vector<unsigned char>& b) const;
  /// Every rank's bytes, in rank order, on rank 0; nothing elsewhere.
  std::vector<std::vector<unsigned char>> gather(const std::vector<unsigned char>& mine) const;
  /// The element-wise sum over the ranks, on every rank.
  std::vector<std::uint64_t> sum(std::vector<std::uint64_t> v) const;

 private:
  [[noreturn]] void fail_start(const std::string& message);

  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
};

}  // namespace fevo_cli
