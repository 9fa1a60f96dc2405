// fevo._fevo: the Python binding of fevo (nanobind). The metrics are computed by the C++ library
// alone: this file turns Python arrays into fevo views without copying them, calls fevo::compute,
// compute_partial, compute_layers and the recorder, and turns the results into Python objects.
// The public API, with its documentation, is the package fevo (python/fevo/__init__.py).
//
// Arrays are taken untyped (nb::ndarray<nb::ro>, no dtype or order constraint, so nanobind never
// converts or copies) and dispatched on their dtype at run time; torch tensors are described by
// their own attributes (faster than an export). Anything that exports DLPack or the buffer
// protocol is read in place with its strides; what cannot be read in place (negative strides,
// strides that are not a multiple of the element size, another byte order, a negated or sparse
// torch tensor) is refused with fevo.Error, never copied.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fevo/cpu.hpp>
#include <fevo/fevo.hpp>
#include <fevo/record/recorder.hpp>

#include "arrays.hpp"
#include "recorders.hpp"
#if defined(FEVO_PY_HAVE_CUDA)
#include "cuda_entry.hpp"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace fevo_py {
namespace {

using fevo::detail::fail;

// ---- arrays -------------------------------------------------------------------------------------

/// The memory layout of a weight tensor: the order of its axes, outermost first. A 3-D weight
/// [out, in, k] has no rows (H) and a 2-D one [out, in] neither rows nor cols (W).
enum class layout { oihw, hwio, ohwi };

layout parse_layout(std::string_view s) {
  if (s == "oihw") return layout::oihw;
  if (s == "hwio") return layout::hwio;
  if (s == "ohwi") return layout::ohwi;
  fail("layout must be 'oihw' (PyTorch), 'hwio' (Keras, TensorFlow, JAX) or 'ohwi', got '", s, "'");
}

/// The axis letters of an array of `ndim` dimensions in `l`, outermost first.
const char* axis_letters(layout l, std::size_t ndim) {
  static const char* const names[3][3] = {{"oi", "oiw", "oihw"}, {"io", "wio", "hwio"}, {"oi", "owi", "ohwi"}};
  return names[static_cast<int>(l)][ndim - 2];
}

/// "numpy.ndarray", "torch.Tensor", "list": the qualified name of obj's type.
std::string type_name_of(nb::handle obj) {
  nb::handle t = obj.type();
  const std::string name = nb::cast<std::string>(nb::getattr(t, "__qualname__", nb::str("?")));
  nb::object mod = nb::getattr(t, "__module__", nb::none());
  if (!nb::isinstance<nb::str>(mod)) return name;
  const std::string m = nb::cast<std::string>(mod);
  return m == "builtins" ? name : m + "." + name;
}

/// str(o).
std::string text_of(nb::handle o) {
  PyObject* s = PyObject_Str(o.ptr());
  if (!s) throw nb::python_error();
  return nb::cast<std::string>(nb::steal<nb::str>(s));
}

std::string dlpack_dtype_name(const nb::dlpack::dtype& d) {
  std::string base;
  switch (static_cast<nb::dlpack::dtype_code>(d.code)) {
    case nb::dlpack::dtype_code::Int: base = "int"; break;
    case nb::dlpack::dtype_code::UInt: base = "uint"; break;
    case nb::dlpack::dtype_code::Float: base = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: base = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: base = "complex"; break;
    case nb::dlpack::dtype_code::Bool: return "bool";
    default: return "of DLPack type code " + std::to_string(int(d.code)) + " (" + std::to_string(int(d.bits)) + " bits)";
  }
  std::string s = base + std::to_string(int(d.bits));
  if (d.lanes != 1) s += "x" + std::to_string(int(d.lanes));
  return s;
}

/// "BufferError: message" of a Python exception, without its traceback.
std::string exception_text(const nb::python_error& e) {
  return type_name_of(e.value()) + ": " + text_of(e.value());
}

/// Why `obj` could not be imported as an array that is read in place.
[[noreturn]] void refuse(nb::handle obj, const std::string& prefix) {
  const std::string type = type_name_of(obj);
  if (nb::hasattr(obj, "__dlpack__")) {
    std::string why = "it does not export its memory";
    try {
      nb::object capsule = obj.attr("__dlpack__")();
      why = "its DLPack export is not one fevo reads";
    } catch (nb::python_error& e) {
      why = exception_text(e);
    }
    fail(prefix, "this ", type, " cannot be read in place (", why,
         "); fevo reads the caller's memory and never copies it");
  }
  if (PyObject_CheckBuffer(obj.ptr()))
    fail(prefix, "this ", type, " cannot be read in place: its buffer has a byte order other than this "
         "machine's, strides that are not a multiple of its element size, or an element type fevo "
         "does not read; fevo reads the caller's memory and never copies it");
  fail(prefix, "expected an array (torch.Tensor, numpy.ndarray or any object with __dlpack__ or the "
       "buffer protocol), got ", type);
}

bool is_numpy_bfloat16(nb::handle obj) {
  if (!nb::hasattr(obj, "dtype") || !nb::hasattr(obj, "view") || type_name_of(obj) != "numpy.ndarray") return false;
  nb::object name = nb::getattr(obj.attr("dtype"), "name", nb::none());
  return nb::isinstance<nb::str>(name) && nb::cast<std::string>(name) == "bfloat16";
}

/// What keeps an imported array's memory valid while fevo reads it: nanobind's import (DLPack or
/// the buffer protocol), or the torch tensor itself.
struct held_array {
  nb::ndarray<nb::ro> arr;
  nb::object tensor;
};

/// The objects of torch fevo compares with, once the caller has imported torch (fevo never
/// imports it itself); null before. They are kept for the life of the process.
struct torch_refs {
  PyTypeObject* tensor = nullptr;
  PyObject* strided = nullptr;
  PyObject* dtypes[4] = {};  ///< torch.float32, float64, float16, bfloat16: the order of enum dtype
};

const torch_refs* torch_objects() {
  static torch_refs refs;
  static bool ready = false;
  if (ready) return &refs;
  PyObject* mod = PyImport_GetModule(nb::str("torch").ptr());  // new reference, or null
  if (!mod) {
    PyErr_Clear();
    return nullptr;
  }
  nb::object torch = nb::steal(mod);
  try {
    nb::object tensor = torch.attr("Tensor");
    if (!PyType_Check(tensor.ptr())) return nullptr;
    refs.strided = nb::object(torch.attr("strided")).release().ptr();
    const char* names[4] = {"float32", "float64", "float16", "bfloat16"};
    for (int k = 0; k < 4; ++k) refs.dtypes[k] = nb::object(torch.attr(names[k])).release().ptr();
    refs.tensor = reinterpret_cast<PyTypeObject*>(tensor.release().ptr());
  } catch (nb::python_error&) {
    return nullptr;  // a torch module without them (a stub, half imported): not torch's tensors
  }
  ready = true;
  return &refs;
}

bool truthy(const nb::object& o) { return PyObject_IsTrue(o.ptr()) == 1; }

std::string without_torch_prefix(const nb::object& o) {
  std::string s = text_of(o);
  return s.rfind("torch.", 0) == 0 ? s.substr(6) : s;
}

/// The description of an array as exported: element type, device, shape and strides (elements).
struct exported {
  dtype type = dtype::f32;
  int device = -1;
  const void* data = nullptr;
  std::size_t ndim = 0;
  long long shape[8] = {}, strides[8] = {};
};

/// A torch tensor read from its own attributes (about half a microsecond; an export through
/// __dlpack__ costs three times that), held by the tensor itself. What its memory alone does not
/// hold is refused: layouts other than strided (sparse, mkldnn), the negative bit (a lazily
/// negated view holds the un-negated values: torch's own DLPack export misses it), tensors without
/// storage (meta, wrapper subclasses: data_ptr() raises). A tensor that requires grad is read as
/// it is: fevo never writes it.
exported import_torch(nb::handle obj, const torch_refs& T, const std::string& prefix, held_array& keep) {
  exported e;
  try {
    nb::object layout = obj.attr("layout");
    if (!layout.is(nb::handle(T.strided)))
      fail(prefix, "this torch.Tensor has layout ", without_torch_prefix(layout),
           "; fevo reads strided tensors in place (.to_dense() would copy it, which fevo never does itself)");
    if (truthy(obj.attr("is_neg")()))
      fail(prefix, "this ", type_name_of(obj), " is a negated view (its negative bit is set), which cannot be "
           "read in place; call .resolve_neg() first (a copy, which fevo never makes itself)");
    nb::object dt = obj.attr("dtype");
    int k = 0;
    while (k < 4 && !dt.is(nb::handle(T.dtypes[k]))) ++k;
    if (k == 4)
      fail(prefix, "dtype ", without_torch_prefix(dt),
           " is not one fevo reads: float32, float64, float16 or bfloat16 (weights, not integers or complex numbers)");
    e.type = static_cast<dtype>(k);
    if (truthy(obj.attr("is_cuda"))) {
      e.device = nb::cast<int>(obj.attr("get_device")());
    } else if (!truthy(obj.attr("is_cpu"))) {
      fail(prefix, "memory on device ", text_of(obj.attr("device")),
           " is not one fevo reads: CPU memory or CUDA device memory");
    }
    nb::object shape = obj.attr("shape");
    nb::object strides = obj.attr("stride")();
    e.ndim = nb::len(shape);
    if (e.ndim <= 8)
      for (std::size_t a = 0; a < e.ndim; ++a) {
        e.shape[a] = nb::cast<long long>(shape[a]);
        e.strides[a] = nb::cast<long long>(strides[a]);
      }
    e.data = reinterpret_cast<const void*>(nb::cast<std::uintptr_t>(obj.attr("data_ptr")()));
  } catch (nb::python_error& err) {
    fail(prefix, "this ", type_name_of(obj), " cannot be read in place (", exception_text(err),
         "); fevo reads the caller's memory and never copies it");
  }
  keep.tensor = nb::borrow(obj);
  return e;
}

/// Anything else through nanobind: DLPack or the buffer protocol, held by the import.
exported import_other(nb::handle obj, const std::string& prefix, held_array& keep) {
  bool bf16_bits = false;
  if (!nb::try_cast(obj, keep.arr, false)) {
    // NumPy arrays of ml_dtypes' bfloat16 export neither DLPack nor a buffer for that dtype: their
    // bits are read through a uint16 view of the same memory.
    if (!is_numpy_bfloat16(obj) || !nb::try_cast(obj.attr("view")("uint16"), keep.arr, false)) refuse(obj, prefix);
    bf16_bits = true;
  }
  const nb::ndarray<nb::ro>& a = keep.arr;
  exported e;
  const nb::dlpack::dtype d = a.dtype();
  const auto code = static_cast<nb::dlpack::dtype_code>(d.code);
  if (bf16_bits) e.type = dtype::bf16;
  else if (d.lanes == 1 && code == nb::dlpack::dtype_code::Float && d.bits == 32) e.type = dtype::f32;
  else if (d.lanes == 1 && code == nb::dlpack::dtype_code::Float && d.bits == 64) e.type = dtype::f64;
  else if (d.lanes == 1 && code == nb::dlpack::dtype_code::Float && d.bits == 16) e.type = dtype::f16;
  else if (d.lanes == 1 && code == nb::dlpack::dtype_code::Bfloat && d.bits == 16) e.type = dtype::bf16;
  else
    fail(prefix, "dtype ", dlpack_dtype_name(d),
         " is not one fevo reads: float32, float64, float16 or bfloat16 (weights, not integers or complex numbers)");
  switch (a.device_type()) {
    case nb::device::cpu::value:
    case nb::device::cuda_host::value: e.device = -1; break;
    case nb::device::cuda::value:
    case nb::device::cuda_managed::value: e.device = a.device_id(); break;
    default:
      fail(prefix, "memory on DLPack device type ", a.device_type(),
           " is not one fevo reads: CPU memory or CUDA device memory");
  }
  e.ndim = a.ndim();
  if (e.ndim <= 8)
    for (std::size_t k = 0; k < e.ndim; ++k) {
      e.shape[k] = static_cast<long long>(a.shape(k));
      e.strides[k] = static_cast<long long>(a.stride(k));
    }
  e.data = a.data();
  return e;
}

/// Imports `obj` without a copy: `keep` holds the memory valid while the result is used.
/// `prefix` starts every message ("prev: ", "layer 'conv1': next: ").
array_ref import_array(nb::handle obj, layout lay, const std::string& prefix, held_array& keep) {
  const torch_refs* T = torch_objects();
  const exported e = T && PyObject_TypeCheck(obj.ptr(), T->tensor) ? import_torch(obj, *T, prefix, keep)
                                                                     : import_other(obj, prefix, keep);
  if (e.ndim < 2 || e.ndim > 4) {
    std::string shape = "(";
    for (std::size_t k = 0; k < e.ndim && k < 8; ++k) shape += (k ? ", " : "") + std::to_string(e.shape[k]);
    shape += e.ndim == 1 ? ",)" : e.ndim > 8 ? ", ...)" : ")";
    fail(prefix, "an array of ", e.ndim, " dimensions (shape ", shape,
         ") is not a weight fevo reads: 4-D conv weights, 3-D [out, in, k] or 2-D [out, in] (in layout 'oihw')");
  }
  array_ref r;
  r.type = e.type;
  r.device = e.device;
  r.data = e.data;
  const char* letters = axis_letters(lay, e.ndim);
  const std::string_view logical = "oihw";
  for (std::size_t a = 0; a < 4; ++a) {
    const char* at = std::char_traits<char>::find(letters, e.ndim, logical[a]);
    if (!at) {
      r.ext[a] = 1;
      r.str[a] = 0;
    } else {
      const std::size_t k = static_cast<std::size_t>(at - letters);
      r.ext[a] = e.shape[k];
      r.str[a] = e.strides[k];
    }
  }
  return r;
}

std::string device_name(int device) { return device < 0 ? "cpu" : "cuda:" + std::to_string(device); }

void check_same_kind(const array_ref& p, const array_ref& n, const std::string& where) {
  if (p.type != n.type)
    fail(where, "prev is ", dtype_name(p.type), " but next is ", dtype_name(n.type),
         ": both snapshots must have the same element type");
  if (p.device != n.device)
    fail(where, "prev is on ", device_name(p.device), " but next is on ", device_name(n.device),
         "; fevo never moves data between devices: move one of them first");
}

/// The CUDA stream a computation on `obj`'s device is ordered on: PyTorch's current stream for a
/// torch tensor, else the legacy default stream.
std::uintptr_t stream_for(nb::handle obj, int device) {
  if (type_name_of(obj).rfind("torch.", 0) != 0) return 0;
  nb::object cuda = nb::module_::import_("torch").attr("cuda");
  return nb::cast<std::uintptr_t>(cuda.attr("current_stream")(device).attr("cuda_stream"));
}

[[noreturn]] void no_cuda(const std::string& where) {
  fail(where, "the arrays are in CUDA memory, but this fevo was built without CUDA (no CUDA compiler was "
       "found when it was installed)");
}

// ---- the CPU policy -----------------------------------------------------------------------------

/// fevo::cpu::par for `weights` weights in all: OpenMP's default threads, or one thread below
/// 64K weights. fevo::cpu hands out blocks of about 64K weights, so a smaller call is one block
/// that one thread folds either way; asking for one thread spares waking the others (microseconds
/// per call). Results do not depend on the number of threads.
fevo::cpu::parallel_policy cpu_policy(std::size_t weights) {
  return weights < (std::size_t{1} << 16) ? fevo::cpu::par.threads(1) : fevo::cpu::par;
}

std::size_t weights_of(const array_ref& a) {
  return static_cast<std::size_t>(a.ext[0] * a.ext[1] * a.ext[2] * a.ext[3]);
}

// ---- results ------------------------------------------------------------------------------------

/// A NumPy array that owns `v`'s storage (no copy).
template <class V>
nb::object numpy_of(std::vector<V>&& v, std::initializer_list<std::size_t> shape) {
  auto* heap = new std::vector<V>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<V>*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, V>(heap->data(), shape.size(), shape.begin(), owner));
}

struct py_filter_metrics {
  nb::object D, S, Z, changed, zero_channels, nonfinite, R;
};

py_filter_metrics filter_metrics_of(fevo::filter_results&& per, bool with_r) {
  const std::size_t n = per.size(), C = per.channels;
  py_filter_metrics f;
  f.D = numpy_of(std::move(per.D), {n});
  f.S = numpy_of(std::move(per.S), {n});
  f.Z = numpy_of(std::move(per.Z), {n});
  f.changed = numpy_of(std::move(per.changed), {n});
  f.zero_channels = numpy_of(std::move(per.zero_channels), {n});
  f.nonfinite = numpy_of(std::move(per.nonfinite), {n});
  f.R = with_r ? numpy_of(std::move(per.channel_changed), {n, C}) : nb::none();
  return f;
}

/// A shard's totals and its number of filters.
struct py_partial {
  fevo::partial p;
  std::uint64_t filters = 0;
};

struct py_layer_metrics {
  fevo::layer_metrics m;
  nb::object filters;  ///< FilterMetrics, or None
};

py_layer_metrics metrics_of(const fevo::layer_metrics& m) { return py_layer_metrics{m, nb::none()}; }

bool same(const py_partial& a, const py_partial& b) {
  const auto& x = a.p;
  const auto& y = b.p;
  return a.filters == b.filters && x.changed == y.changed && x.weights == y.weights &&
         x.zero_channels == y.zero_channels && x.channels == y.channels && x.nonfinite == y.nonfinite &&
         (x.sum_sq == y.sum_sq || (x.sum_sq != x.sum_sq && y.sum_sq != y.sum_sq));
}

// ---- entry points -------------------------------------------------------------------------------

py_layer_metrics py_compute(nb::handle prev, nb::handle next, double tau, std::string_view layout_name,
                            bool per_filter, bool channel_counts) {
  const layout lay = parse_layout(layout_name);
  held_array kp, kn;
  const array_ref p = import_array(prev, lay, "prev: ", kp);
  const array_ref n = import_array(next, lay, "next: ", kn);
  check_same_kind(p, n, "");
  const bool want_per = per_filter || channel_counts;
  fevo::filter_results per;
  fevo::layer_metrics m;
  if (p.on_host()) {
    nb::gil_scoped_release unlocked;
    m = dispatch(p.type, [&](auto tag) {
      using T = decltype(tag);
      const auto pv = view_of<T>(p, "prev: ");
      const auto nv = view_of<T>(n, "next: ");
      const auto pol = cpu_policy(weights_of(p));
      if (channel_counts) return fevo::compute(pol, pv, nv, tau, per, fevo::with_channel_counts);
      if (want_per) return fevo::compute(pol, pv, nv, tau, per);
      return fevo::compute(pol, pv, nv, tau);
    });
  } else {
#if defined(FEVO_PY_HAVE_CUDA)
    const std::uintptr_t stream = stream_for(prev, p.device);
    nb::gil_scoped_release unlocked;
    m = cuda::compute(p, n, tau, want_per ? &per : nullptr, channel_counts, stream);
#else
    no_cuda("");
#endif
  }
  py_layer_metrics r = metrics_of(m);
  if (want_per) r.filters = nb::cast(filter_metrics_of(std::move(per), channel_counts));
  return r;
}

py_partial py_compute_partial(nb::handle prev, nb::handle next, double tau, std::string_view layout_name) {
  const layout lay = parse_layout(layout_name);
  held_array kp, kn;
  const array_ref p = import_array(prev, lay, "prev: ", kp);
  const array_ref n = import_array(next, lay, "next: ", kn);
  check_same_kind(p, n, "");
  py_partial r;
  r.filters = static_cast<std::uint64_t>(p.ext[0]);
  if (p.on_host()) {
    nb::gil_scoped_release unlocked;
    r.p = dispatch(p.type, [&](auto tag) {
      using T = decltype(tag);
      return fevo::compute_partial(cpu_policy(weights_of(p)), view_of<T>(p, "prev: "), view_of<T>(n, "next: "), tau);
    });
  } else {
#if defined(FEVO_PY_HAVE_CUDA)
    const std::uintptr_t stream = stream_for(prev, p.device);
    nb::gil_scoped_release unlocked;
    r.p = cuda::compute_partial(p, n, tau, stream);
#else
    no_cuda("");
#endif
  }
  return r;
}

/// The imported layers of a compute_layers call, grouped by (device, element type): each group is
/// one fevo::compute_layers call.
struct layer_groups {
  std::vector<held_array> keep;
  std::vector<named_pair> pairs;
  std::vector<nb::handle> first_objects;  ///< each layer's prev, for the CUDA stream
  std::map<std::pair<int, int>, std::vector<std::size_t>> groups;

  layer_groups(nb::handle items, std::string_view layout_name) {
    const layout lay = parse_layout(layout_name);
    for (nb::handle item : items) {
      if (!nb::isinstance<nb::tuple>(item) || nb::len(item) != 3)
        fail("compute_layers: each layer is a (name, prev, next) tuple, got ", type_name_of(item));
      nb::tuple t = nb::borrow<nb::tuple>(item);
      named_pair p;
      if (!nb::isinstance<nb::str>(t[0]))
        fail("compute_layers: a layer name must be a str, got ", type_name_of(t[0]));
      p.name = nb::cast<std::string>(t[0]);
      keep.emplace_back();
      p.prev = import_array(t[1], lay, role_prefix(p.name, "prev"), keep.back());
      keep.emplace_back();
      p.next = import_array(t[2], lay, role_prefix(p.name, "next"), keep.back());
      check_same_kind(p.prev, p.next, "layer '" + p.name + "': ");
      groups[{p.prev.device, static_cast<int>(p.prev.type)}].push_back(pairs.size());
      first_objects.push_back(t[1]);
      pairs.push_back(std::move(p));
    }
  }

  template <class T>
  std::vector<fevo::layer_pair<T>> host_pairs(const std::vector<std::size_t>& idx) const {
    std::vector<fevo::layer_pair<T>> v;
    v.reserve(idx.size());
    for (std::size_t k : idx) {
      const named_pair& p = pairs[k];
      v.push_back({p.name, view_of<T>(p.prev, role_prefix(p.name, "prev")),
                   view_of<T>(p.next, role_prefix(p.name, "next"))});
    }
    return v;
  }

  std::size_t weights(const std::vector<std::size_t>& idx) const {
    std::size_t w = 0;
    for (std::size_t k : idx) w += weights_of(pairs[k].prev);
    return w;
  }

  std::vector<named_pair> subset(const std::vector<std::size_t>& idx) const {
    std::vector<named_pair> v;
    for (std::size_t k : idx) v.push_back(pairs[k]);
    return v;
  }
};

nb::tuple py_compute_layers(nb::handle items, double tau, std::string_view layout_name) {
  layer_groups g(items, layout_name);
  const std::size_t n = g.pairs.size();
  std::vector<fevo::layer_metrics> out(n);
  for (const auto& [key, idx] : g.groups) {
    std::vector<fevo::layer_metrics> ms;
    if (key.first < 0) {
      nb::gil_scoped_release unlocked;
      ms = dispatch(static_cast<dtype>(key.second), [&](auto tag) {
        using T = decltype(tag);
        return fevo::compute_layers(cpu_policy(g.weights(idx)), g.host_pairs<T>(idx), tau);
      });
    } else {
#if defined(FEVO_PY_HAVE_CUDA)
      const std::uintptr_t stream = stream_for(g.first_objects[idx.front()], key.first);
      const auto sub = g.subset(idx);
      nb::gil_scoped_release unlocked;
      ms = cuda::compute_layers(sub, tau, stream);
#else
      no_cuda("layer '" + g.pairs[idx.front()].name + "': ");
#endif
    }
    for (std::size_t j = 0; j < idx.size(); ++j) out[idx[j]] = ms[j];
  }
  std::vector<std::string> names(n);
  std::vector<double> D(n), S(n), Z(n), Dw(n);
  std::vector<std::uint64_t> filters(n), nonfinite(n);
  for (std::size_t k = 0; k < n; ++k) {
    names[k] = g.pairs[k].name;
    D[k] = out[k].D;
    S[k] = out[k].S;
    Z[k] = out[k].Z;
    filters[k] = out[k].n_filters;
    nonfinite[k] = out[k].nonfinite;
    Dw[k] = out[k].D_per_weight;
  }
  return nb::make_tuple(names, numpy_of(std::move(D), {n}), numpy_of(std::move(S), {n}), numpy_of(std::move(Z), {n}),
                        numpy_of(std::move(filters), {n}), numpy_of(std::move(nonfinite), {n}),
                        numpy_of(std::move(Dw), {n}));
}

/// The benchmark's C++ reference: seconds of each of `repeat` fevo::compute_layers calls on the
/// memory of `items`, converted once (one group: the layers must share a device and element type).
std::vector<double> py_time_compute_layers(nb::handle items, double tau, std::string_view layout_name, int repeat) {
  layer_groups g(items, layout_name);
  if (g.groups.size() != 1) fail("_time_compute_layers: the layers must share one device and element type");
  const auto& [key, idx] = *g.groups.begin();
  std::vector<double> seconds;
  if (key.first < 0) {
    nb::gil_scoped_release unlocked;
    dispatch(static_cast<dtype>(key.second), [&](auto tag) {
      using T = decltype(tag);
      const auto pairs = g.host_pairs<T>(idx);
      const auto pol = cpu_policy(g.weights(idx));
      for (int r = 0; r < repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto m = fevo::compute_layers(pol, pairs, tau);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (m.size() != pairs.size()) fail("_time_compute_layers: lost a layer");
      }
      return 0;
    });
  } else {
#if defined(FEVO_PY_HAVE_CUDA)
    const std::uintptr_t stream = stream_for(g.first_objects[idx.front()], key.first);
    const auto sub = g.subset(idx);
    nb::gil_scoped_release unlocked;
    seconds = cuda::time_compute_layers(sub, tau, stream, repeat);
#else
    no_cuda("");
#endif
  }
  return seconds;
}

/// The logical extents (filters, channels, rows, cols) of an array in a layout.
std::tuple<long long, long long, long long, long long> py_extents(nb::handle a, std::string_view layout_name) {
  held_array keep;
  const array_ref r = import_array(a, parse_layout(layout_name), "", keep);
  return {r.ext[0], r.ext[1], r.ext[2], r.ext[3]};
}

// ---- the recorder -------------------------------------------------------------------------------

class py_recorder {
 public:
  py_recorder(const std::string& out_dir, double tau, nb::handle layers, std::string_view layout_name,
              bool per_filter_series, bool tensorboard, bool resume, bool fsync_each_record,
              std::uint64_t journal_compact_bytes) {
    const layout lay = parse_layout(layout_name);
    fevo::record::recorder_options o;
    o.out_dir = out_dir;
    o.tau = tau;
    o.per_filter_series = per_filter_series;
    o.tensorboard = tensorboard;
    o.resume = resume;
    o.fsync_each_record = fsync_each_record;
    o.journal_compact_bytes = journal_compact_bytes;
    std::vector<std::pair<std::string, array_ref>> refs;
    nb::handle first;
    for (nb::handle item : layers) {
      if (!nb::isinstance<nb::tuple>(item) || nb::len(item) != 2)
        fail("Recorder: each layer is a (name, weights) tuple, got ", type_name_of(item));
      nb::tuple t = nb::borrow<nb::tuple>(item);
      if (!nb::isinstance<nb::str>(t[0])) fail("Recorder: a layer name must be a str, got ", type_name_of(t[0]));
      const std::string name = nb::cast<std::string>(t[0]);
      keep_.emplace_back();
      const array_ref r = import_array(t[1], lay, role_prefix(name, "weights"), keep_.back());
      if (!refs.empty()) {
        const auto& [name0, r0] = refs.front();
        if (r.type != r0.type)
          fail("Recorder: layer '", name, "' is ", dtype_name(r.type), " but layer '", name0, "' is ",
               dtype_name(r0.type), "; a run records one element type (use one Recorder per type)");
        if (r.device != r0.device)
          fail("Recorder: layer '", name, "' is on ", device_name(r.device), " but layer '", name0, "' is on ",
               device_name(r0.device), "; a run records layers of one device (use one Recorder per device)");
      } else {
        first = t[1];
      }
      refs.emplace_back(name, r);
    }
    if (refs.empty()) fail("Recorder: no layer to record");
    device_ = refs.front().second.device;
    if (device_ < 0) {
      impl_ = dispatch(refs.front().second.type, [&](auto tag) -> std::unique_ptr<recorder_iface> {
        using T = decltype(tag);
        return std::make_unique<host_recorder<T>>(o, fevo::cpu::par);
      });
    } else {
#if defined(FEVO_PY_HAVE_CUDA)
      impl_ = cuda::make_recorder(refs.front().second.type, o, device_, stream_for(first, device_));
#else
      no_cuda("Recorder: ");
#endif
    }
    for (const auto& [name, r] : refs) impl_->add_layer(name, r);
  }

  void start(std::int64_t step) {
    nb::gil_scoped_release unlocked;
    impl_->start(step);
  }

  std::vector<py_layer_metrics> record(std::int64_t step) {
    std::vector<fevo::layer_metrics> ms;
    {
      nb::gil_scoped_release unlocked;
      ms = impl_->record(step);
    }
    std::vector<py_layer_metrics> out;
    out.reserve(ms.size());
    for (const auto& m : ms) out.push_back(metrics_of(m));
    return out;
  }

  void close() {
    nb::gil_scoped_release unlocked;
    impl_->close();
  }

  const fevo::record::detail::recorder_base& state() const { return impl_->state(); }
  int device() const { return device_; }

 private:
  std::vector<held_array> keep_;  ///< the live weights' imports: their memory stays valid
  std::unique_ptr<recorder_iface> impl_;
  int device_ = -1;
};

bool cuda_compiled() {
#if defined(FEVO_PY_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#if defined(FEVO_PY_HAVE_CUDA)
  return cuda::available();
#else
  return false;
#endif
}

}  // namespace
}  // namespace fevo_py

NB_MODULE(_fevo, m) {
  using namespace fevo_py;
  m.doc() = "fevo's C++ library, bound with nanobind; use the package fevo, which documents it.";

  nb::exception<fevo::error>(m, "Error", PyExc_ValueError);

  nb::class_<py_partial>(m, "Partial",
                         "The mergeable totals of a shard of a layer (whole filters or whole channels): "
                         "fevo.compute_partial gives one, fevo.merge adds two, fevo.finalize turns the "
                         "total of a whole layer into its LayerMetrics. Picklable.")
      .def(
          "__init__",
          [](py_partial* self, double sum_sq, std::uint64_t changed, std::uint64_t weights,
             std::uint64_t zero_channels, std::uint64_t channels, std::uint64_t nonfinite, std::uint64_t filters) {
            new (self) py_partial{{sum_sq, changed, weights, zero_channels, channels, nonfinite}, filters};
          },
          "sum_sq"_a = 0.0, "changed"_a = 0, "weights"_a = 0, "zero_channels"_a = 0, "channels"_a = 0,
          "nonfinite"_a = 0, "filters"_a = 0,
          "A partial from its totals; Partial() is merge's identity (an empty shard).")
      .def_prop_ro("sum_sq", [](const py_partial& s) { return s.p.sum_sq; },
                   "Sum of d^2 over the shard's weights (eq. 1 before the mean over filters).")
      .def_prop_ro("changed", [](const py_partial& s) { return s.p.changed; },
                   "Weights with |d| > tau or d not finite (eq. 2's numerator).")
      .def_prop_ro("weights", [](const py_partial& s) { return s.p.weights; }, "Weights folded.")
      .def_prop_ro("zero_channels", [](const py_partial& s) { return s.p.zero_channels; },
                   "(filter, channel) pairs in which no weight changed (eq. 3's numerator).")
      .def_prop_ro("channels", [](const py_partial& s) { return s.p.channels; }, "(filter, channel) pairs folded.")
      .def_prop_ro("nonfinite", [](const py_partial& s) { return s.p.nonfinite; },
                   "Weights whose d is NaN or infinite.")
      .def_prop_ro("filters", [](const py_partial& s) { return s.filters; },
                   "Filters of the shards merged (their sum: the layer's N when the shards split the filters).")
      .def("__getstate__",
           [](const py_partial& s) {
             return std::make_tuple(s.p.sum_sq, s.p.changed, s.p.weights, s.p.zero_channels, s.p.channels,
                                    s.p.nonfinite, s.filters);
           })
      .def("__setstate__",
           [](py_partial& self, const std::tuple<double, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t,
                                                 std::uint64_t, std::uint64_t>& t) {
             new (&self) py_partial{{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), std::get<4>(t),
                                     std::get<5>(t)},
                                    std::get<6>(t)};
           })
      .def("__eq__", [](const py_partial& a, const py_partial& b) { return same(a, b); }, nb::is_operator())
      .def("__repr__", [](const py_partial& s) {
        return nb::str("Partial(sum_sq={!r}, changed={}, weights={}, zero_channels={}, channels={}, nonfinite={}, "
                       "filters={})")
            .format(s.p.sum_sq, s.p.changed, s.p.weights, s.p.zero_channels, s.p.channels, s.p.nonfinite, s.filters);
      });

  nb::class_<py_filter_metrics>(m, "FilterMetrics",
                                "Per-filter results of one layer, as NumPy arrays of length N (the filters): D_i, "
                                "S_i, Z_i and the exact counts behind them; R (N x C) with channel_counts=True.")
      .def_prop_ro("D", [](const py_filter_metrics& f) { return f.D; },
                   nb::sig("def D(self) -> numpy.typing.NDArray[numpy.float64]"),
                   "D_i = ||f_i(t+1) - f_i(t)||^2 (float64).")
      .def_prop_ro("S", [](const py_filter_metrics& f) { return f.S; },
                   nb::sig("def S(self) -> numpy.typing.NDArray[numpy.float64]"),
                   "S_i = changed_i / (C*H*W) (float64).")
      .def_prop_ro("Z", [](const py_filter_metrics& f) { return f.Z; },
                   nb::sig("def Z(self) -> numpy.typing.NDArray[numpy.float64]"),
                   "Z_i = zero_channels_i / C (float64).")
      .def_prop_ro("changed", [](const py_filter_metrics& f) { return f.changed; },
                   nb::sig("def changed(self) -> numpy.typing.NDArray[numpy.uint64]"),
                   "Weights of filter i with |d| > tau or d not finite (uint64).")
      .def_prop_ro("zero_channels", [](const py_filter_metrics& f) { return f.zero_channels; },
                   nb::sig("def zero_channels(self) -> numpy.typing.NDArray[numpy.uint64]"),
                   "Channels of filter i in which no weight changed (uint64).")
      .def_prop_ro("nonfinite", [](const py_filter_metrics& f) { return f.nonfinite; },
                   nb::sig("def nonfinite(self) -> numpy.typing.NDArray[numpy.uint64]"),
                   "Weights of filter i whose d is NaN or infinite (uint64).")
      .def_prop_ro("R", [](const py_filter_metrics& f) { return f.R; },
                   nb::sig("def R(self) -> numpy.typing.NDArray[numpy.uint32] | None"),
                   "R[i, c]: changed weights of filter i in channel c (uint32, N x C); None without "
                   "channel_counts.")
      .def("__repr__", [](const py_filter_metrics& f) {
        return nb::str("FilterMetrics(N={}{})").format(nb::len(f.D), f.R.is_none() ? "" : ", with R");
      });

  nb::class_<py_layer_metrics>(m, "LayerMetrics", "D, S and Z of one layer (eq. 1-3) and the totals they come from.")
      .def_prop_ro("D", [](const py_layer_metrics& r) { return r.m.D; },
                   "eq. 1: mean over filters of ||f_i(t+1) - f_i(t)||^2.")
      .def_prop_ro("S", [](const py_layer_metrics& r) { return r.m.S; },
                   "eq. 2: mean share of weights with |d| > tau.")
      .def_prop_ro("Z", [](const py_layer_metrics& r) { return r.m.Z; },
                   "eq. 3: mean share of channels in which no weight has |d| > tau.")
      .def_prop_ro("D_per_weight", [](const py_layer_metrics& r) { return r.m.D_per_weight; },
                   "D / (C H W): the mean over the layer's weights of their squared change. D sums over a "
                   "filter's C H W weights, so it grows with the filter's size even when every weight moves "
                   "by the same amount; this does not (compare layers of different sizes with it).")
      .def_prop_ro("n_filters", [](const py_layer_metrics& r) { return r.m.n_filters; }, "N, the layer's filters.")
      .def_prop_ro("nonfinite", [](const py_layer_metrics& r) { return r.m.nonfinite; },
                   "Weights whose change is NaN or infinite.")
      .def_prop_ro("totals", [](const py_layer_metrics& r) { return py_partial{r.m.totals, r.m.n_filters}; },
                   "The totals D, S and Z were computed from, as a Partial.")
      .def_prop_ro("filters", [](const py_layer_metrics& r) { return r.filters; },
                   nb::sig("def filters(self) -> FilterMetrics | None"),
                   "Per-filter results (FilterMetrics) with per_filter=True or channel_counts=True, else None.")
      .def("__repr__", [](const py_layer_metrics& r) {
        return nb::str("LayerMetrics(D={!r}, S={!r}, Z={!r}, n_filters={}, nonfinite={}, D_per_weight={!r})")
            .format(r.m.D, r.m.S, r.m.Z, r.m.n_filters, r.m.nonfinite, r.m.D_per_weight);
      });

  m.def("compute", &py_compute, "prev"_a.none(), "next"_a.none(), "tau"_a, "layout"_a, "per_filter"_a, "channel_counts"_a,
        "fevo.compute without its defaults; see fevo.compute.");
  m.def("compute_partial", &py_compute_partial, "prev"_a.none(), "next"_a.none(), "tau"_a, "layout"_a,
        "fevo.compute_partial without its defaults; see fevo.compute_partial.");
  m.def("compute_layers", &py_compute_layers, "layers"_a, "tau"_a, "layout"_a,
        "The columns of fevo.compute_layers' table: (names, D, S, Z, n_filters, nonfinite, D_per_weight) for a sequence of "
        "(name, prev, next) tuples.");
  m.def(
      "merge",
      [](const py_partial& a, const py_partial& b) {
        py_partial r = a;
        fevo::merge(r.p, b.p);
        r.filters += b.filters;
        return r;
      },
      "a"_a, "b"_a, "The partial of two disjoint shards of one layer (a new Partial).");
  m.def(
      "finalize",
      [](const py_partial& total, std::optional<std::uint64_t> n_filters) {
        return metrics_of(fevo::finalize(total.p, n_filters ? *n_filters : total.filters));
      },
      "total"_a, "n_filters"_a = nb::none(), "fevo.finalize; see there.");
  m.def("extents", &py_extents, "array"_a.none(), "layout"_a,
        "The logical extents (filters, channels, rows, cols) of a weight array in a layout.");
  m.def("cuda_compiled", &cuda_compiled, "True when this build of fevo has its CUDA entry points.");
  m.def("cpu_kernels", [] { return std::string(fevo::cpu::instruction_set()); },
        "The instruction set of the CPU kernels fevo runs on this machine: 'avx512', 'avx2' or 'generic'.");
  m.def("cuda_available", &cuda_available,
        "True when this build of fevo has its CUDA entry points and a usable CUDA device is present.");
  m.def("_time_compute_layers", &py_time_compute_layers, "layers"_a, "tau"_a, "layout"_a, "repeat"_a,
        "Benchmark only: seconds of each of `repeat` C++ fevo::compute_layers calls on the layers' memory.");

  nb::class_<py_recorder>(m, "_Recorder", "The C++ recorder behind fevo.Recorder.")
      .def(nb::init<const std::string&, double, nb::handle, std::string_view, bool, bool, bool, bool, std::uint64_t>(),
           "out_dir"_a, "tau"_a, "layers"_a, "layout"_a, "per_filter_series"_a, "tensorboard"_a, "resume"_a,
           "fsync_each_record"_a, "journal_compact_bytes"_a)
      .def("start", &py_recorder::start, "step"_a)
      .def("record", &py_recorder::record, "step"_a)
      .def("close", &py_recorder::close)
      .def_prop_ro("records", [](const py_recorder& r) { return r.state().records(); })
      .def_prop_ro("last_recorded_step", [](const py_recorder& r) { return r.state().last_recorded_step(); })
      .def_prop_ro("snapshot_step", [](const py_recorder& r) { return r.state().snapshot_step(); })
      .def_prop_ro("copy_bytes", [](const py_recorder& r) { return r.state().copy_bytes(); })
      .def_prop_ro("events_path", [](const py_recorder& r) { return r.state().events_path(); })
      .def_prop_ro("device", &py_recorder::device);
}
