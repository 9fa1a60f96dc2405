// Shared helpers of fevo's tests: the run's seed, a small fast generator, the element types,
// weight buffers in every memory layout, and the plainly written reference every backend is
// compared with. Nothing here uses fevo's accumulator (fold / merge / finalize).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <fevo/fevo.hpp>

#include "runner.hpp"  // fevo_test::seed(): the run's seed

namespace fevo_test {

#if defined(FEVO_TEST_SANITIZE)
inline constexpr bool sanitized = true;  ///< ASan/UBSan build: the largest sizes are scaled down
#else
inline constexpr bool sanitized = false;
#endif

// ---- random numbers -----------------------------------------------------------------------------

/// splitmix64: fast, and its whole state is the 64-bit seed, so a case is reproduced by the seed.
class rng {
 public:
  explicit rng(std::uint64_t s) : s_(s) {}
  std::uint64_t bits() {
    std::uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(bits() >> 11) * 0x1p-53; }  ///< [0, 1)
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  std::size_t below(std::size_t n) { return std::size_t(bits() % n); }
  bool chance(double p) { return uniform() < p; }
  double sign() { return (bits() & 1) ? 1.0 : -1.0; }
  /// Standard normal (Box-Muller).
  double normal() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 private:
  std::uint64_t s_;
};

/// A generator for one test case: the run's seed mixed with the case's own name, so a case's data
/// do not depend on which other cases ran (e.g. with a Catch test filter).
inline rng rng_for(const std::string& what) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the name
  for (unsigned char ch : what) h = (h ^ ch) * 0x100000001b3ull;
  return rng(seed() ^ h);
}

// ---- element types ------------------------------------------------------------------------------

template <class T>
struct tag {
  using type = T;
};

/// Calls f(tag<T>{}) for every element type fevo supports.
template <class F>
void for_each_element_type(F&& f) {
  f(tag<float>{});
  f(tag<double>{});
  f(tag<fevo::half>{});
  f(tag<fevo::bfloat16>{});
}

/// The type differences are computed in: double for double data, float for the other three.
template <class T>
using compute_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, fevo::half>) return "half";
  else return "bfloat16";
}

/// A value stored as T (rounded to nearest for float and the 16-bit types).
template <class T>
T make(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(v);
  else return T::from_float(static_cast<float>(v));
}

/// A stored value in its compute type.
template <class T>
compute_type<T> value(const T& v) {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) return v;
  else return v.to_float();
}

// ---- weight buffers in every layout -------------------------------------------------------------

struct shape {
  std::size_t N, C, H, W;
  std::size_t size() const { return N * C * H * W; }
};
inline std::ostream& operator<<(std::ostream& os, const shape& s) {
  return os << "{N=" << s.N << ", C=" << s.C << ", H=" << s.H << ", W=" << s.W << "}";
}

enum class layout {
  oihw,         ///< fevo::oihw, contiguous (PyTorch)
  hwio,         ///< fevo::hwio, contiguous (TensorFlow)
  ohwi,         ///< fevo::ohwi, contiguous (channels last)
  iohw,         ///< contiguous [I, O, H, W] through fevo::strided (ConvTranspose weights)
  padded,       ///< fevo::strided, OIHW order with padding after every row, channel and filter
  gapped,       ///< fevo::strided, OIHW order with a column stride of 2, plus padding
  sliced_oihw,  ///< filter_slice(1, N).channel_slice(2, C) of a larger OIHW layer
  sliced_hwio,  ///< channel_slice(1, C).filter_slice(2, N) of a larger HWIO layer
};
inline const char* name(layout l) {
  switch (l) {
    case layout::oihw: return "oihw";
    case layout::hwio: return "hwio";
    case layout::ohwi: return "ohwi";
    case layout::iohw: return "iohw";
    case layout::padded: return "padded";
    case layout::gapped: return "gapped";
    case layout::sliced_oihw: return "sliced_oihw";
    case layout::sliced_hwio: return "sliced_hwio";
  }
  return "?";
}

/// One snapshot of a layer: owns its memory, `view` addresses the logical weights. Memory the view
/// does not address (padding, the rest of a sliced parent) holds NaN, so a backend that reads it
/// is caught by the non-finite count.
template <class T>
struct layer {
  std::vector<T> mem;
  fevo::filter_view<T> view;

  layer() = default;
  layer(const layer&) = delete;  // the view points into mem
  layer& operator=(const layer&) = delete;
  layer(layer&&) = default;  // moving a vector keeps its buffer
  layer& operator=(layer&&) = default;

  fevo::filter_view<const T> cview() const { return view; }
  T& operator()(std::size_t i, std::size_t c, std::size_t h, std::size_t w) { return view(i, c, h, w); }
};

template <class T>
layer<T> make_layer(const shape& s, layout l) {
  const long long N = (long long)s.N, C = (long long)s.C, H = (long long)s.H, W = (long long)s.W;
  layer<T> out;
  auto alloc = [&](long long n) { out.mem.assign(std::size_t(n), make<T>(std::nan(""))); };
  switch (l) {
    case layout::oihw:
      alloc(N * C * H * W);
      out.view = fevo::oihw(out.mem.data(), N, C, H, W);
      break;
    case layout::hwio:
      alloc(N * C * H * W);
      out.view = fevo::hwio(out.mem.data(), H, W, C, N);
      break;
    case layout::ohwi:
      alloc(N * C * H * W);
      out.view = fevo::ohwi(out.mem.data(), N, H, W, C);
      break;
    case layout::iohw:
      alloc(N * C * H * W);
      out.view = fevo::strided(out.mem.data(), {N, C, H, W}, {H * W, N * H * W, W, 1LL});
      break;
    case layout::padded: {
      const long long sh = W + 2, sc = H * sh + 3, sn = C * sc + 1;
      alloc(N * sn);
      out.view = fevo::strided(out.mem.data(), {N, C, H, W}, {sn, sc, sh, 1LL});
      break;
    }
    case layout::gapped: {
      const long long sh = 2 * W + 1, sc = H * sh + 1, sn = C * sc + 2;
      alloc(N * sn);
      out.view = fevo::strided(out.mem.data(), {N, C, H, W}, {sn, sc, sh, 2LL});
      break;
    }
    case layout::sliced_oihw:
      alloc((N + 2) * (C + 3) * H * W);
      out.view = fevo::oihw(out.mem.data(), N + 2, C + 3, H, W).filter_slice(1, s.N).channel_slice(2, s.C);
      break;
    case layout::sliced_hwio:
      alloc((N + 3) * (C + 2) * H * W);
      out.view = fevo::hwio(out.mem.data(), H, W, C + 2, N + 3).channel_slice(1, s.C).filter_slice(2, s.N);
      break;
  }
  return out;
}

template <class T, class F>
void for_each_index(const fevo::filter_view<T>& v, F&& f) {
  for (std::size_t i = 0; i < v.extent(0); ++i)
    for (std::size_t c = 0; c < v.extent(1); ++c)
      for (std::size_t h = 0; h < v.extent(2); ++h)
        for (std::size_t w = 0; w < v.extent(3); ++w) f(i, c, h, w);
}

// ---- the reference ------------------------------------------------------------------------------

/// A layer's metrics computed the plain way: one loop per axis through the view's operator(),
/// d = next - prev in the compute type, and the sum of squares in long double.
struct reference {
  std::size_t N = 0, C = 0, HW = 0;
  long double sum_sq = 0;  ///< sum of (long double)d * d
  std::uint64_t changed = 0, weights = 0, zero_channels = 0, channels = 0, nonfinite = 0;
  std::vector<long double> D;  ///< per filter: sum of d^2
  std::vector<std::uint64_t> changed_i, zero_channels_i, nonfinite_i;
  std::vector<std::uint32_t> R;  ///< R_ic, [i * C + c]

  long double D_layer() const { return sum_sq / (long double)N; }
  /// D per weight as the report defines it: D / (C H W).
  long double D_per_weight() const { return D_layer() / (long double)(C * HW); }
  double S() const { return double(changed) / double(weights); }
  double Z() const { return double(zero_channels) / double(channels); }
};

/// tau is converted once to the compute type, as fevo documents for layer_task::tau.
template <class T>
reference reference_of(const fevo::filter_view<const T>& prev, const fevo::filter_view<const T>& next,
                       double tau) {
  using CT = compute_type<T>;
  const CT t = static_cast<CT>(tau);
  reference r;
  r.N = prev.extent(0);
  r.C = prev.extent(1);
  r.HW = prev.extent(2) * prev.extent(3);
  r.D.assign(r.N, 0);
  r.changed_i.assign(r.N, 0);
  r.zero_channels_i.assign(r.N, 0);
  r.nonfinite_i.assign(r.N, 0);
  r.R.assign(r.N * r.C, 0);
  for (std::size_t i = 0; i < r.N; ++i) {
    for (std::size_t c = 0; c < r.C; ++c) {
      std::uint32_t rc = 0;
      for (std::size_t h = 0; h < prev.extent(2); ++h)
        for (std::size_t w = 0; w < prev.extent(3); ++w) {
          const CT d = value(next(i, c, h, w)) - value(prev(i, c, h, w));
          const bool is_changed = std::isnan(d) || std::fabs(d) > t;  // |d| > tau, NaN counts
          r.D[i] += (long double)d * d;
          rc += is_changed;
          r.nonfinite_i[i] += !std::isfinite(d);
        }
      r.R[i * r.C + c] = rc;
      r.changed_i[i] += rc;
      r.zero_channels_i[i] += (rc == 0);
    }
    r.sum_sq += r.D[i];
    r.changed += r.changed_i[i];
    r.zero_channels += r.zero_channels_i[i];
    r.nonfinite += r.nonfinite_i[i];
  }
  r.weights = std::uint64_t(r.N) * r.C * r.HW;
  r.channels = std::uint64_t(r.N) * r.C;
  return r;
}

// ---- comparisons --------------------------------------------------------------------------------

/// Relative bound for a double sum of n squared changes against the long double reference.
///  - For float, half and bfloat16 data d is a float, so d*d in double is exact (24+24 bits <= 53).
///    For double data d*d is rounded once: relative error u = 2^-53 per term.
///  - Adding n non-negative terms in double, in any order or tree, errs by at most (n-1)u of the
///    sum; dividing by N (for D) adds one rounding u.
///  - The long double reference errs by at most (n+1) * 2^-64 relative.
/// Together less than (n+2)u + (n+1)2^-64 <= (n+2) * 2^-52.
/// A backend may document more: fevo::cpu's vector path sums up to 8 float squares per lane
/// before widening to double (fevo::cpu::D_relative_error, see cpu/simd.hpp). The backend under
/// test sets this for the scope of a test case (backend_scope in backends.hpp).
inline double& d_slack() {
  static double slack = 0;
  return slack;
}
inline double sum_bound(std::uint64_t n_terms) { return double(n_terms + 2) * 0x1p-52 + d_slack(); }

/// fevo's double sum against the reference: equal class (NaN / +Inf / finite), and finite values
/// within sum_bound(n_terms) relative.
inline bool sum_close(double got, long double want, std::uint64_t n_terms) {
  const double w = double(want);  // the reference rounded to double; may overflow to Inf
  if (std::isnan(w) || std::isnan(got)) return std::isnan(w) && std::isnan(got);
  if (std::isinf(w) || std::isinf(got)) return got == w;
  if (want == 0) return got == 0;
  return std::fabs((long double)got - want) <= (long double)sum_bound(n_terms) * std::fabs(want);
}

inline double relative_error(double got, long double want) {
  return want == 0 ? std::fabs(got) : double(std::fabs((long double)got - want) / std::fabs(want));
}

#define FEVO_CHECK_SUM(got, want, n_terms)                                                        \
  do {                                                                                            \
    const double fevo_got_ = (got);                                                               \
    const long double fevo_want_ = (want);                                                        \
    INFO(std::setprecision(17) << #got " = " << fevo_got_ << ", reference = "                \
                               << double(fevo_want_) << ", relative error "                     \
                               << ::fevo_test::relative_error(fevo_got_, fevo_want_)            \
                               << ", bound " << ::fevo_test::sum_bound(n_terms));               \
    CHECK(::fevo_test::sum_close(fevo_got_, fevo_want_, (n_terms)));                              \
  } while (0)

/// Index of the first element where a and b differ, or -1 (also -1 only when sizes agree).
template <class A, class B>
long long first_mismatch(const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size()) return (long long)std::min(a.size(), b.size());
  for (std::size_t k = 0; k < a.size(); ++k)
    if (!(a[k] == b[k])) return (long long)k;
  return -1;
}

/// Exact equality of two vectors of counts, reporting only the first difference.
#define FEVO_CHECK_SAME(got, want)                                                           \
  do {                                                                                       \
    const long long fevo_k_ = ::fevo_test::first_mismatch((got), (want));                    \
    std::ostringstream fevo_os_;                                                             \
    fevo_os_ << #got " has " << (got).size() << " entries, the reference " << (want).size(); \
    if (fevo_k_ >= 0 && std::size_t(fevo_k_) < (got).size() &&                               \
        std::size_t(fevo_k_) < (want).size())                                                \
      fevo_os_ << "; first difference at [" << fevo_k_ << "]: " << (got)[std::size_t(fevo_k_)] \
               << " vs " << (want)[std::size_t(fevo_k_)];                                    \
    INFO(fevo_os_.str());                                                                    \
    CHECK(fevo_k_ == -1);                                                                    \
  } while (0)

}  // namespace fevo_test
