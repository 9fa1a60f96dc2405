// CPU benchmark of fevo's fused pass against a pure read of both snapshots, a three-pass Eigen
// formulation and the LibTorch eager formulation, on the conv weights of VGG-16 and ResNet-50.
//
//   fevo_bench_cpu [--quick] [--benchmark_filter=...]      (FEVO_BENCH_QUICK=1 is --quick)
//
// Every contender runs on 2 threads and reports the bytes of both snapshots it must read (GB/s).
// Before timing, fevo, Eigen and LibTorch are checked to agree on D, S and Z (fp32). After the
// runs a ratio table compares them; missed targets are reported, never turned into a failure.
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
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>

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

constexpr int kThreads = 2;
constexpr double kTau = 2e-4;        // the paper's initial learning rate
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

template <class T>
std::vector<fevo::layer_pair<T>> make_pairs(const fb::model_shape& s, const T* prev, const T* next) {
  std::vector<fevo::layer_pair<T>> v;
  for (const fb::layer_shape& l : s.layers)
    v.push_back({l.name, fevo::oihw(prev + l.offset, l.o, l.i, l.h, l.w),
                 fevo::oihw(next + l.offset, l.o, l.i, l.h, l.w)});
  return v;
}

/// One model's two snapshots in three element types, each snapshot one contiguous buffer.
struct model_data {
  fb::model_shape shape;
  buffer<float> prev32, next32;
  buffer<fevo::bfloat16> prev_bf, next_bf;
  buffer<fevo::half> prev_h, next_h;
  std::vector<fevo::layer_pair<float>> pairs32;
  std::vector<fevo::layer_pair<fevo::bfloat16>> pairs_bf;
  std::vector<fevo::layer_pair<fevo::half>> pairs_h;

  model_data(fb::model_shape s, std::uint64_t seed) : shape(std::move(s)) {
    const std::size_t n = shape.total;
    prev32 = make_buffer<float>(n);
    next32 = make_buffer<float>(n);
    prev_bf = make_buffer<fevo::bfloat16>(n);
    next_bf = make_buffer<fevo::bfloat16>(n);
    prev_h = make_buffer<fevo::half>(n);
    next_h = make_buffer<fevo::half>(n);
    const long long n_layers = static_cast<long long>(shape.layers.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(kThreads)
    for (long long k = 0; k < n_layers; ++k) {
      const fb::layer_shape& l = shape.layers[static_cast<std::size_t>(k)];
      rng g(seed * 1000003ull + static_cast<std::uint64_t>(k));
      float* p = prev32.get() + l.offset;
      float* q = next32.get() + l.offset;
      for (std::size_t j = 0; j < l.size(); ++j) {
        p[j] = static_cast<float>(kPrevStd * g.normal());
        q[j] = g.uniform() < kFrozen ? p[j] : static_cast<float>(p[j] + kStepStd * g.normal());
      }
      for (std::size_t j = l.offset; j < l.offset + l.size(); ++j) {
        prev_bf[j] = fevo::bfloat16::from_float(prev32[j]);
        next_bf[j] = fevo::bfloat16::from_float(next32[j]);
        prev_h[j] = fevo::half::from_float(prev32[j]);
        next_h[j] = fevo::half::from_float(next32[j]);
      }
    }
    pairs32 = make_pairs<float>(shape, prev32.get(), next32.get());
    pairs_bf = make_pairs<fevo::bfloat16>(shape, prev_bf.get(), next_bf.get());
    pairs_h = make_pairs<fevo::half>(shape, prev_h.get(), next_h.get());
  }
};

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
std::uint32_t read_sum(const fevo::bfloat16* a, const fevo::bfloat16* b, std::size_t n) {
  return read_sum_of<std::uint32_t>(a, b, n, [](fevo::bfloat16 x) { return std::uint32_t(x.bits); });
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

  eigen_three_pass(const model_data& m, float tau) : m_(m), tau_(tau) {
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
    const float* pa = m_.prev32.get() + l.offset + it.f0 * l.filter_size();
    const float* pb = m_.next32.get() + l.offset + it.f0 * l.filter_size();
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

  const model_data& m_;
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

/// fevo (fp32) against Eigen and LibTorch: exact S and Z counts, D within 1e-5 relative.
bool verify(model_data& m) {
  const auto fv = fevo::compute_layers(fevo::cpu::par.threads(kThreads), m.pairs32, kTau);
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
    auto t = fb::make_torch_eager(m.shape, m.prev32.get(), m.next32.get(), false, kTau);
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
  std::printf("\n  model S = %.4f (layers %.4f..%.4f), Z = %.4f (layers %.4f..%.4f)\n", S_all, S_lo,
              S_hi, Z_all, Z_lo, Z_hi);
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

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const bool agg = r.run_type == Run::RT_Aggregate;
      if (agg ? r.aggregate_name != "median" : r.repetitions > 1) continue;
      rate x;
      if (auto it = r.counters.find("bytes_per_second"); it != r.counters.end())
        x.bytes_per_s = it->second.value;
      if (auto it = r.counters.find("items_per_second"); it != r.counters.end())
        x.items_per_s = it->second.value;
      x.ms_per_iter = r.GetAdjustedRealTime();  // every benchmark reports in milliseconds
      rates[r.run_name.function_name] = x;
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
  benchmark::RegisterBenchmark(name.c_str(), std::forward<F>(fn))
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(cfg.min_time)
      ->Repetitions(cfg.repetitions)
      ->DisplayAggregatesOnly(true);
}

void set_rates(benchmark::State& st, std::size_t weights, std::size_t elem_bytes) {
  const auto it = static_cast<std::int64_t>(st.iterations());
  st.SetBytesProcessed(it * 2 * static_cast<std::int64_t>(weights * elem_bytes));
  st.SetItemsProcessed(it * static_cast<std::int64_t>(weights));
}

template <class T>
void fused(benchmark::State& st, const model_data* m, const std::vector<fevo::layer_pair<T>>* pairs) {
  const auto policy = fevo::cpu::par.threads(kThreads);
  for (auto _ : st) {
    auto r = fevo::compute_layers(policy, *pairs, kTau);
    benchmark::DoNotOptimize(r.data());
    benchmark::ClobberMemory();
  }
  set_rates(st, m->shape.total, sizeof(T));
}

void register_model(const model_data* m, const run_config& cfg) {
  const std::string p = m->shape.name + "/";
  const std::size_t n = m->shape.total;
  add(p + "fused/f32", cfg, [=](benchmark::State& st) { fused(st, m, &m->pairs32); });
  add(p + "fused/bf16", cfg, [=](benchmark::State& st) { fused(st, m, &m->pairs_bf); });
  add(p + "fused/f16", cfg, [=](benchmark::State& st) { fused(st, m, &m->pairs_h); });
  add(p + "read_baseline/f32", cfg, [=](benchmark::State& st) {
    for (auto _ : st) benchmark::DoNotOptimize(read_sum(m->prev32.get(), m->next32.get(), n));
    set_rates(st, n, 4);
  });
  add(p + "read_baseline/bf16", cfg, [=](benchmark::State& st) {
    for (auto _ : st) benchmark::DoNotOptimize(read_sum(m->prev_bf.get(), m->next_bf.get(), n));
    set_rates(st, n, 2);
  });
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
    auto t = fb::make_torch_eager(m->shape, m->prev32.get(), m->next32.get(), false, kTau);
    std::vector<fb::torch_layer_result> out;
    for (auto _ : st) {
      t->run(out);
      benchmark::DoNotOptimize(out.data());
    }
    set_rates(st, n, 4);
  });
  add(p + "libtorch_eager/bf16", cfg, [=](benchmark::State& st) {
    auto t = fb::make_torch_eager(m->shape, m->prev_bf.get(), m->next_bf.get(), true, kTau);
    std::vector<fb::torch_layer_result> out;
    for (auto _ : st) {
      t->run(out);
      benchmark::DoNotOptimize(out.data());
    }
    set_rates(st, n, 2);
  });
#endif
}

// ---- tables ------------------------------------------------------------------------------------

void print_rates(const collecting_reporter& rep) {
  std::printf("\n%-34s %10s %12s %12s\n", "benchmark (median)", "GB/s(1e9)", "Gweights/s", "ms/iter");
  for (const auto& [name, r] : rep.rates)
    std::printf("%-34s %10.2f %12.3f %12.3f\n", name.c_str(), r.bytes_per_s / 1e9,
                r.items_per_s / 1e9, r.ms_per_iter);
}

void print_ratios(const collecting_reporter& rep, const std::vector<std::unique_ptr<model_data>>& models,
                  bool quick) {
  auto get = [&](const std::string& n, bool items) -> double {
    auto it = rep.rates.find(n);
    if (it == rep.rates.end()) return -1;
    return items ? it->second.items_per_s : it->second.bytes_per_s;
  };
  std::printf("\nRatio table (2 threads, medians; rates are bytes of both snapshots read per second "
              "unless marked 'element rate')%s\n",
              quick ? "\n  ** --quick: tiny layers and run times, the ratios mean nothing **" : "");
  std::printf("%-9s %-48s %8s %8s  %s\n", "model", "ratio", "value", "target", "status");
  struct row {
    const char* label;
    std::string num, den;
    bool items;
    double target;  // <= 0: informational
    const char* missing;
  };
  const char* no_torch = FEVO_BENCH_HAVE_TORCH ? "n/a (not run)" : "n/a (built without LibTorch)";
  const char* no_eigen = FEVO_BENCH_HAVE_EIGEN ? "n/a (not run)" : "n/a (built without Eigen)";
  for (const auto& mp : models) {
    const std::string p = mp->shape.name + "/";
    const row rows[] = {
        {"fused f32 / read_baseline f32", p + "fused/f32", p + "read_baseline/f32", false, 0.9,
         "n/a (not run)"},
        {"fused f32 / libtorch_eager f32", p + "fused/f32", p + "libtorch_eager/f32", false, 5.0,
         no_torch},
        {"fused bf16 / fused f32 (element rate)", p + "fused/bf16", p + "fused/f32", true, 1.7,
         "n/a (not run)"},
        {"fused f32 / eigen_three_pass f32", p + "fused/f32", p + "eigen_three_pass/f32", false, 0,
         no_eigen},
        {"fused bf16 / read_baseline bf16", p + "fused/bf16", p + "read_baseline/bf16", false, 0,
         "n/a (not run)"},
        {"fused f16 / fused f32 (element rate)", p + "fused/f16", p + "fused/f32", true, 0,
         "n/a (not run)"},
        {"fused bf16 / libtorch_eager bf16", p + "fused/bf16", p + "libtorch_eager/bf16", false, 0,
         no_torch},
    };
    for (const row& r : rows) {
      const double a = get(r.num, r.items), b = get(r.den, r.items);
      if (a <= 0 || b <= 0) {
        std::printf("%-9s %-48s %8s %8s  %s\n", mp->shape.name.c_str(), r.label, "-", "", r.missing);
        continue;
      }
      const double v = a / b;
      char target[16] = "";
      if (r.target > 0) std::snprintf(target, sizeof target, ">= %.2f", r.target);
      std::printf("%-9s %-48s %8.3f %8s  %s\n", mp->shape.name.c_str(), r.label, v, target,
                  r.target > 0 ? (v >= r.target ? "PASS" : "MISS") : "info");
    }
  }
  std::printf("(targets are goals, not assertions: a MISS never changes the exit status)\n");
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

}  // namespace

int main(int argc, char** argv) {
  // --quick is ours; the rest goes to Google Benchmark. Repetitions of different benchmarks are
  // interleaved in random order unless told otherwise, so that drift in the machine's memory
  // bandwidth spreads over all contenders instead of biasing the ratios.
  bool quick = env_quick(), interleave_given = false;
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
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
  const run_config cfg = quick ? run_config{0.01, 1} : run_config{0.3, 5};
  std::printf("fevo CPU benchmark%s: %d threads, tau = %g, prev ~ N(0, %g), %.0f%% of weights "
              "frozen, the rest moved by N(0, %g)\n",
              quick ? " (--quick)" : "", kThreads, kTau, kPrevStd, kFrozen * 100, kStepStd);
  std::printf("baselines: read_baseline (OpenMP simd sum), %s, %s\n",
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

  std::vector<std::unique_ptr<model_data>> models;
  std::uint64_t seed = 1;
  for (fb::model_shape s : {fb::vgg16(shrink), fb::resnet50(shrink)}) {
    std::size_t w = 0;
    for (const auto& l : s.layers) w += l.size();
    std::printf("model %-8s: %zu conv layers, %zu weights (%.2fM)%s\n", s.name.c_str(),
                s.layers.size(), w, double(w) / 1e6, quick ? " [shrunk for --quick]" : "");
    models.push_back(std::make_unique<model_data>(std::move(s), seed++));
  }
  for (auto& m : models)
    if (!verify(*m)) {
      std::fprintf(stderr, "fevo_bench_cpu: aborting: the implementations do not agree (see above)\n");
      return 1;
    }
  std::fflush(stdout);

  for (const auto& m : models) register_model(m.get(), cfg);
  collecting_reporter rep;
  const cpu_sample before = sample_cpu();
  benchmark::RunSpecifiedBenchmarks(&rep);
  const cpu_sample after = sample_cpu();
  print_rates(rep);
  print_contention(before, after);
  print_ratios(rep, models, quick);
  benchmark::Shutdown();
  return 0;
}
