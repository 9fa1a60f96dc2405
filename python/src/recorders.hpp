// The recorders behind fevo.Recorder, one interface over the element types and memory spaces:
// fevo::record::recorder<T> with fevo::cpu::par for host memory (here) and
// fevo::record::cuda_recorder<T> for CUDA memory (cuda_entry.cu). Each is the C++ recorder
// itself, so a Python run writes the files, names, columns and journal a C++ run writes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fevo/record/recorder.hpp>

#include "arrays.hpp"

namespace fevo_py {

class recorder_iface {
 public:
  virtual ~recorder_iface() = default;
  /// A layer to watch: `live` is a view of the live weights, valid until the recorder is gone.
  virtual void add_layer(const std::string& name, const array_ref& live) = 0;
  virtual void start(std::int64_t step) = 0;
  virtual std::vector<fevo::layer_metrics> record(std::int64_t step) = 0;
  virtual void close() = 0;
  /// Where the run stands (records, steps, the event file).
  virtual const fevo::record::detail::recorder_base& state() const = 0;
};

/// The host recorder of element type T, computing with `policy` (module.cpp: fevo::cpu::par,
/// whose results do not depend on the number of threads).
template <class T>
class host_recorder final : public recorder_iface {
 public:
  template <class Policy>
  host_recorder(fevo::record::recorder_options o, Policy policy)
      : rec_(std::move(o), fevo::record::any_policy<T>(policy)) {}
  void add_layer(const std::string& name, const array_ref& live) override {
    rec_.add_layer(name, view_of<T>(live, role_prefix(name, "weights")));
  }
  void start(std::int64_t step) override { rec_.start(step); }
  std::vector<fevo::layer_metrics> record(std::int64_t step) override { return rec_.record(step); }
  void close() override { rec_.close(); }
  const fevo::record::detail::recorder_base& state() const override { return rec_; }

 private:
  fevo::record::recorder<T> rec_;
};

}  // namespace fevo_py
