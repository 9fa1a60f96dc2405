// Under mpirun -np K: fevo::record::sharded_recorder with fevo::mpi::gather, each rank holding a
// flat fragment of every layer, against fevo::record::recorder over the whole layers (on rank 0).
//
//   recorder_mpi DIR filters    fragments of whole filters: metrics.csv, filter_summary.csv and
//                               series/ byte for byte the recorder's
//   recorder_mpi DIR anywhere   fragments cut inside filters and channels: the same rows but for
//                               D and D_per_weight, within 1e-12 relative
//
// Every rank exits 0 when the files agree, 1 otherwise (rank 0 says what differs).
#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fevo/mpi.hpp>
#include <fevo/record/recorder.hpp>
#include <fevo/record/sharded.hpp>

namespace {

const std::vector<std::array<std::uint64_t, 4>> extents = {{13, 6, 3, 3}, {20, 7, 1, 1}};
const std::vector<std::string> names = {"features.conv", "classifier.weight"};

/// The whole layer's weight k at `step`: channels that never move, and ones that move every
/// other step by more than tau.
float weight(std::size_t layer, std::uint64_t k, int step) {
  const std::uint64_t h = (k * 2654435761u + layer * 97) % 1000;
  const std::uint64_t channel = k / (extents[layer][2] * extents[layer][3]);
  const bool moves = channel % 3 != 0;
  return float(h) / 1000.0f + (moves ? 0.07f * float((step + int(h % 2)) / 2) * (h % 5 == 0 ? -1.0f : 1.0f) : 0.0f);
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<std::vector<std::string>> csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> row;
    std::istringstream ls(line);
    for (std::string f; std::getline(ls, f, ',');) row.push_back(f);
    rows.push_back(row);
  }
  return rows;
}

fevo::record::recorder_options options(const std::string& dir) {
  fevo::record::recorder_options o;
  o.out_dir = dir;
  o.tau = 0.05;
  o.per_filter_series = true;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int ok = 1;
  {
    const fevo::mpi::gather g(MPI_COMM_WORLD);
    const std::string dir = argv[1], mode = argv[2];
    const std::uint64_t K = std::uint64_t(g.size()), r = std::uint64_t(g.rank());
    if (g.is_root()) {  // a fresh run (a directory left by an earlier test run would be resumed)
      std::error_code ignored;
      std::filesystem::remove_all(dir + "/sharded", ignored);
      std::filesystem::remove_all(dir + "/whole", ignored);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const int steps = 6;
    std::vector<std::vector<float>> mine(extents.size());
    std::vector<std::uint64_t> begin(extents.size()), end(extents.size());
    for (std::size_t l = 0; l < extents.size(); ++l) {
      const auto& e = extents[l];
      const std::uint64_t chw = e[1] * e[2] * e[3], total = e[0] * chw;
      const auto bound = [&](std::uint64_t q) -> std::uint64_t {
        if (q == 0 || q == K) return q == 0 ? 0 : total;
        if (mode == "filters") return e[0] * q / K * chw;
        return std::min(total, total * q / K + (q * 37 + l) % 11);  // inside filters and channels
      };
      begin[l] = bound(r);
      end[l] = bound(r + 1);
      mine[l].resize(end[l] - begin[l]);
    }
    const auto fill = [&](int step) {
      for (std::size_t l = 0; l < extents.size(); ++l)
        for (std::uint64_t k = begin[l]; k < end[l]; ++k) mine[l][k - begin[l]] = weight(l, k, step);
    };
    fill(0);
    fevo::record::sharded_recorder<float> rec(options(dir + "/sharded"), g.is_root(), g);
    for (std::size_t l = 0; l < extents.size(); ++l)
      rec.add_fragment(names[l], extents[l], begin[l], end[l], mine[l].empty() ? nullptr : mine[l].data());
    rec.start(0);
    for (int s = 1; s <= steps; ++s) {
      fill(s);
      rec.record(s);
    }
    rec.close();

    if (g.is_root()) {
      std::vector<std::vector<float>> whole(extents.size());
      const auto fill_whole = [&](int step) {
        for (std::size_t l = 0; l < extents.size(); ++l) {
          whole[l].resize(extents[l][0] * extents[l][1] * extents[l][2] * extents[l][3]);
          for (std::uint64_t k = 0; k < whole[l].size(); ++k) whole[l][k] = weight(l, k, step);
        }
      };
      fill_whole(0);
      fevo::record::recorder<float> one(options(dir + "/whole"));
      for (std::size_t l = 0; l < extents.size(); ++l) {
        const auto& e = extents[l];
        one.add_layer(names[l], fevo::oihw(whole[l].data(), (long long)e[0], (long long)e[1], (long long)e[2], (long long)e[3]));
      }
      one.start(0);
      for (int s = 1; s <= steps; ++s) {
        fill_whole(s);
        one.record(s);
      }
      one.close();
      const auto same = [&](const std::string& f) { return slurp(dir + "/sharded/" + f) == slurp(dir + "/whole/" + f); };
      if (mode == "filters") {
        for (const char* f : {"metrics.csv", "filter_summary.csv", "series/features.conv.D.npy", "series/features.conv.Z.npy",
                              "series/classifier.weight.S.npy", "series/steps.npy"})
          if (!same(f)) {
            std::fprintf(stderr, "recorder_mpi: %s differs from the recorder's\n", f);
            ok = 0;
          }
      } else {
        const auto a = csv(slurp(dir + "/sharded/metrics.csv")), b = csv(slurp(dir + "/whole/metrics.csv"));
        ok = a.size() == b.size() && a.size() == 1 + std::size_t(steps) * extents.size();
        for (std::size_t i = 1; ok && i < a.size(); ++i)
          for (std::size_t c = 0; c < a[i].size(); ++c)
            if (c == 3 || c == 8 ? std::abs(std::stod(a[i][c]) - std::stod(b[i][c])) > 1e-12 * std::abs(std::stod(b[i][c]))
                       : a[i][c] != b[i][c]) {
              std::fprintf(stderr, "recorder_mpi: metrics.csv row %zu column %zu: %s vs %s\n", i, c, a[i][c].c_str(),
                           b[i][c].c_str());
              ok = 0;
            }
        if (!ok && a.size() != b.size()) std::fprintf(stderr, "recorder_mpi: %zu rows vs %zu\n", a.size(), b.size());
      }
      if (ok)
        std::printf("recorder_mpi: %llu ranks, fragments of %s: the recorder's files\n", (unsigned long long)K,
                    mode == "filters" ? "whole filters (byte for byte)" : "any range (D within 1e-12)");
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  }
  MPI_Finalize();
  return ok ? 0 : 1;
}
