// What the extension knows of an array once it has been imported (module.cpp does the import
// with nanobind): a pointer, an element type, where the memory lives, and the logical extents
// and strides (filter, channel, row, col) in elements. Shared by the host part (module.cpp) and
// the CUDA part (cuda_entry.cu), so it includes nothing of nanobind or CUDA.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <fevo/fevo.hpp>

namespace fevo_py {

enum class dtype : int { f32, f64, f16, bf16 };

inline const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "float32";
    case dtype::f64: return "float64";
    case dtype::f16: return "float16";
    case dtype::bf16: return "bfloat16";
  }
  return "?";
}

/// One snapshot of a layer as fevo reads it, without a copy.
struct array_ref {
  const void* data = nullptr;
  dtype type = dtype::f32;
  int device = -1;  ///< -1: host memory; else the ordinal of the CUDA device that holds it
  std::array<long long, 4> ext{};  ///< filters, channels, rows, cols
  std::array<long long, 4> str{};  ///< in elements, in the same order
  bool on_host() const { return device < 0; }
};

/// A layer of compute_layers: a name and two snapshots.
struct named_pair {
  std::string name;
  array_ref prev, next;
};

/// Calls f(T{}) with the element type T of `t`.
template <class F>
decltype(auto) dispatch(dtype t, F&& f) {
  switch (t) {
    case dtype::f64: return f(double{});
    case dtype::f16: return f(fevo::half{});
    case dtype::bf16: return f(fevo::bfloat16{});
    case dtype::f32: break;
  }
  return f(float{});
}

/// Runs `f`; a fevo::error it throws gets `prefix` after its "fevo: " (e.g. "prev: ").
template <class F>
decltype(auto) with_prefix(const std::string& prefix, F&& f) {
  try {
    return f();
  } catch (const fevo::error& e) {
    std::string m = e.what();
    const std::string head = "fevo: ";
    if (m.compare(0, head.size(), head) == 0) m.insert(head.size(), prefix);
    else m = head + prefix + m;
    throw fevo::error(m);
  }
}

/// The fevo view of an array (the factory validates the extents and strides).
template <class T, class Space = fevo::host_space>
fevo::basic_filter_view<const T, Space> view_of(const array_ref& a, const std::string& what) {
  return with_prefix(what, [&] {
    return fevo::strided<Space>(static_cast<const T*>(a.data), {a.ext[0], a.ext[1], a.ext[2], a.ext[3]},
                                {a.str[0], a.str[1], a.str[2], a.str[3]});
  });
}

/// "prev: " or "layer 'conv1': prev: ", for messages about one snapshot.
inline std::string role_prefix(const std::string& layer, const char* role) {
  return layer.empty() ? std::string(role) + ": " : "layer '" + layer + "': " + role + ": ";
}

/// The results of one layer: its metrics and, when asked for, its per-filter results.
struct layer_result {
  fevo::layer_metrics m;
  fevo::filter_results per;
  bool has_per = false;
};

}  // namespace fevo_py
