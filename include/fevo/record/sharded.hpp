// fevo::record::sharded_recorder: the recorder for weights sharded over the ranks of a training
// job (ZeRO, FSDP), with the transport left to the caller.
//
//   // every rank, with the same options and the same layers in the same order:
//   fevo::record::sharded_recorder<float> rec(o, rank == 0, gather);   // gather: see below
//   rec.add_fragment("conv1.weight", {64, 3, 7, 7}, begin, end, my_shard_ptr);  // [begin, end) of
//   ...                                                  // the flattened [O, I, H, W] weights
//   rec.start(step);
//   for (...) { train(); if (step % 100 == 0) rec.record(step); }   // collective
//   rec.close();
//
// Each rank keeps a copy of its own fragments (the previous snapshot) and at record(step)
// computes the flat partial of each (fevo::compute_flat_partial, <fevo/fragment.hpp>), encodes
// them in a few bytes per filter it touches, and hands the bytes to the gather. The gather is any
// function object (std::function) called on every rank at every record(), collectively:
//
//   std::vector<std::vector<unsigned char>> gather(const std::vector<unsigned char>& mine);
//
// returning, on the root, every rank's bytes (its own included, any order) and elsewhere nothing.
// MPI: fevo::mpi::gather (<fevo/mpi.hpp>); torch.distributed: gather_object to rank 0; NCCL or
// gloo: a gather of the sizes, then of the bytes. fevo links none of them. The root merges each
// layer's fragments (sorted by where they start: they must tile the layer) and writes the run's
// files exactly as fevo::record::recorder does (run_writer.hpp: the same files, crash safety and
// resuming); the other ranks write nothing.
//
// The merge is exact: counts behind S and Z equal the unsharded ones (a channel cut between two
// ranks is counted once), D within the core's bound; a fragment that holds whole filters (a dim-0
// shard, as FSDP2 keeps) gives those filters' D_i bit for bit (fragment.hpp).
//
// Every rank must call start(), record(step) with the same steps, and close(). The bytes name the
// step and every layer (name, extents, range), so that a rank that registered other layers, or
// recorded another step, is a fevo::error on the root naming the rank's position in the gather.
// Errors of the files (I/O) are raised on the root alone. A step that a reopened run already holds
// is computed and gathered on every rank but written nowhere (as the recorder's replay).
#pragma once

#include "../config.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../detail/little_endian.hpp"
#include "../fragment.hpp"
#include "recorder.hpp"

namespace fevo::record {

/// The caller's gather (see the file comment).
using gather_fn = std::function<std::vector<std::vector<unsigned char>>(const std::vector<unsigned char>&)>;

namespace detail {

/// The bytes a rank sends per record: "FEVOFRAG", version, step, then per layer its name, extents,
/// range, first filter, per filter touched (sum_sq as the bits of a double, changed, weights,
/// zero_channels, channels, nonfinite) and the cut channels (channel, changed). Little-endian u64.
struct fragment_wire : ::fevo::detail::byte_writer {
  static constexpr char magic[9] = "FEVOFRAG";
  static constexpr std::uint64_t version = 1;

  void put(std::int64_t step, const std::vector<std::string>& names, const std::vector<flat_partial>& parts) {
    b.insert(b.end(), magic, magic + 8);
    u64(version);
    u64(std::uint64_t(step));
    u64(parts.size());
    for (std::size_t l = 0; l < parts.size(); ++l) {
      const flat_partial& p = parts[l];
      text(names[l]);
      for (auto e : p.extents) u64(e);
      u64(p.begin);
      u64(p.end);
      u64(p.first_filter);
      u64(p.filters.size());
      for (const partial& f : p.filters) {
        f64(f.sum_sq);
        u64(f.changed);
        u64(f.weights);
        u64(f.zero_channels);
        u64(f.channels);
        u64(f.nonfinite);
      }
      u64(p.cut.size());
      for (const auto& c : p.cut) {
        u64(c.channel);
        u64(c.changed);
      }
    }
  }
};

/// Reads one rank's bytes back; fevo::error naming the piece when they are not what a
/// sharded_recorder with the same layers sends for `step`.
class fragment_reader {
 public:
  fragment_reader(const std::vector<unsigned char>& b, std::size_t piece) : b_(b), piece_(piece) {}

  std::vector<flat_partial> get(std::int64_t step, const std::vector<layer_info>& layers) {
    need(8);
    FEVO_EXPECTS(std::memcmp(b_.data(), fragment_wire::magic, 8) == 0, where(), "not the bytes of a sharded_recorder");
    at_ = 8;
    FEVO_EXPECTS(u64() == fragment_wire::version, where(), "another version of fevo's fragment bytes");
    const auto s = std::int64_t(u64());
    FEVO_EXPECTS(s == step, where(), "recorded step ", s, " while the root recorded step ", step,
                 " (every rank must call record() with the same steps)");
    FEVO_EXPECTS(u64() == layers.size(), where(), "another number of layers than the root's ", layers.size());
    std::vector<flat_partial> out(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const std::uint64_t n = u64();
      need(n);
      const std::string name(reinterpret_cast<const char*>(b_.data() + at_), std::size_t(n));
      at_ += std::size_t(n);
      FEVO_EXPECTS(name == layers[l].name, where(), "layer #", l, " is '", name, "', the root's is '", layers[l].name,
                   "' (every rank must add the same layers in the same order)");
      flat_partial& p = out[l];
      for (auto& e : p.extents) e = u64();
      for (std::size_t r = 0; r < 4; ++r)
        FEVO_EXPECTS(p.extents[r] == layers[l].extents[r], where(), "layer '", name, "' has other extents than on the root");
      p.begin = u64();
      p.end = u64();
      p.first_filter = u64();
      const std::uint64_t nf = u64();
      need_items(nf, 48);
      p.filters.resize(std::size_t(nf));
      for (partial& f : p.filters) {
        const std::uint64_t bits = u64();
        std::memcpy(&f.sum_sq, &bits, 8);
        f.changed = u64();
        f.weights = u64();
        f.zero_channels = u64();
        f.channels = u64();
        f.nonfinite = u64();
      }
      const std::uint64_t nc = u64();
      FEVO_EXPECTS(nc <= 2, where(), "layer '", name, "': ", nc, " cut channels");
      p.cut.resize(std::size_t(nc));
      for (auto& c : p.cut) {
        c.channel = u64();
        c.changed = u64();
      }
      const std::uint64_t total = ::fevo::detail::flat_layer_size(p.extents), CHW = p.extents[1] * p.extents[2] * p.extents[3];
      FEVO_EXPECTS(p.begin <= p.end && p.end <= total &&
                       (p.empty() || (p.first_filter == p.begin / CHW && nf == (p.end - 1) / CHW - p.first_filter + 1)),
                   where(), "layer '", name, "': range [", p.begin, ", ", p.end, ") does not fit its filters");
    }
    FEVO_EXPECTS(at_ == b_.size(), where(), b_.size() - at_, " bytes too many");
    return out;
  }

 private:
  std::string where() const { return "sharded_recorder: the bytes of gathered piece #" + std::to_string(piece_) + ": "; }
  void need(std::uint64_t n) const {
    FEVO_EXPECTS(n <= b_.size() && at_ <= b_.size() - std::size_t(n), where(), "cut short");
  }
  void need_items(std::uint64_t n, std::uint64_t size) const {
    FEVO_EXPECTS(n <= (b_.size() - at_) / size, where(), "cut short");
  }
  std::uint64_t u64() {
    need(8);
    const std::uint64_t v = ::fevo::detail::get_u64(b_.data() + at_);
    at_ += 8;
    return v;
  }
  const std::vector<unsigned char>& b_;
  std::size_t piece_;
  std::size_t at_ = 0;
};

}  // namespace detail

/// The recorder of layers sharded as flat fragments over the ranks of a job (see the file comment).
template <class T, class Policy = any_policy<T>>
class sharded_recorder : public detail::recorder_base {
  static_assert(is_element<T>::value && !std::is_const_v<T>,
                "fevo::record::sharded_recorder<T>: T is float, double, fevo::half or fevo::bfloat16");

 public:
  using value_type = T;

  /// `root`: this process writes the files (its gather returns the pieces). options.out_dir and
  /// tau are needed on every rank (tau is checked everywhere; the directory is used by the root).
  sharded_recorder(recorder_options options, bool root, gather_fn gather, Policy policy = Policy())
      : recorder_base(std::move(options), compute_t<T>{}), root_(root), gather_(std::move(gather)),
        policy_(std::move(policy)) {
    FEVO_EXPECTS(gather_ != nullptr, "sharded_recorder: no gather function");
  }

  /// This rank's fragment of a layer: elements [begin, end) of the layer's weights of extents
  /// {N, C, H, W} flattened as contiguous [O, I, H, W], and `live`, the live weights of that range
  /// (end - begin elements; may be null for an empty range), valid until close(). Every rank adds
  /// every layer, in the same order, before start().
  void add_fragment(const std::string& name, const std::array<std::uint64_t, 4>& extents, std::uint64_t begin,
                    std::uint64_t end, const T* live) {
    FEVO_EXPECTS(!started_ && !closed_, "recorder: add_fragment('", name, "') after start() or close()");
    for (std::size_t r = 0; r < 4; ++r)
      FEVO_EXPECTS(extents[r] > 0, "recorder: layer '", name, "': extent(", r, ") is zero");
    FEVO_EXPECTS(begin <= end && end <= ::fevo::detail::flat_layer_size(extents), "recorder: layer '", name,
                 "': range [", begin, ", ", end, ") is not inside its ", ::fevo::detail::flat_layer_size(extents),
                 " weights");
    FEVO_EXPECTS(begin == end || live != nullptr, "recorder: layer '", name, "': null pointer");
    std::array<std::size_t, 4> ext{};
    for (std::size_t r = 0; r < 4; ++r) ext[r] = std::size_t(extents[r]);
    static const T placeholder{};
    check_new_layer(name, ext, begin == end ? &placeholder : live);
    frags_.push_back({name, extents, begin, end, live, {}});
  }

  /// Copies this rank's fragments as the snapshot of `step`; the root opens (or reopens) the run.
  void start(std::int64_t step) {
    std::size_t bytes = 0;
    for (const auto& f : frags_) bytes += std::size_t(f.end - f.begin) * sizeof(T);
    const auto take = [&] {
      for (auto& f : frags_) f.copy.assign(f.live, f.live + (f.end - f.begin));
    };
    if (root_) {
      start_run(step, element_traits<T>::name, bytes, take);
    } else {
      FEVO_EXPECTS(!started_ && !closed_, "recorder: start() called twice or after close()");
      FEVO_EXPECTS(!desc_.empty(), "recorder: no layer to record (add_fragment before start)");
      take();
      snapshot_step_ = step;
      copy_bytes_ = bytes;
      started_ = true;
    }
  }

  /// Collective: every rank computes its fragments' partials against the kept copy, the gather
  /// brings them to the root, which merges them and writes the record; then the kept copy becomes
  /// the live weights at `step`. On the root the layers' metrics, in the order they were added
  /// (empty for a step already in a reopened run); elsewhere an empty vector.
  std::vector<layer_metrics> record(std::int64_t step) {
    FEVO_EXPECTS(started_ && !closed_, "recorder: record(", step, ") ", closed_ ? "after close()" : "before start()");
    FEVO_EXPECTS(step > snapshot_step_, "recorder: record(", step,
                 "): the step must be greater than the kept snapshot's step ", snapshot_step_);
    std::vector<flat_partial> mine;
    std::vector<std::string> names;
    for (const auto& f : frags_) {
      mine.push_back(compute_flat_partial(policy_, f.copy.data(), f.live, f.begin, f.end, f.extents, opts_.tau));
      names.push_back(f.name);
    }
    detail::fragment_wire w;
    w.put(step, names, mine);
    std::vector<std::vector<unsigned char>> pieces = gather_(w.b);
    if (!root_) {
      advance();
      snapshot_step_ = step;
      return {};
    }
    FEVO_EXPECTS(!pieces.empty(), "sharded_recorder: the gather gave the root nothing (it must return every rank's bytes there)");
    return record_run(
        step,
        [&](std::vector<filter_results>& per) {
          std::vector<std::vector<flat_partial>> by_layer(frags_.size());
          for (std::size_t k = 0; k < pieces.size(); ++k) {
            std::vector<flat_partial> got = detail::fragment_reader(pieces[k], k).get(step, desc_);
            for (std::size_t l = 0; l < got.size(); ++l) by_layer[l].push_back(std::move(got[l]));
          }
          std::vector<layer_metrics> m(frags_.size());
          per.resize(frags_.size());
          for (std::size_t l = 0; l < frags_.size(); ++l) {
            auto& parts = by_layer[l];
            std::stable_sort(parts.begin(), parts.end(),
                             [](const flat_partial& a, const flat_partial& b) { return a.begin < b.begin; });
            flat_partial all;
            try {
              for (const auto& p : parts) merge(all, p);
              m[l] = finalize(all, per[l]);
            } catch (const ::fevo::error& e) {
              ::fevo::detail::fail("sharded_recorder: layer '", frags_[l].name, "': the ranks' fragments do not tile it: ",
                                   std::string(e.what()).substr(6));
            }
          }
          return m;
        },
        [&] { advance(); });
  }

  bool is_root() const { return root_; }

 private:
  struct fragment {
    std::string name;
    std::array<std::uint64_t, 4> extents;
    std::uint64_t begin, end;
    const T* live;
    std::vector<T> copy;
  };
  void advance() {
    for (auto& f : frags_)
      if (f.end > f.begin) std::memcpy(static_cast<void*>(f.copy.data()), static_cast<const void*>(f.live), (f.end - f.begin) * sizeof(T));
  }

  bool root_;
  gather_fn gather_;
  Policy policy_;
  std::vector<fragment> frags_;
};

}  // namespace fevo::record
