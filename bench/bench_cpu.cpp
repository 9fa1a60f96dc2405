// CPU benchmark of fevo's fused pass against a plain vectorised read of both snapshots, a
// three-pass Eigen formulation and the LibTorch eager formulation, on the conv weights of VGG-16
// and ResNet-50.
//
//   fevo_bench_cpu [--quick] [--dram-mb=N] [--benchmark_filter=...]   (FEVO_BENCH_QUICK=1 is --quick)
//
// Every contender runs on 2 threads and reports the bytes of both snapshots it must read (GB/s).
// Data sets: each model once ("cache": one model's pair, which this VM's caches largely hold) and
// the model repeated in a row until a pair holds at least --dram-mb MB ("dram"), in f32, bf16 and
// f16, viewed as OIHW (PyTorch) and, over the same bytes, as HWIO (TensorFlow). fevo is timed as a
// user calls it: one compute_layers call for the whole model ("layers"), one compute call per layer
// ("calls"), per layer with per-filter results ("per") and with channel counts R_ic ("R"); the read
// baseline the same two ways (one parallel region over the whole buffer, or one per layer).
// Before timing, fevo, Eigen and LibTorch are checked to agree on D, S and Z (fp32). Repetitions
// of all benchmarks are interleaved in random order; after the runs a table gives every ratio
// with its target. Missed targets are reported, never turned into a failure.
#include <benchmark/benchmark.h>

#include <fevo/cpu.hpp>
#include <fevo/fevo.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>

#include "default_build.hpp"
#include "models.hpp"

#ifndef FEVO_BENCH_HAVE_EIGEN
#define FEVO_BENCH_HAVE_EIGEN 0
#endif
#ifndef FEVO_BENCH_HAVE_TORCH
#define FEVO_BENCH_HAVE_TORCH 0
#endif

#if FEVO_BENCH_HAVE_EIGEN
#include <Eigen/Core>
#endif
#if FEVO_BENCH_HAVE_TORCH
#include "torch_eager.hpp"
#endif

namespace fb = fevo_bench;

namespace {

constexpr int kThreads = fb::kThreads;
constexpr double kTau = fb::kTau;    // the paper's initial learning rate
constexpr double kPrevStd = 0.05;    // prev ~ N(0, 0.05)
constexpr double kStepStd = 3e-4;    // next = prev + N(0, 3e-4) for the weights that move
constexpr double kFrozen = 0.30;     // share of weights that do not change at all

// ---- buffers and random data --------------------------------------------------------------------

struct free_deleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using buffer = std::unique_ptr<T[], free_deleter>;

template <class T>
buffer<T> make_buffer(std::size_t n) {
  const std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) {
    std::fprintf(stderr, "fevo_bench_cpu: out of memory allocating %zu bytes\n", bytes);
    std::exit(1);
  }
  return buffer<T>(static_cast<T*>(p));
}

/// xoshiro256** seeded with splitmix64; normals by Box-Muller.
class rng {
 public:
  explicit rng(std::uint64_t seed) {
    for (auto& s : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]
    const double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;
    spare_ = r * std::sin(th);
    have_ = true;
    return r * std::cos(th);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
  double spare_ = 0;
  bool have_ = false;
};

/// Both snapshots of `copies` copies of a model in one element type, each snapshot one contiguous
/// buffer (copy k at k * shape.total), and their layer pairs viewed as OIHW and as HWIO.
template <class T>
struct snapshots {
  std::size_t copies = 0, weights = 0;  ///< weights: of all copies
  buffer<T> prev, next;
  fb::pair_list<T> oihw, hwio;

  void build(const fb::model_shape& s, std::size_t n_copies, const T* prev0, const T* next0) {
    copies = n_copies;
    weights = copies * s.total;
    prev = make_buffer<T>(weights);
    next = make_buffer<T>(weights);
    for (std::size_t k = 0; k < copies; ++k) {  // copies of the first: distinct memory, same data
      std::memcpy(prev.get() + k * s.total, prev0, s.total * sizeof(T));
      std::memcpy(next.get() + k * s.total, next0, s.total * sizeof(T));
    }
    for (std::size_t k = 0; k < copies; ++k)
      for (const fb::layer_shape& l : s.layers) {
        const std::size_t at = k * s.total + l.offset;
        const std::string name = copies > 1 ? std::to_string(k) + "." + l.name : l.name;
        oihw.push_back({name, fevo::oihw(prev.get() + at, l.o, l.i, l.h, l.w),
                        fevo::oihw(next.get() + at, l.o, l.i, l.h, l.w)});
        // The same bytes as a TensorFlow kernel [H, W, I, O]: the data are i.i.d., so only the
        // order in which the pass meets them changes.
        hwio.push_back({name, fevo::hwio(prev.get() + at, l.h, l.w, l.i, l.o),
                        fevo::hwio(next.get() + at, l.h, l.w, l.i, l.o)});
      }
  }
  const fb::pair_list<T>& pairs(bool hwio_layout) const { return hwio_layout ? hwio : oihw; }
};

/// One model's conv weights, in f32, bf16 and f16, `copies` times in a row ("cache": once).
struct dataset {
  std::string residency;  ///< "cache" or "dram"
  fb::model_shape shape;  ///< one copy
  snapshots<float> f32;
  snapshots<fevo::bfloat16> bf16;
  snapshots<fevo::half> f16;

  std::string prefix() const { return shape.name + "/" + residency + "/"; }
};

/// Random snapshots of one copy of the model in f32 and their bf16 and f16 roundings.
struct one_copy {
  std::vector<float> prev32, next32;
  std::vector<fevo::bfloat16> prev_bf, next_bf;
  std::vector<fevo::half> prev_h, next_h;

  one_copy(const fb::model_shape& shape, std::uint64_t seed) {
    const std::size_t n = shape.total;
    prev32.resize(n), next32.resize(n), prev_bf.resize(n), next_bf.resize(n), prev_h.resize(n),
        next_h.resize(n);
    const long long n_layers = static_cast<long long>(shape.layers.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(kThreads)
    for (long long k = 0; k < n_layers; ++k) {
      const fb::layer_shape& l = shape.layers[static_cast<std::size_t>(k)];
      rng g(seed * 1000003ull + static_cast<std::uint64_t>(k));
      for (std::size_t j = l.offset; j < l.offset + l.size(); ++j) {
        const float p = static_cast<float>(kPrevStd * g.normal());
        const float q = g.uniform() < kFrozen ? p : static_cast<float>(p + kStepStd * g.normal());
        prev32[j] = p, next32[j] = q;
        prev_bf[j] = fevo::bfloat16::from_float(p), next_bf[j] = fevo::bfloat16::from_float(q);
        prev_h[j] = fevo::half::from_float(p), next_h[j] = fevo::half::from_float(q);
      }
    }
  }
};

std::unique_ptr<dataset> make_dataset(const fb::model_shape& shape, const one_copy& c,
                                      const std::string& residency, std::size_t copies32,
                                      std::size_t copies16) {
  auto d = std::make_unique<dataset>();
  d->residency = residency;
  d->shape = shape;
  d->f32.build(shape, copies32, c.prev32.data(), c.next32.data());
  d->bf16.build(shape, copies16, c.prev_bf.data(), c.next_bf.data());
  d->f16.build(shape, copies16, c.prev_h.data(), c.next_h.data());
  return d;
}

// ---- read baseline: every byte of both snapshots once, vectorised, 2 threads ----------------------

/// Each of kThreads threads sums its contiguous share with an `omp simd` loop. (Not `parallel for
/// simd`: clang 14 does not vectorise that loop's float reduction, which read 17 GB/s against this
/// loop's 69 on the 2-core development VM; with GCC both read the same.)
template <class Acc, class T, class Value>
Acc read_sum_of(const T* a, const T* b, std::size_t n, Value value) {
  Acc total = 0;
#pragma omp parallel num_threads(kThreads) reduction(+ : total)
  {
    const std::size_t t = std::size_t(omp_get_thread_num()), nt = std::size_t(omp_get_num_threads());
    const std::size_t from = n / nt * t + std::min(t, n % nt), to = from + n / nt + (t < n % nt);
    Acc s = 0;
#pragma omp simd reduction(+ : s)
    for (std::size_t i = from; i < to; ++i) s += value(a[i]) + value(b[i]);
    total += s;
  }
  return total;
}
float read_sum(const float* a, const float* b, std::size_t n) {
  return read_sum_of<float>(a, b, n, [](float x) { return x; });
}
/// Sums the raw 16-bit patterns (wrapping), which reads every byte once like the fp32 version.
template <class T16>
std::uint32_t read_sum(const T16* a, const T16* b, std::size_t n) {
  return read_sum_of<std::uint32_t>(a, b, n, [](T16 x) { return std::uint32_t(x.bits); });
}

// ---- Eigen: D, S and Z as three separate expressions (three passes over each layer) ---------------

/// A layer's totals as the baselines compute them.
struct layer_totals {
  double D = 0;                    ///< eq. 1 (mean over filters)
  std::int64_t changed = 0;        ///< #(|d| > tau)
  std::int64_t zero_channels = 0;  ///< #(channels without a changed weight)
};

#if FEVO_BENCH_HAVE_EIGEN
/// Each layer is split into kThreads filter ranges; the items of all layers go to an OpenMP loop
/// of kThreads threads. Each item runs the three expressions over its filters, one after another,
/// producing the per-filter D_i, changed_i and zero-channel counts; the layer's D, S, Z follow.
class eigen_three_pass {
 public:
  using Index = Eigen::Index;
  using row_array = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using bool_rows = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  eigen_three_pass(const dataset& m, float tau) : m_(m), tau_(tau) {
    for (std::size_t k = 0; k < m.shape.layers.size(); ++k) {
      const fb::layer_shape& l = m.shape.layers[k];
      const std::size_t N = static_cast<std::size_t>(l.o);
      const std::size_t parts = std::min<std::size_t>(kThreads, N);
      for (std::size_t p = 0; p < parts; ++p) {
        const std::size_t f0 = N * p / parts, f1 = N * (p + 1) / parts;
        items_.push_back({k, f0, f1 - f0});
      }
      D_.emplace_back(N);
      changed_.emplace_back(N);
      zeros_.emplace_back(N);
      any_.emplace_back(new bool[N * static_cast<std::size_t>(l.i)]);
    }
  }

  void run(std::vector<layer_totals>& out) {
    const long long n_items = static_cast<long long>(items_.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(kThreads)
    for (long long it = 0; it < n_items; ++it) one(items_[static_cast<std::size_t>(it)]);
    out.resize(m_.shape.layers.size());
    for (std::size_t k = 0; k < out.size(); ++k) {
      layer_totals t;
      for (float d : D_[k]) t.D += d;
      t.D /= double(D_[k].size());
      for (Index c : changed_[k]) t.changed += c;
      for (Index z : zeros_[k]) t.zero_channels += z;
      out[k] = t;
    }
  }

 private:
  struct item {
    std::size_t layer, f0, n;
  };

  void one(const item& it) {
    const fb::layer_shape& l = m_.shape.layers[it.layer];
    const Index n = static_cast<Index>(it.n), K = static_cast<Index>(l.filter_size());
    const Index C = static_cast<Index>(l.i), HW = static_cast<Index>(l.h * l.w);
    const float* pa = m_.f32.prev.get() + l.offset + it.f0 * l.filter_size();
    const float* pb = m_.f32.next.get() + l.offset + it.f0 * l.filter_size();
    Eigen::Map<const row_array> a(pa, n, K), b(pb, n, K);
    // eq. 1: D_i = ||d_i||^2
    Eigen::Map<Eigen::ArrayXf>(D_[it.layer].data() + it.f0, n) = (b - a).square().rowwise().sum();
    // eq. 2: changed_i = #{|d_i| > tau}
    Eigen::Map<Eigen::Array<Index, Eigen::Dynamic, 1>>(changed_[it.layer].data() + it.f0, n) =
        ((b - a).abs() > tau_).rowwise().count();
    // eq. 3: zero channels of filter i = #{c : no |d_ic| > tau}
    Eigen::Map<const row_array> ac(pa, n * C, HW), bc(pb, n * C, HW);
    bool* any = any_[it.layer].get() + it.f0 * l.i;
    Eigen::Map<Eigen::Array<bool, Eigen::Dynamic, 1>>(any, n * C) =
        ((bc - ac).abs() > tau_).rowwise().any();
    Eigen::Map<const bool_rows> anyc(any, n, C);
    Eigen::Map<Eigen::Array<Index, Eigen::Dynamic, 1>>(zeros_[it.layer].data() + it.f0, n) =
        C - anyc.rowwise().count();
  }

  const dataset& m_;
  float tau_;
  std::vector<item> items_;
  std::vector<std::vector<float>> D_;
  std::vector<std::vector<Index>> changed_, zeros_;
  std::vector<std::unique_ptr<bool[]>> any_;
};
#endif

// ---- verification ------------------------------------------------------------------------------

[[maybe_unused]] bool close_rel(double x, double y, double rel) {
  return std::fabs(x - y) <= rel * std::max(std::fabs(x), std::fabs(y));
}

/// fevo (fp32, OIHW, one copy) against Eigen and LibTorch: exact S and Z counts, D within 1e-5
/// relative; fevo on the HWIO view of a layer against the same layer transposed to OIHW; and the
/// default-build code against this build's, count for count.
bool verify(dataset& m) {
  const auto& pairs = m.f32.oihw;
  const auto fv = fevo::compute_layers(fevo::cpu::par.threads(kThreads), pairs, kTau);
  const std::size_t L = m.shape.layers.size();
  bool ok = true;
  [[maybe_unused]] auto fail = [&](const std::string& who, std::size_t k, const std::string& what, double a, double b) {
    std::fprintf(stderr,
                 "VERIFICATION FAILED: %s, layer %s (%zu): fevo and %s disagree on %s: "
                 "fevo %.17g vs %.17g\n",
                 m.shape.name.c_str(), m.shape.layers[k].name.c_str(), k, who.c_str(), what.c_str(),
                 a, b);
    ok = false;
  };
  double max_rel_D = 0, max_abs_SZ = 0;
  double S_lo = 1, S_hi = 0, Z_lo = 1, Z_hi = 0, S_all = 0, Z_all = 0;
  std::uint64_t changed_all = 0, weights_all = 0, zero_all = 0, ch_all = 0;
  for (std::size_t k = 0; k < L; ++k) {
    const fevo::layer_metrics& f = fv[k];
    S_lo = std::min(S_lo, f.S), S_hi = std::max(S_hi, f.S);
    Z_lo = std::min(Z_lo, f.Z), Z_hi = std::max(Z_hi, f.Z);
    changed_all += f.totals.changed, weights_all += f.totals.weights;
    zero_all += f.totals.zero_channels, ch_all += f.totals.channels;
  }
  S_all = double(changed_all) / double(weights_all);
  Z_all = double(zero_all) / double(ch_all);

#if FEVO_BENCH_HAVE_EIGEN
  {
    eigen_three_pass e(m, static_cast<float>(kTau));
    std::vector<layer_totals> ev;
    e.run(ev);
    for (std::size_t k = 0; k < L; ++k) {
      const fevo::partial& t = fv[k].totals;
      if (std::uint64_t(ev[k].changed) != t.changed)
        fail("Eigen", k, "changed count (S)", double(t.changed), double(ev[k].changed));
      if (std::uint64_t(ev[k].zero_channels) != t.zero_channels)
        fail("Eigen", k, "zero-channel count (Z)", double(t.zero_channels), double(ev[k].zero_channels));
      if (!close_rel(fv[k].D, ev[k].D, 1e-5)) fail("Eigen", k, "D", fv[k].D, ev[k].D);
      max_rel_D = std::max(max_rel_D, std::fabs(fv[k].D - ev[k].D) / std::fabs(fv[k].D));
    }
  }
#endif
#if FEVO_BENCH_HAVE_TORCH
  {
    auto t = fb::make_torch_eager(m.shape, m.f32.prev.get(), m.f32.next.get(), false, kTau);
    const auto tv = t->verify();
    for (std::size_t k = 0; k < L; ++k) {
      const fevo::partial& p = fv[k].totals;
      if (std::uint64_t(tv[k].changed) != p.changed)
        fail("LibTorch", k, "changed count (S)", double(p.changed), double(tv[k].changed));
      if (std::uint64_t(tv[k].zero_channels) != p.zero_channels)
        fail("LibTorch", k, "zero-channel count (Z)", double(p.zero_channels), double(tv[k].zero_channels));
      if (!close_rel(fv[k].D, tv[k].D, 1e-5)) fail("LibTorch", k, "D", fv[k].D, tv[k].D);
      // The eager S and Z are float means of per-filter means: equal up to float rounding.
      if (std::fabs(fv[k].S - tv[k].S) > 1e-6) fail("LibTorch", k, "S (float mean)", fv[k].S, tv[k].S);
      if (std::fabs(fv[k].Z - tv[k].Z) > 1e-6) fail("LibTorch", k, "Z (float mean)", fv[k].Z, tv[k].Z);
      max_rel_D = std::max(max_rel_D, std::fabs(fv[k].D - tv[k].D) / std::fabs(fv[k].D));
      max_abs_SZ = std::max({max_abs_SZ, std::fabs(fv[k].S - tv[k].S), std::fabs(fv[k].Z - tv[k].Z)});
    }
  }
#endif
  {
    // The HWIO view of a layer's bytes is another layer; copied to OIHW, fevo must agree with
    // itself count for count (the two layouts take different kernels).
    const fb::layer_shape& l = m.shape.layers[m.shape.layers.size() / 2];
    const auto& hp = m.f32.hwio[m.shape.layers.size() / 2];
    std::vector<float> a(l.size()), b(l.size());
    const std::size_t N = std::size_t(l.o), C = std::size_t(l.i), H = std::size_t(l.h), W = std::size_t(l.w);
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t c = 0; c < C; ++c)
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t w = 0; w < W; ++w) {
            a[((i * C + c) * H + h) * W + w] = hp.prev(i, c, h, w);
            b[((i * C + c) * H + h) * W + w] = hp.next(i, c, h, w);
          }
    const auto x = fevo::compute(fevo::cpu::par.threads(kThreads), hp.prev, hp.next, kTau);
    const auto y = fevo::compute(fevo::cpu::par.threads(kThreads), fevo::oihw(a.data(), N, C, H, W),
                                 fevo::oihw(b.data(), N, C, H, W), kTau);
    if (x.totals.changed != y.totals.changed || x.totals.zero_channels != y.totals.zero_channels ||
        !close_rel(x.D, y.D, 2 * fevo::cpu::D_relative_error)) {
      std::fprintf(stderr, "VERIFICATION FAILED: %s, layer %s: HWIO and OIHW give %llu/%llu/%.17g "
                   "and %llu/%llu/%.17g (changed, zero channels, D)\n", m.shape.name.c_str(),
                   l.name.c_str(), (unsigned long long)x.totals.changed,
                   (unsigned long long)x.totals.zero_channels, x.D,
                   (unsigned long long)y.totals.changed, (unsigned long long)y.totals.zero_channels, y.D);
      ok = false;
    }
  }
  {
    std::vector<fevo::layer_metrics> dv;
    fb::default_build::compute_layers(pairs, dv);
    for (std::size_t k = 0; k < L; ++k)
      if (dv[k].totals.changed != fv[k].totals.changed ||
          dv[k].totals.zero_channels != fv[k].totals.zero_channels ||
          !close_rel(dv[k].D, fv[k].D, 2 * fevo::cpu::D_relative_error))
        fail("the default build", k, "changed, zero channels or D", fv[k].D, dv[k].D);
  }
  if (!ok) return false;
  const char* others = FEVO_BENCH_HAVE_EIGEN && FEVO_BENCH_HAVE_TORCH ? "Eigen == LibTorch"
                       : FEVO_BENCH_HAVE_EIGEN                        ? "Eigen"
                       : FEVO_BENCH_HAVE_TORCH                        ? "LibTorch"
                                                                      : nullptr;
  if (others) {
    std::printf("verify %-8s fp32: %zu layers, %zu weights; fevo == %s on per-layer changed and "
                "zero-channel counts (S, Z exact), D max rel diff %.2g",
                m.shape.name.c_str(), L, m.shape.total, others, max_rel_D);
    if (FEVO_BENCH_HAVE_TORCH)
      std::printf(", LibTorch float-mean S/Z max abs diff %.2g", max_abs_SZ);
  } else {
    std::printf("verify %-8s fp32: %zu layers, %zu weights; no Eigen or LibTorch built to compare "
                "against", m.shape.name.c_str(), L, m.shape.total);
  }
  std::printf("; HWIO == OIHW; default build == this build\n  model S = %.4f (layers %.4f..%.4f), "
              "Z = %.4f (layers %.4f..%.4f)\n", S_all, S_lo, S_hi, Z_all, Z_lo, Z_hi);
  if (!(S_all > 0 && S_all < 1 && Z_all > 0 && Z_all < 1)) {
    std::fprintf(stderr, "VERIFICATION FAILED: %s: S or Z is degenerate (0 or 1) with tau = %g\n",
                 m.shape.name.c_str(), kTau);
    return false;
  }
  return true;
}

// ---- reporter that keeps each benchmark's rates ------------------------------------------------

struct rate {
  double bytes_per_s = 0, items_per_s = 0, ms_per_iter = 0;
};

class collecting_reporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, rate> rates;

  collecting_reporter()
      : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}

  /// The best repetition: its rates are the aggregate "max" (of rates), its time the aggregate
  /// "min" (of times); with one repetition, that one.
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const bool agg = r.run_type == Run::RT_Aggregate;
      if (agg ? r.aggregate_name != "max" && r.aggregate_name != "min" : r.repetitions > 1) continue;
      rate& x = rates[r.run_name.function_name];
      if (!agg || r.aggregate_name == "max") {
        if (auto it = r.counters.find("bytes_per_second"); it != r.counters.end())
          x.bytes_per_s = it->second.value;
        if (auto it = r.counters.find("items_per_second"); it != r.counters.end())
          x.items_per_s = it->second.value;
      }
      if (!agg || r.aggregate_name == "min")
        x.ms_per_iter = r.GetAdjustedRealTime();  // every benchmark reports in milliseconds
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// ---- registration ------------------------------------------------------------------------------

struct run_config {
  double min_time;
  int repetitions;
};

template <class F>
void add(const std::string& name, const run_config& cfg, F&& fn) {
  // Best of the repetitions (the machine is shared: a slow repetition is another process's).
  const auto lowest = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  const auto highest = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  benchmark::RegisterBenchmark(name.c_str(), std::forward<F>(fn))
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(cfg.min_time)
      ->Repetitions(cfg.repetitions)
      ->ComputeStatistics("min", lowest)
      ->ComputeStatistics("max", highest)
      ->DisplayAggregatesOnly(true);
}

void set_rates(benchmark::State& st, std::size_t weights, std::size_t elem_bytes) {
  const auto it = static_cast<std::int64_t>(st.iterations());
  st.SetBytesProcessed(it * 2 * static_cast<std::int64_t>(weights * elem_bytes));
  st.SetItemsProcessed(it * static_cast<std::int64_t>(weights));
}

const char* type_name(float) { return "f32"; }
const char* type_name(fevo::bfloat16) { return "bf16"; }
const char* type_name(fevo::half) { return "f16"; }

/// The four ways a user calls fevo, each timed over every layer of the pairs.
enum class call { layers, calls, per, R };
const char* call_name(call c) {
  switch (c) {
    case call::layers: return "layers";
    case call::calls: return "calls";
    case call::per: return "per";
    case call::R: return "R";
  }
  return "?";
}

template <class T>
void register_fused(const std::string& p, const run_config& cfg, const snapshots<T>* s, bool hwio) {
  const std::string where = p + (hwio ? "hwio/" : "oihw/");
  const std::string ty = type_name(T{});
  const auto policy = fevo::cpu::par.threads(kThreads);
  for (const call c : {call::layers, call::calls, call::per, call::R}) {
    add(where + call_name(c) + "/" + ty, cfg, [=](benchmark::State& st) {
      const fb::pair_list<T>& pairs = s->pairs(hwio);
      std::vector<fevo::filter_results> per(pairs.size());  // reused, as a recorder would
      for (auto _ : st) {
        switch (c) {
          case call::layers: {
            auto r = fevo::compute_layers(policy, pairs, kTau);
            benchmark::DoNotOptimize(r.data());
            break;
          }
          case call::calls:
            for (const auto& l : pairs) {
              auto m = fevo::compute(policy, l.prev, l.next, kTau);
              benchmark::DoNotOptimize(m);
            }
            break;
          case call::per:
            for (std::size_t k = 0; k < pairs.size(); ++k) {
              auto m = fevo::compute(policy, pairs[k].prev, pairs[k].next, kTau, per[k]);
              benchmark::DoNotOptimize(m);
            }
            break;
          case call::R:
            for (std::size_t k = 0; k < pairs.size(); ++k) {
              auto m = fevo::compute(policy, pairs[k].prev, pairs[k].next, kTau, per[k],
                                     fevo::with_channel_counts);
              benchmark::DoNotOptimize(m);
            }
            break;
        }
        benchmark::ClobberMemory();
      }
      set_rates(st, s->weights, sizeof(T));
    });
  }
  // The same calls compiled without -march=native (the instruction set chosen at run time).
  for (const call c : {call::layers, call::calls}) {
    add(where + call_name(c) + "_default/" + ty, cfg, [=](benchmark::State& st) {
      const fb::pair_list<T>& pairs = s->pairs(hwio);
      std::vector<fevo::layer_metrics> out;
      for (auto _ : st) {
        if (c == call::layers)
          fb::default_build::compute_layers(pairs, out);
        else
          fb::default_build::compute_calls(pairs, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      }
      set_rates(st, s->weights, sizeof(T));
    });
  }
#if defined(FEVO_CPU_ISA_DISPATCH)
  // compute_layers on each other kernel this CPU can run (test-only selection): AVX-512 ships only
  // where it beats AVX2, and the generic kernel shows what the dispatch buys.
  for (const fevo::cpu::detail::isa i : fevo::cpu::detail::supported_isas()) {
    if (i == fevo::cpu::detail::best_isa()) continue;
    add(where + "layers_" + fevo::cpu::detail::isa_name(i) + "/" + ty, cfg, [=](benchmark::State& st) {
      const fb::pair_list<T>& pairs = s->pairs(hwio);
      const fevo::cpu::detail::isa_override force(i);
      for (auto _ : st) {
        auto r = fevo::compute_layers(policy, pairs, kTau);
        benchmark::DoNotOptimize(r.data());
        benchmark::ClobberMemory();
      }
      set_rates(st, s->weights, sizeof(T));
    });
  }
#endif
}

template <class T>
void register_reads(const std::string& p, const run_config& cfg, const snapshots<T>* s,
                    const fb::model_shape* shape, const char* ty) {
  add(p + "read/layers/" + ty, cfg, [=](benchmark::State& st) {
    for (auto _ : st) benchmark::DoNotOptimize(read_sum(s->prev.get(), s->next.get(), s->weights));
    set_rates(st, s->weights, sizeof(T));
  });
  add(p + "read/calls/" + ty, cfg, [=](benchmark::State& st) {
    for (auto _ : st)
      for (std::size_t k = 0; k < s->copies; ++k)
        for (const fb::layer_shape& l : shape->layers) {
          const std::size_t at = k * shape->total + l.offset;
          benchmark::DoNotOptimize(read_sum(s->prev.get() + at, s->next.get() + at, l.size()));
        }
    set_rates(st, s->weights, sizeof(T));
  });
}

void register_dataset(const dataset* m, const run_config& cfg) {
  const std::string p = m->prefix();
  for (const bool hwio : {false, true}) {
    register_fused(p, cfg, &m->f32, hwio);
    register_fused(p, cfg, &m->bf16, hwio);
    register_fused(p, cfg, &m->f16, hwio);
  }
  register_reads(p, cfg, &m->f32, &m->shape, "f32");
  register_reads(p, cfg, &m->bf16, &m->shape, "16bit");  // f16 reads the same bytes
  if (m->residency != "cache") return;
  const std::size_t n = m->shape.total;
#if FEVO_BENCH_HAVE_EIGEN
  add(p + "eigen_three_pass/f32", cfg, [=](benchmark::State& st) {
    eigen_three_pass e(*m, static_cast<float>(kTau));
    std::vector<layer_totals> out;
    for (auto _ : st) {
      e.run(out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
    set_rates(st, n, 4);
  });
#endif
#if FEVO_BENCH_HAVE_TORCH
  add(p + "libtorch_eager/f32", cfg, [=](benchmark::State& st) {
    auto t = fb::make_torch_eager(m->shape, m->f32.prev.get(), m->f32.next.get(), false, kTau);
    std::vector<fb::torch_layer_result> out;
    for (auto _ : st) {
      t->run(out);
      benchmark::DoNotOptimize(out.data());
    }
    set_rates(st, n, 4);
  });
  add(p + "libtorch_eager/bf16", cfg, [=](benchmark::State& st) {
    auto t = fb::make_torch_eager(m->shape, m->bf16.prev.get(), m->bf16.next.get(), true, kTau);
    std::vector<fb::torch_layer_result> out;
    for (auto _ : st) {
      t->run(out);
      benchmark::DoNotOptimize(out.data());
    }
    set_rates(st, n, 2);
  });
#endif
  (void)n;
}

/// Small layers, one compute call each: the cost of a call beside the bytes it reads.
struct small_layer {
  std::string name;
  long long o, i, k;
  std::vector<float> prev, next;
};

void register_small(std::vector<small_layer>& smalls, const run_config& cfg) {
  for (small_layer& s : smalls) {
    const std::size_t n = std::size_t(s.o * s.i * s.k * s.k);
    rng g(77);
    s.prev.resize(n), s.next.resize(n);
    for (std::size_t j = 0; j < n; ++j) {
      s.prev[j] = float(kPrevStd * g.normal());
      s.next[j] = g.uniform() < kFrozen ? s.prev[j] : float(s.prev[j] + kStepStd * g.normal());
    }
    const small_layer* sp = &s;
    add("small/" + s.name + "/calls/f32", cfg, [=](benchmark::State& st) {
      const auto a = fevo::oihw(sp->prev.data(), sp->o, sp->i, sp->k, sp->k);
      const auto b = fevo::oihw(sp->next.data(), sp->o, sp->i, sp->k, sp->k);
      const auto policy = fevo::cpu::par.threads(kThreads);
      for (auto _ : st) {
        // 100 calls per iteration, so that the timer's own cost does not count.
        for (int r = 0; r < 100; ++r) {
          auto m = fevo::compute(policy, a, b, kTau);
          benchmark::DoNotOptimize(m);
        }
      }
      set_rates(st, 100 * n, 4);
    });
  }
}

// ---- tables ------------------------------------------------------------------------------------

void print_rates(const collecting_reporter& rep) {
  std::printf("\n%-40s %10s %12s %12s\n", "benchmark (best)", "GB/s(1e9)", "Gweights/s", "ms/iter");
  for (const auto& [name, r] : rep.rates)
    std::printf("%-40s %10.2f %12.3f %12.3f\n", name.c_str(), r.bytes_per_s / 1e9,
                r.items_per_s / 1e9, r.ms_per_iter);
}

struct ratio_printer {
  const collecting_reporter& rep;
  int pass = 0, miss = 0;

  double get(const std::string& n, bool items) const {
    auto it = rep.rates.find(n);
    if (it == rep.rates.end()) return -1;
    return items ? it->second.items_per_s : it->second.bytes_per_s;
  }
  /// One row: num / den (byte rates, or element rates when `items`), against target (<= 0: info).
  void row(const std::string& label, const std::string& num, const std::string& den, bool items,
           double target, const char* missing = "n/a (not run)") {
    const double a = get(num, items), b = get(den, items);
    if (a <= 0 || b <= 0) {
      std::printf("%-58s %8s %8s  %s\n", label.c_str(), "-", "", missing);
      return;
    }
    print(label, a / b, target);
  }
  void print(const std::string& label, double v, double target) {
    char t[16] = "";
    if (target > 0) std::snprintf(t, sizeof t, ">= %.2f", target);
    const char* status = target > 0 ? (v >= target ? "PASS" : "MISS") : "info";
    if (target > 0) (v >= target ? pass : miss) += 1;
    std::printf("%-58s %8.3f %8s  %s\n", label.c_str(), v, t, status);
  }
};

void print_ratios(const collecting_reporter& rep, const std::vector<std::unique_ptr<dataset>>& sets,
                  const std::vector<small_layer>& smalls, bool quick) {
  std::printf("\nRatio table (%d threads, best of the interleaved repetitions; rates are bytes of both "
              "snapshots read per second unless marked 'elements')%s\n",
              kThreads, quick ? "\n  ** --quick: tiny layers and run times, the ratios mean nothing **" : "");
  std::printf("%-58s %8s %8s  %s\n", "ratio", "value", "target", "status");
  ratio_printer r{rep};
  const char* types[] = {"f32", "bf16", "f16"};
  for (const auto& m : sets) {
    const std::string p = m->prefix();
    std::printf("-- %s, %s: f32 pair %.0f MB (%zu cop%s), 16-bit pair %.0f MB (%zu cop%s)\n",
                m->shape.name.c_str(), m->residency.c_str(), 2e-6 * 4 * double(m->f32.weights),
                m->f32.copies, m->f32.copies == 1 ? "y" : "ies", 2e-6 * 2 * double(m->bf16.weights),
                m->bf16.copies, m->bf16.copies == 1 ? "y" : "ies");
    for (const char* lay : {"oihw", "hwio"})
      for (const char* ty : types) {
        const std::string f = p + lay + "/", read = std::string(ty) == "f32" ? "f32" : "16bit";
        const std::string tag = p + lay + " " + ty + ": ";
        r.row(tag + "compute_layers / read", f + "layers/" + ty, p + "read/layers/" + read, false, 0.9);
        r.row(tag + "compute per layer / read per layer", f + "calls/" + ty, p + "read/calls/" + read, false, 0.9);
        r.row(tag + "compute(per) per layer / read per layer", f + "per/" + ty, p + "read/calls/" + read, false, 0.85);
        r.row(tag + "compute(per, R) per layer / read per layer", f + "R/" + ty, p + "read/calls/" + read, false, 0.7);
      }
    for (const char* lay : {"oihw", "hwio"})
      for (const char* call_s : {"layers", "calls"}) {
        const std::string f = p + lay + "/" + call_s + "/";
        r.row(p + lay + " " + call_s + ": bf16 / f32 (elements)", f + "bf16", f + "f32", true, 1.8);
        r.row(p + lay + " " + call_s + ": f16 / f32 (elements)", f + "f16", f + "f32", true, 0);
      }
    for (const char* lay : {"oihw", "hwio"})
      for (const char* ty : types)
        for (const char* call_s : {"layers", "calls"}) {
          const std::string f = p + lay + "/" + call_s;
          r.row(p + lay + " " + ty + " " + call_s + ": default build / native build",
                f + "_default/" + ty, f + "/" + ty, false, 0.9);
        }
#if defined(FEVO_CPU_ISA_DISPATCH)
    for (const fevo::cpu::detail::isa i : fevo::cpu::detail::supported_isas()) {
      if (i == fevo::cpu::detail::best_isa()) continue;
      for (const char* lay : {"oihw", "hwio"})
        for (const char* ty : types) {
          const std::string f = p + lay + "/layers";
          r.row(p + lay + " " + ty + " layers: " + fevo::cpu::instruction_set() + " / " +
                    fevo::cpu::detail::isa_name(i) + " kernel",
                f + "/" + ty, f + "_" + fevo::cpu::detail::isa_name(i) + "/" + ty, false, 0);
        }
    }
#endif
    if (m->residency == "cache") {
      const char* no_torch = FEVO_BENCH_HAVE_TORCH ? "n/a (not run)" : "n/a (built without LibTorch)";
      const char* no_eigen = FEVO_BENCH_HAVE_EIGEN ? "n/a (not run)" : "n/a (built without Eigen)";
      r.row(p + "oihw f32 layers / LibTorch eager f32", p + "oihw/layers/f32", p + "libtorch_eager/f32", false, 5.0, no_torch);
      r.row(p + "oihw bf16 layers / LibTorch eager bf16", p + "oihw/layers/bf16", p + "libtorch_eager/bf16", false, 0, no_torch);
      r.row(p + "oihw f32 layers / Eigen three-pass f32", p + "oihw/layers/f32", p + "eigen_three_pass/f32", false, 0, no_eigen);
    }
  }
  // Small layers: one call's cost against 2x its bytes at the read rate of the first cache data
  // set, plus 2 us (target: bound / cost >= 1).
  const double read_rate = sets.empty() ? -1 : r.get(sets.front()->prefix() + "read/layers/f32", false);
  for (const small_layer& s : smalls) {
    const auto it = rep.rates.find("small/" + s.name + "/calls/f32");
    if (it == rep.rates.end() || read_rate <= 0) continue;
    const double bytes = 2.0 * 4 * double(s.prev.size());
    const double cost_us = it->second.ms_per_iter * 1e3 / 100;
    const double bound_us = 2 * bytes / read_rate * 1e6 + 2;
    char label[128];
    std::snprintf(label, sizeof label, "small %s f32: (2 x %.0f B at %.0f GB/s + 2 us) / %.2f us",
                  s.name.c_str(), bytes, read_rate / 1e9, cost_us);
    r.print(label, bound_us / cost_us, s.name == "conv3x3x3x64" ? 1.0 : 0);
  }
  std::printf("%d PASS, %d MISS (targets are goals, not assertions: a MISS never changes the exit "
              "status)\n", r.pass, r.miss);
}

/// CPU time of the whole machine and of this process, to tell how much of the 2 cores other
/// processes took while the benchmarks ran (a busy machine makes every ratio unreliable).
struct cpu_sample {
  double machine_busy = 0, machine_steal = 0, self = 0, wall = 0;
  bool ok = false;
};
cpu_sample sample_cpu() {
  cpu_sample c;
#if defined(__linux__)
  const double tick = double(sysconf(_SC_CLK_TCK));
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    unsigned long long v[8] = {};
    if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                    &v[4], &v[5], &v[6], &v[7]) == 8) {
      c.machine_busy = double(v[0] + v[1] + v[2] + v[5] + v[6]) / tick;  // user nice sys irq softirq
      c.machine_steal = double(v[7]) / tick;
      c.ok = true;
    }
    std::fclose(f);
  }
  if (FILE* f = std::fopen("/proc/self/stat", "r")) {
    char buf[4096];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    std::fclose(f);
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    const char* q = std::strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (q && std::sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                         &st) == 2)
      c.self = double(ut + st) / tick;
    else
      c.ok = false;
  }
#endif
  c.wall = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return c;
}
void print_contention(const cpu_sample& a, const cpu_sample& b) {
  if (!a.ok || !b.ok || b.wall <= a.wall) return;
  const double wall = b.wall - a.wall, cores = double(kThreads);
  const double other = std::max(0.0, (b.machine_busy - a.machine_busy) - (b.self - a.self));
  const double steal = b.machine_steal - a.machine_steal;
  std::printf("\nmachine during the runs: %.1f s wall; other processes used %.1f%% and the hypervisor "
              "stole %.1f%% of %d cores%s\n",
              wall, 100 * other / (wall * cores), 100 * steal / (wall * cores), kThreads,
              other + steal > 0.05 * wall * cores ? "  ** busy machine: the timings are unreliable **"
                                                  : "");
}

bool env_quick() {
  const char* e = std::getenv("FEVO_BENCH_QUICK");
  return e && *e && std::strcmp(e, "0") != 0;
}

/// Copies of a model so that a pair of its snapshots holds at least `mb` MB.
std::size_t copies_for(const fb::model_shape& s, std::size_t elem_bytes, double mb) {
  const double pair = 2.0 * double(s.total * elem_bytes);
  return std::max<std::size_t>(2, static_cast<std::size_t>(std::ceil(mb * 1e6 / pair)));
}

}  // namespace

int main(int argc, char** argv) {
  // --quick and --dram-mb are ours; the rest goes to Google Benchmark. Repetitions of different
  // benchmarks are interleaved in random order unless told otherwise, so that drift in the
  // machine's memory bandwidth spreads over all contenders instead of biasing the ratios.
  bool quick = env_quick(), interleave_given = false;
  double dram_mb = 640;
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
      continue;
    }
    if (std::strncmp(argv[i], "--dram-mb=", 10) == 0) {
      dram_mb = std::atof(argv[i] + 10);
      continue;
    }
    if (std::strncmp(argv[i], "--benchmark_enable_random_interleaving", 38) == 0)
      interleave_given = true;
    args.push_back(argv[i]);
  }
  static char interleave[] = "--benchmark_enable_random_interleaving=true";
  if (!interleave_given && !quick) args.insert(args.begin() + 1, interleave);
  int bargc = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&bargc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bargc, args.data())) return 1;

  // LibTorch eager allocates a tensor per op and frees it; glibc then returns the memory to the
  // OS and the next op faults it back in, which on a VM can make the eager baseline 2-4x slower
  // than its arithmetic. Keep freed memory in the process so that baseline is timed at its best.
  // FEVO_BENCH_DEFAULT_MALLOC=1 keeps glibc's defaults.
  const char* dm = std::getenv("FEVO_BENCH_DEFAULT_MALLOC");
  bool malloc_tuned = false;
#if defined(__GLIBC__)
  if (!(dm && *dm && std::strcmp(dm, "0") != 0))
    malloc_tuned = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  (void)dm;
#endif
#if FEVO_BENCH_HAVE_TORCH
  fb::torch_set_threads(kThreads);
#endif
#if FEVO_BENCH_HAVE_EIGEN
  Eigen::setNbThreads(1);  // Eigen only threads products; the OpenMP loop above gives it 2 threads
#endif

  const long long shrink = quick ? 16 : 1;
  if (quick) dram_mb = 1;
  const run_config cfg = quick ? run_config{0.002, 1} : run_config{0.1, 9};
  std::printf("fevo CPU benchmark%s: %d threads, tau = %g, prev ~ N(0, %g), %.0f%% of weights "
              "frozen, the rest moved by N(0, %g)\n",
              quick ? " (--quick)" : "", kThreads, kTau, kPrevStd, kFrozen * 100, kStepStd);
#if defined(FEVO_CPU_ISA_DISPATCH)
  std::printf("fevo::cpu kernel: %s (this build), %s (default build)\n", fevo::cpu::instruction_set(),
              fb::default_build::instruction_set());
#endif
  std::printf("baselines: read (OpenMP simd sum), %s, %s\n",
#if FEVO_BENCH_HAVE_EIGEN
              "Eigen " EIGEN_MAKESTRING(EIGEN_WORLD_VERSION) "." EIGEN_MAKESTRING(
                  EIGEN_MAJOR_VERSION) "." EIGEN_MAKESTRING(EIGEN_MINOR_VERSION) " three-pass",
#else
              "Eigen three-pass NOT BUILT (Eigen3 not found)",
#endif
#if FEVO_BENCH_HAVE_TORCH
              ("LibTorch " + fb::torch_version() + " eager").c_str()
#else
              "LibTorch eager NOT BUILT (Torch not found, or FEVO_BENCH_TORCH=OFF)"
#endif
  );

  std::printf("malloc: %s\n", malloc_tuned ? "freed memory kept in the process (mmap threshold 32 MiB, "
                                             "trim threshold 1 GiB), so per-op tensors are reused"
                                           : "library defaults");

  std::vector<std::unique_ptr<dataset>> sets;
  std::uint64_t seed = 1;
  for (const fb::model_shape& s : {fb::vgg16(shrink), fb::resnet50(shrink)}) {
    std::printf("model %-8s: %zu conv layers, %zu weights (%.2fM)%s\n", s.name.c_str(),
                s.layers.size(), s.total, double(s.total) / 1e6, quick ? " [shrunk for --quick]" : "");
    const one_copy c(s, seed++);
    sets.push_back(make_dataset(s, c, "cache", 1, 1));
    sets.push_back(make_dataset(s, c, "dram", copies_for(s, 4, dram_mb), copies_for(s, 2, dram_mb)));
  }
  for (auto& m : sets)
    if (m->residency == "cache" && !verify(*m)) {
      std::fprintf(stderr, "fevo_bench_cpu: aborting: the implementations do not agree (see above)\n");
      return 1;
    }
  std::fflush(stdout);

  std::vector<small_layer> smalls{{"conv3x3x3x64", 64, 3, 3, {}, {}},
                                  {"conv1x1x64x64", 64, 64, 1, {}, {}},
                                  {"conv3x3x64x64", 64, 64, 3, {}, {}}};
  for (const auto& m : sets) register_dataset(m.get(), cfg);
  register_small(smalls, cfg);
  collecting_reporter rep;
  const cpu_sample before = sample_cpu();
  benchmark::RunSpecifiedBenchmarks(&rep);
  const cpu_sample after = sample_cpu();
  print_rates(rep);
  print_contention(before, after);
  print_ratios(rep, sets, smalls, quick);
  benchmark::Shutdown();
  return 0;
}
