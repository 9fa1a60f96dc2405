// fevo::mpi alone: MPI started as a singleton (one process, no launcher), the core's metrics
// computed, and their bytes gathered, broadcast and agreed on through fevo::mpi. Usage:
// consumer SCRATCH_DIR (unused).
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fevo/fevo.hpp>
#include <fevo/mpi.hpp>

#include "check.hpp"

int main(int argc, char** argv) {
  using namespace consumer;
  MPI_Init(&argc, &argv);
  try {
    const fevo::layer_metrics m =
        fevo::compute(fevo::seq, fevo::oihw(a.data(), 2, 1, 1, 2), fevo::oihw(b.data(), 2, 1, 1, 2), tau);
    check(expected(m), "core metrics");
    std::vector<unsigned char> mine(sizeof m.D);
    std::memcpy(mine.data(), &m.D, sizeof m.D);
    const fevo::mpi::gather g(MPI_COMM_WORLD);
    check(g.is_root() && g.size() == 1, "one rank, the root");
    const std::vector<std::vector<unsigned char>> all = g(mine);
    check(all.size() == 1 && all[0] == mine, "gather");
    std::vector<unsigned char> sent = mine;
    fevo::mpi::broadcast(MPI_COMM_WORLD, sent, 0);
    check(sent == mine, "broadcast");
    check(!fevo::mpi::first_error(MPI_COMM_WORLD, std::nullopt), "no error");
    const std::optional<std::string> e = fevo::mpi::first_error(MPI_COMM_WORLD, std::string("x.safetensors: bad"));
    check(e && *e == "x.safetensors: bad", "an error");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    ++failures;
  }
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}
