// The processes of a fevo command (world.hpp): the one file that depends on whether the command
// was built with MPI (FEVO_CLI_HAVE_MPI).
#include "world.hpp"

#ifdef FEVO_CLI_HAVE_MPI
#include <fevo/mpi.hpp>
#endif

namespace fevo_cli {

bool world::built_with_mpi() {
#ifdef FEVO_CLI_HAVE_MPI
  return true;
#else
  return false;
#endif
}

world::world(int& argc, char**& argv) {
  const launch_info l = launched();
  rank_ = l.rank;
#ifdef FEVO_CLI_HAVE_MPI
  if (!l.by.empty()) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    mpi_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (size_ == 1 && l.size > 1) {
      rank_ = l.rank;
      fail_start("fevo: started as one of " + std::to_string(l.size) + " processes by " + l.by +
                 ", but MPI sees this process alone (each would run the whole analysis): under Slurm use srun "
                 "--mpi=pmix (or pmi2), or start fevo with mpirun");
    }
  }
#else
  (void)argc;
  (void)argv;
  if (l.size > 1)
    fail_start("fevo: started as one of " + std::to_string(l.size) + " processes by " + l.by +
               ", but this fevo command was built without MPI (configure with -DFEVO_ENABLE_MPI=ON where an MPI "
               "is installed, e.g. Debian's libopenmpi-dev); run it as one process, or build it with MPI");
#endif
}

world::~world() {
#ifdef FEVO_CLI_HAVE_MPI
  int off = 0;
  MPI_Finalized(&off);
  if (mpi_ && !off) MPI_Finalize();
#endif
}

void world::agree(const std::optional<std::string>& mine) const {
  std::optional<std::string> first = mine;
#ifdef FEVO_CLI_HAVE_MPI
  if (mpi_) first = fevo::mpi::first_error(MPI_COMM_WORLD, mine);
#endif
  if (first) throw collective_error(*first);
}

void world::broadcast(std::vector<unsigned char>& b) const {
#ifdef FEVO_CLI_HAVE_MPI
  if (mpi_) fevo::mpi::broadcast(MPI_COMM_WORLD, b, 0);
#else
  (void)b;
#endif
}

std::vector<std::vector<unsigned char>> world::gather(const std::vector<unsigned char>& mine) const {
#ifdef FEVO_CLI_HAVE_MPI
  if (mpi_) return fevo::mpi::gather(MPI_COMM_WORLD, 0)(mine);
#endif
  return {mine};
}

std::vector<std::uint64_t> world::sum(std::vector<std::uint64_t> v) const {
#ifdef FEVO_CLI_HAVE_MPI
  if (mpi_ && !v.empty()) {
    std::vector<std::uint64_t> out(v.size());
    fevo::mpi::detail::check(MPI_Allreduce(v.data(), out.data(), int(v.size()), MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD),
                             "MPI_Allreduce");
    return out;
  }
#endif
  return v;
}

void world::fail_start(const std::string& message) {
#ifdef FEVO_CLI_HAVE_MPI
  if (mpi_) MPI_Finalize();
  mpi_ = false;
#endif
  throw collective_error(message);
}

}  // namespace fevo_cli
