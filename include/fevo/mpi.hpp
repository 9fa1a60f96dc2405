// fevo::mpi: what fevo's MPI uses share (component fevo::mpi, option FEVO_ENABLE_MPI; links
// MPI::MPI_CXX). The rest of fevo links no MPI: the sharded recorder takes any gather function
// (<fevo/record/sharded.hpp>), and this is the one for an MPI communicator.
//
//   MPI_Init(&argc, &argv);
//   fevo::mpi::gather g(MPI_COMM_WORLD);                      // root: rank 0
//   fevo::record::sharded_recorder<float> rec(options, g.is_root(), g);
//
//   fevo::mpi::first_error(comm, mine)   // collective: the message of the lowest rank that failed
//   fevo::mpi::broadcast(comm, bytes, root)
//
// Byte counts of any size: messages over 2^31 - 1 bytes (MPI's int counts) go in rounds.
#pragma once

#include "config.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "error.hpp"

namespace fevo::mpi {

namespace detail {

inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, text, &n);
  ::fevo::detail::fail("MPI: ", what, ": ", std::string(text, std::size_t(n)));
}

inline void require_initialized() {
  int on = 0, off = 0;
  MPI_Initialized(&on);
  MPI_Finalized(&off);
  FEVO_EXPECTS(on && !off, "fevo::mpi: MPI is ", off ? "finalized" : "not initialized (call MPI_Init first)");
}

inline int rank_of(MPI_Comm comm) {
  int r = 0;
  check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
  return r;
}
inline int size_of(MPI_Comm comm) {
  int s = 0;
  check(MPI_Comm_size(comm, &s), "MPI_Comm_size");
  return s;
}

}  // namespace detail

/// Sends `bytes` of `root` to every rank of `comm` (collective; resized on the others).
inline void broadcast(MPI_Comm comm, std::vector<unsigned char>& bytes, int root) {
  detail::require_initialized();
  std::uint64_t n = bytes.size();
  detail::check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm), "MPI_Bcast");
  bytes.resize(std::size_t(n));
  for (std::uint64_t at = 0; at < n;) {
    const int count = int(std::min<std::uint64_t>(n - at, INT_MAX));
    detail::check(MPI_Bcast(bytes.data() + at, count, MPI_BYTE, root, comm), "MPI_Bcast");
    at += std::uint64_t(count);
  }
}

/// Collective: each rank passes its error message, or none; every rank gets the message of the
/// lowest rank that has one, or none when no rank does. (So that all ranks stop together, with
/// the same message, when any of them fails.)
inline std::optional<std::string> first_error(MPI_Comm comm, const std::optional<std::string>& mine) {
  detail::require_initialized();
  const int size = detail::size_of(comm), me = mine ? detail::rank_of(comm) : size;
  int first = size;
  detail::check(MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  if (first == size) return std::nullopt;
  std::vector<unsigned char> text;
  if (mine && first == me) text.assign(mine->begin(), mine->end());
  broadcast(comm, text, first);
  return std::string(text.begin(), text.end());
}

/// Gathers each rank's bytes to `root` of `comm`: on the root, every rank's bytes in rank order;
/// elsewhere nothing. Collective. A fevo::record::gather_fn for the sharded recorder.
class gather {
 public:
  explicit gather(MPI_Comm comm = MPI_COMM_WORLD, int root = 0) : comm_(comm), root_(root) {
    detail::require_initialized();
    rank_ = detail::rank_of(comm);
    size_ = detail::size_of(comm);
    FEVO_EXPECTS(root >= 0 && root < size_, "fevo::mpi::gather: root ", root, " is not a rank of a communicator of ",
                 size_);
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == root_; }

  std::vector<std::vector<unsigned char>> operator()(const std::vector<unsigned char>& mine) const {
    const std::uint64_t n = mine.size();
    std::uint64_t longest = 0;
    detail::check(MPI_Allreduce(&n, &longest, 1, MPI_UINT64_T, MPI_MAX, comm_), "MPI_Allreduce");
    std::vector<std::uint64_t> sizes(is_root() ? std::size_t(size_) : 0);
    detail::check(MPI_Gather(&n, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, root_, comm_), "MPI_Gather");
    std::vector<std::vector<unsigned char>> out(sizes.size());
    for (std::size_t r = 0; r < out.size(); ++r) out[r].reserve(std::size_t(sizes[r]));
    // Rounds of at most `per` bytes from each rank, so that the root's int counts and
    // displacements (their sum) stay below 2^31.
    const std::uint64_t per = std::max<std::uint64_t>(1, std::uint64_t(INT_MAX) / std::uint64_t(size_));
    std::vector<int> counts(out.size()), displs(out.size());
    std::vector<unsigned char> staging;
    for (std::uint64_t at = 0; at < longest; at += per) {
      const int mine_count = int(n > at ? std::min(per, n - at) : 0);
      std::uint64_t total = 0;
      for (std::size_t r = 0; r < out.size(); ++r) {
        counts[r] = int(sizes[r] > at ? std::min(per, sizes[r] - at) : 0);
        displs[r] = int(total);
        total += std::uint64_t(counts[r]);
      }
      staging.resize(std::size_t(total));
      detail::check(MPI_Gatherv(mine_count ? mine.data() + at : nullptr, mine_count, MPI_BYTE, staging.data(),
                                counts.data(), displs.data(), MPI_BYTE, root_, comm_),
                    "MPI_Gatherv");
      for (std::size_t r = 0; r < out.size(); ++r)
        out[r].insert(out[r].end(), staging.begin() + displs[r], staging.begin() + displs[r] + counts[r]);
    }
    return out;
  }

 private:
  MPI_Comm comm_;
  int root_;
  int rank_ = 0, size_ = 1;
};

}  // namespace fevo::mpi
