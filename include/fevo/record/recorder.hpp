// fevo::record::recorder: the metrics of chosen layers of a network recorded during training.
//
//   #include <fevo/record/recorder.hpp>
//   #include <fevo/cpu.hpp>                       // optional: the parallel CPU backend
//
//   fevo::record::recorder_options o;
//   o.out_dir = "runs/fevo";
//   o.tau = 0.1;                                  // the paper: the initial learning rate
//   fevo::record::recorder<float> rec(o, fevo::cpu::par);   // any host policy; default fevo::seq
//   rec.add_layer("conv1.weight", fevo::oihw(w1, 64, 3, 7, 7));   // views of the LIVE weights
//   rec.add_layer("layer1.0.conv1.weight", fevo::oihw(w2, 64, 64, 3, 3));
//   rec.start(step);                              // copies the weights (or reopens the run)
//   for (...) { train(); if (step % 100 == 0) rec.record(step); }
//   rec.close();                                  // summaries; also done by the destructor
//
// The recorder keeps one copy of the registered layers (the previous snapshot; memory: one extra
// copy of those weights, in their element type, plus about 150 bytes per filter for per-filter
// results, summary accumulators and the journal record). record(step) computes D, S, Z of every
// layer between that copy and the live weights in one compute_layers call, writes the record
// (see run_writer.hpp for the files and their crash safety) and then copies the live weights
// over the kept copy. Not thread-safe: call it from the thread that owns the weights, between
// optimiser steps. Layers in CUDA device memory: fevo::record::cuda_recorder<T> from
// <fevo/record/cuda.cuh> keeps the copy on the device.
//
// Steps. record(step) needs step > the step of the kept snapshot (else fevo::error: a caller
// bug). After a reopened run (resume), records whose step is <= the last step already in the
// files are skipped: they return an empty vector and only advance the kept copy, so a driver that
// restarts from an older checkpoint replays without duplicate rows, and the first new row has
// step_prev = the last skipped step. start(step) on a reopened run may be before, at or after the
// last recorded step; when after, the first new row shows the gap (its step_prev is not the
// previous row's step).
#pragma once

#include "../config.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../detail/tau.hpp"
#include "../fevo.hpp"
#include "run_writer.hpp"

namespace fevo::record {

namespace detail {
template <class P, class T, class = void>
struct is_host_policy : std::false_type {};
template <class P, class T>
struct is_host_policy<P, T,
                      std::void_t<decltype(evaluate(std::declval<const P&>(),
                                                    std::declval<layer_task<T, host_space>*>(),
                                                    std::size_t{}))>> : std::true_type {};
}  // namespace detail

/// Any host backend policy with its type erased (fevo::seq, fevo::cpu::par, par.threads(n), ...),
/// so that recorder<T> takes any of them. Default: fevo::seq.
template <class T>
class any_policy {
 public:
  any_policy() : any_policy(::fevo::seq) {}
  template <class P, class = std::enable_if_t<!std::is_same_v<std::decay_t<P>, any_policy> &&
                                              detail::is_host_policy<std::decay_t<P>, T>::value>>
  any_policy(P p)  // NOLINT: implicit on purpose
      : run_([p](layer_task<T, host_space>* t, std::size_t n) { evaluate(p, t, n); }) {}

  friend void evaluate(const any_policy& p, layer_task<T, host_space>* tasks, std::size_t n) {
    p.run_(tasks, n);
  }

 private:
  std::function<void(layer_task<T, host_space>*, std::size_t)> run_;
};

namespace detail {

/// What every recorder shares: options, layer names, the run's files (run_writer), the steps,
/// and the order of a record: compute, write, advance. Not used directly.
class recorder_base {
 public:
  recorder_base(const recorder_base&) = delete;
  recorder_base& operator=(const recorder_base&) = delete;

  /// Writes filter_summary.csv (and the series files) atomically and closes the files. Idempotent;
  /// after it record() throws. A failed close may be called again.
  void close() {
    if (closed_) return;
    if (writer_) writer_->close();
    closed_ = true;
  }

  /// The last step in the files (all sessions of the run); empty before the first record.
  std::optional<std::int64_t> last_recorded_step() const {
    return writer_ ? writer_->last_step() : std::nullopt;
  }
  /// The step of the kept snapshot (the step_prev of the next record).
  std::int64_t snapshot_step() const { return snapshot_step_; }
  /// Records in the run, all sessions.
  std::uint64_t records() const { return writer_ ? writer_->records() : 0; }
  /// Per-filter results of each layer of the last record() (empty after a skipped one).
  const std::vector<filter_results>& last_filters() const { return per_; }
  /// Bytes of the kept copy of the weights.
  std::size_t copy_bytes() const { return copy_bytes_; }
  std::size_t layer_count() const { return desc_.size(); }
  const recorder_options& options() const { return opts_; }
  /// The event file in use (empty without tensorboard or before start()).
  std::string events_path() const { return writer_ ? writer_->events_path() : std::string(); }

 protected:
  template <class CT>
  recorder_base(recorder_options options, CT /*compute type tag*/) : opts_(std::move(options)) {
    FEVO_EXPECTS(!opts_.out_dir.empty(), "recorder: out_dir is empty");
    ::fevo::detail::check_tau<CT>(opts_.tau, "recorder: ");
  }

  /// Writes the summaries (close()); never throws: an error is printed to stderr. Call close()
  /// yourself to see it as an exception.
  ~recorder_base() {
    try {
      close();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fevo: recorder for '%s' could not close: %s\n", opts_.out_dir.c_str(), e.what());
    } catch (...) {
      std::fprintf(stderr, "fevo: recorder for '%s' could not close\n", opts_.out_dir.c_str());
    }
  }

  void check_new_layer(const std::string& name, const std::array<std::size_t, 4>& ext, const void* data) {
    FEVO_EXPECTS(!started_ && !closed_, "recorder: add_layer('", name, "') after start() or close()");
    FEVO_EXPECTS(!name.empty(), "recorder: a layer name is empty");
    FEVO_EXPECTS(name.find_first_of(std::string("\n\r\0", 3)) == std::string::npos,
                 "recorder: layer name '", name, "' contains a newline, carriage return or NUL");
    for (std::size_t r = 0; r < 4; ++r)
      FEVO_EXPECTS(ext[r] > 0, "recorder: layer '", name, "': extent(", r, ") is zero");
    FEVO_EXPECTS(data != nullptr, "recorder: layer '", name, "': null pointer");
    FEVO_EXPECTS(names_.insert(name).second, "recorder: layer '", name, "' is added twice");
    desc_.push_back({name, ext});
  }

  /// Opens the run; `take_snapshot` then makes the kept copy (it may throw: the run is closed).
  template <class Snapshot>
  void start_run(std::int64_t step, const char* dtype, std::size_t copy_bytes, Snapshot&& take_snapshot) {
    FEVO_EXPECTS(!started_ && !closed_, "recorder: start() called twice or after close()");
    FEVO_EXPECTS(!desc_.empty(), "recorder: no layer to record (add_layer before start)");
    auto w = std::make_unique<run_writer>(opts_, desc_, dtype);
    w->open();
    take_snapshot();
    writer_ = std::move(w);
    snapshot_step_ = step;
    copy_bytes_ = copy_bytes;
    started_ = true;
  }

  /// The order of a record. compute(per) gives the metrics of every layer between the kept copy
  /// and the live weights; advance() makes the kept copy the live weights. A step already in a
  /// reopened run is skipped (advance only).
  template <class Compute, class Advance>
  std::vector<layer_metrics> record_run(std::int64_t step, Compute&& compute, Advance&& advance) {
    FEVO_EXPECTS(started_ && !closed_, "recorder: record(", step, ") ",
                 closed_ ? "after close()" : "before start()");
    FEVO_EXPECTS(step > snapshot_step_, "recorder: record(", step,
                 "): the step must be greater than the kept snapshot's step ", snapshot_step_);
    writer_->maybe_compact();
    const auto last = writer_->last_step();
    if (last && step <= *last) {  // replay after a restart from an older checkpoint
      per_.clear();
      advance();
      snapshot_step_ = step;
      return {};
    }
    std::vector<layer_metrics> m = compute(per_);
    writer_->write(snapshot_step_, step, m, per_);
    advance();
    snapshot_step_ = step;
    return m;
  }

  recorder_options opts_;
  std::vector<layer_info> desc_;
  std::unordered_set<std::string> names_;
  std::vector<filter_results> per_;
  std::unique_ptr<run_writer> writer_;
  std::int64_t snapshot_step_ = 0;
  std::size_t copy_bytes_ = 0;
  bool started_ = false;
  bool closed_ = false;
};

}  // namespace detail

/// The recorder of layers in host memory, computed with any host policy.
template <class T, class Policy = any_policy<T>>
class recorder : public detail::recorder_base {
  static_assert(is_element<T>::value && !std::is_const_v<T>,
                "fevo::record::recorder<T>: T is float, double, fevo::half or fevo::bfloat16");

 public:
  using value_type = T;
  using policy_type = Policy;

  explicit recorder(recorder_options options, Policy policy = Policy())
      : recorder_base(std::move(options), compute_t<T>{}), policy_(std::move(policy)) {}

  /// Registers a layer to watch: a name (unique; no newline, carriage return or NUL) and a view of
  /// its live weights in host memory, which must stay valid until close(). Before start() only.
  void add_layer(const std::string& name, filter_view<const T> live) {
    check_new_layer(name, live.extents(), live.data_handle());
    layer l;
    l.name = name;
    l.live = live;
    layers_.push_back(std::move(l));
  }

  /// Opens the run (new, or reopened after a crash or a close when options.resume) and copies the
  /// live weights as the snapshot of `step`. Throws fevo::error on I/O errors, on a run in out_dir
  /// recorded with other layers, tau, element type or per_filter_series, and on a run in use by
  /// another recorder.
  void start(std::int64_t step) {
    std::size_t bytes = 0;
    for (const auto& l : layers_) bytes += l.live.size() * sizeof(T);
    start_run(step, element_traits<T>::name, bytes, [&] {
      pairs_.clear();
      for (auto& l : layers_) {
        l.copy.assign(l.live.size(), T{});
        if (l.live.is_exhaustive())  // same layout as the live weights: advance is one memcpy
          l.kept = strided(static_cast<const T*>(l.copy.data()), to_index4(l.live.extents()),
                           to_index4(l.live.strides()));
        else
          l.kept = oihw(static_cast<const T*>(l.copy.data()), l.live.filters(), l.live.channels(),
                        l.live.rows(), l.live.cols());
        pairs_.push_back(layer_pair<T>{l.name, l.kept, l.live});
      }
      advance();
    });
  }

  /// D, S, Z of every layer between the kept snapshot and the live weights, in the order the
  /// layers were added (one compute_layers call); written to the files before it returns; then
  /// the kept snapshot becomes the live weights at `step`. Empty (nothing written) for a step
  /// already in a reopened run. A record whose write failed (fevo::error) changed nothing and may
  /// be retried.
  std::vector<layer_metrics> record(std::int64_t step) {
    return record_run(
        step, [&](std::vector<filter_results>& per) { return compute_layers(policy_, pairs_, opts_.tau, &per); },
        [&] { advance(); });
  }

 private:
  struct layer {
    std::string name;
    filter_view<const T> live;
    std::vector<T> copy;
    filter_view<const T> kept;
  };

  static index4 to_index4(const std::array<std::size_t, 4>& a) { return index4(a[0], a[1], a[2], a[3]); }

  /// kept := live.
  void advance() {
    for (auto& l : layers_) {
      if (l.live.is_exhaustive()) {
        std::memcpy(static_cast<void*>(l.copy.data()), static_cast<const void*>(l.live.data_handle()),
                    l.live.size() * sizeof(T));
      } else {
        T* out = l.copy.data();
        const auto& v = l.live;
        for (std::size_t i = 0; i < v.filters(); ++i)
          for (std::size_t c = 0; c < v.channels(); ++c)
            for (std::size_t h = 0; h < v.rows(); ++h)
              for (std::size_t w = 0; w < v.cols(); ++w) *out++ = v(i, c, h, w);
      }
    }
  }

  Policy policy_;
  std::vector<layer> layers_;
  std::vector<layer_pair<T>> pairs_;
};

}  // namespace fevo::record

namespace fevo {
using record::recorder;
using record::recorder_options;
}  // namespace fevo
