// fevo's GPU benchmark (Google Benchmark, manual time from CUDA events), on the conv weights of
// VGG-16 and ResNet-50 in f32 and bf16, all in one run on one GPU:
//   fused              fevo::compute_layers(fevo::cuda::par, whole model): D, S, Z of every layer
//                      (steady state: the pointers were checked by an earlier call)
//   fused_first        the same, with the pointer checks of a first call in every iteration
//   fused_kernels      the same call, timed by events around its two kernels only (the device's
//                      part; the difference to `fused` is the host's part of a call)
//   compare_kernels    likewise for compare_and_advance_layers
//   compare_advance    fevo::cuda::compare_and_advance_layers on the whole model (reads prev and
//                      next, writes prev), the whole call
//   kernels_<V>, compare_<V>, fused_<V>
//                      fused_kernels, compare_kernels (f32) and fused (f32) with another tuning V,
//                      side by side with the default: shared / unshared (the default kernel with
//                      small filters always / never sharing a warp), and each tuning of
//                      fevo::cuda::experimental (lean, work_queue, staged, global_words,
//                      overlapped_merge, deep)
//   cub_reduce         cub::DeviceReduce::Sum over the same 2N elements: the bandwidth reference
//   memcpy_d2d         cudaMemcpyAsync device-to-device of one snapshot (N read + N written)
//   thrust             fevo::thrust::par (CUDA device system) on the whole model
// Bytes/s count the bytes each one must move. After the run a table prints GB/s and the ratios
// against the targets, and each variant against the default; bench/torch_gpu.py measures PyTorch
// eager on the same shapes. `--quick` uses shrunken models (for a smoke run); `--skip=REGEX` leaves
// out the benchmarks whose names REGEX matches anywhere (ECMAScript syntax; bench/gpu_check.sh
// leaves out a variant whose kernel did not finish in time, and runs the rest again).
#include <benchmark/benchmark.h>

#include <cub/device/device_reduce.cuh>
#include <cuda_bf16.h>

#include <fevo/cuda.cuh>
#include <fevo/thrust.hpp>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "models.hpp"

namespace {

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "fevo_bench_cuda: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

long long g_shrink = 1;
/// --skip=REGEX: names of benchmarks not to register (none when unset).
std::unique_ptr<std::regex> g_skip;
constexpr double tau = 2e-4;

/// A model's two snapshots in one device buffer: [prev | next], each layer contiguous OIHW.
template <class T>
struct device_model {
  fevo_bench::model_shape shape;
  T* buf = nullptr;
  std::size_t n = 0;  // weights per snapshot
  std::vector<fevo::layer_pair<T, fevo::device_space>> layers;

  explicit device_model(const fevo_bench::model_shape& m) : shape(m), n(m.total) {
    std::vector<T> host(2 * n);
    std::mt19937 g(7);
    std::normal_distribution<float> w(0.f, 0.05f), step(0.f, 4e-4f);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (std::size_t k = 0; k < n; ++k) {
      const float a = w(g), b = u(g) < 0.3f ? a : a + step(g);
      if constexpr (std::is_same_v<T, float>) {
        host[k] = a;
        host[n + k] = b;
      } else {
        host[k] = T::from_float(a);
        host[n + k] = T::from_float(b);
      }
    }
    cuda_ok(cudaMalloc(&buf, 2 * n * sizeof(T)), "cudaMalloc");
    cuda_ok(cudaMemcpy(buf, host.data(), 2 * n * sizeof(T), cudaMemcpyHostToDevice), "upload");
    for (const auto& l : m.layers)
      layers.push_back({l.name, fevo::oihw<fevo::device_space>(static_cast<const T*>(buf + l.offset), l.o, l.i, l.h, l.w),
                        fevo::oihw<fevo::device_space>(static_cast<const T*>(buf + n + l.offset), l.o, l.i, l.h, l.w)});
  }
  ~device_model() { cudaFree(buf); }
};

template <class T>
device_model<T>& model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<device_model<T>>> cache;
  auto& p = cache[name];
  if (!p) p = std::make_unique<device_model<T>>(name == "vgg16" ? fevo_bench::vgg16(g_shrink)
                                                                 : fevo_bench::resnet50(g_shrink));
  return *p;
}

/// Times f() on the default stream with CUDA events.
template <class F>
void timed(benchmark::State& st, F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();  // warm-up: pointer checks, module load
  for (auto _ : st) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    st.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

template <class T, class Tuning>
void BM_fused_with(benchmark::State& st, std::string name, fevo::cuda::policy<Tuning> pol, bool first_call) {
  auto& m = model<T>(name);
  std::size_t launches = 0;
  timed(st, [&] {
    if (first_call) fevo::cuda::detail::checked_pointers().clear();
    const std::size_t before = fevo::cuda::stats().launches;
    auto r = fevo::compute_layers(pol, m.layers, tau);
    benchmark::DoNotOptimize(r);
    launches = fevo::cuda::stats().launches - before;
  });
  st.counters["launches"] = double(launches);
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

/// The whole model as compare-and-advance pairs on a device copy of its prev snapshot (advanced
/// by each call, so the model's own data stays the same between runs); freed with the object.
template <class T>
struct advance_model {
  T* kept = nullptr;
  std::vector<fevo::cuda::advance_pair<T>> pairs;
  explicit advance_model(const device_model<T>& m) {
    cuda_ok(cudaMalloc(&kept, m.n * sizeof(T)), "cudaMalloc");
    cuda_ok(cudaMemcpy(kept, m.buf, m.n * sizeof(T), cudaMemcpyDeviceToDevice), "copy");
    for (const auto& l : m.shape.layers)
      pairs.push_back({l.name, fevo::oihw<fevo::device_space>(kept + l.offset, l.o, l.i, l.h, l.w),
                       fevo::oihw<fevo::device_space>(static_cast<const T*>(m.buf + m.n + l.offset), l.o, l.i, l.h, l.w)});
  }
  advance_model(const advance_model&) = delete;
  advance_model& operator=(const advance_model&) = delete;
  ~advance_model() { cudaFree(kept); }
};

/// Times only the kernels of each call (fevo::cuda::stats().time_kernels).
template <class F>
void kernels_only(benchmark::State& st, F&& f) {
  fevo::cuda::thread_stats& stats = fevo::cuda::stats();
  stats.time_kernels = true;
  f();  // warm-up
  for (auto _ : st) {
    f();
    st.SetIterationTime(stats.kernel_ms / 1e3);
  }
  stats.time_kernels = false;
}

template <class T, class Tuning>
void BM_fused_kernels_with(benchmark::State& st, std::string name, fevo::cuda::policy<Tuning> pol) {
  auto& m = model<T>(name);
  kernels_only(st, [&] { benchmark::DoNotOptimize(fevo::compute_layers(pol, m.layers, tau)); });
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

template <class T, class Tuning>
void BM_compare_kernels_with(benchmark::State& st, std::string name, fevo::cuda::policy<Tuning> pol) {
  auto& m = model<T>(name);
  const advance_model<T> a(m);
  const auto& pairs = a.pairs;
  kernels_only(st, [&] { benchmark::DoNotOptimize(fevo::cuda::compare_and_advance_layers(pol, pairs, tau)); });
  st.SetBytesProcessed(st.iterations() * int64_t(3 * m.n * sizeof(T)));
}

template <class T>
void BM_thrust(benchmark::State& st, std::string name) {
  auto& m = model<T>(name);
  timed(st, [&] { benchmark::DoNotOptimize(fevo::compute_layers(fevo::thrust::par, m.layers, tau)); });
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

template <class T>
void BM_compare_advance(benchmark::State& st, std::string name) {
  auto& m = model<T>(name);
  const advance_model<T> a(m);
  const auto& pairs = a.pairs;
  std::size_t launches = 0;
  timed(st, [&] {
    const std::size_t before = fevo::cuda::stats().launches;
    benchmark::DoNotOptimize(fevo::cuda::compare_and_advance_layers(fevo::cuda::par, pairs, tau));
    launches = fevo::cuda::stats().launches - before;
  });
  st.counters["launches"] = double(launches);
  st.SetBytesProcessed(st.iterations() * int64_t(3 * m.n * sizeof(T)));
}

template <class T>
struct cub_type {
  using type = T;
};
template <>
struct cub_type<fevo::bfloat16> {
  using type = __nv_bfloat16;
};

template <class T>
void BM_cub_reduce(benchmark::State& st, std::string name) {
  auto& m = model<T>(name);
  using U = typename cub_type<T>::type;
  const U* in = reinterpret_cast<const U*>(m.buf);
  U* out = nullptr;
  cuda_ok(cudaMalloc(&out, sizeof(U)), "cudaMalloc");
  std::size_t temp_bytes = 0;
  cub::DeviceReduce::Sum(nullptr, temp_bytes, in, out, int(2 * m.n));
  void* temp = nullptr;
  cuda_ok(cudaMalloc(&temp, temp_bytes), "cudaMalloc");
  timed(st, [&] { cub::DeviceReduce::Sum(temp, temp_bytes, in, out, int(2 * m.n)); });
  cudaFree(temp);
  cudaFree(out);
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

template <class T>
void BM_memcpy_d2d(benchmark::State& st, std::string name) {
  auto& m = model<T>(name);
  T* dst = nullptr;
  cuda_ok(cudaMalloc(&dst, m.n * sizeof(T)), "cudaMalloc");
  timed(st, [&] { cudaMemcpyAsync(dst, m.buf + m.n, m.n * sizeof(T), cudaMemcpyDeviceToDevice); });
  cudaFree(dst);
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

/// Collects bytes/s per benchmark name for the ratio table.
class collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> rate;
  std::map<std::string, double> launches;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    // Each line out as soon as it is known: if a later kernel never finishes, bench/gpu_check.sh
    // stops the process and reads from these lines which benchmark it was in.
    GetOutputStream().flush();
    std::fflush(stdout);
    for (const auto& r : runs) {
      // "BM_fused/vgg16/f32/manual_time" -> "BM_fused/vgg16/f32"
      std::string key = r.benchmark_name();
      const std::string suffix = "/manual_time";
      if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
        key.resize(key.size() - suffix.size());
      auto it = r.counters.find("bytes_per_second");
      if (it != r.counters.end()) rate[key] = it->second;
      auto l = r.counters.find("launches");
      if (l != r.counters.end()) launches[key] = l->second;
    }
  }
};

/// The default kernel with small filters always / never sharing a warp.
struct shared_tuning : fevo::cuda::default_tuning {
  static constexpr double share_from = 0;
};
struct unshared_tuning : fevo::cuda::default_tuning {
  static constexpr double share_from = 2;
};

/// The variants timed beside the default (kernels_<name>, compare_<name>, fused_<name>).
const char* const variant_names[] = {"shared", "unshared", "lean", "work_queue", "staged",
                                     "global_words", "overlapped_merge", "deep"};

/// Registers `name` for model `m` unless --skip says otherwise.
template <class F>
void reg(const std::string& name, const std::string& m, const char* tag, F&& fn) {
  const std::string full = name + "/" + m + "/" + tag;
  if (g_skip && std::regex_search(full, *g_skip)) return;
  benchmark::RegisterBenchmark(full.c_str(), std::forward<F>(fn))->UseManualTime()->Unit(benchmark::kMicrosecond);
}

/// kernels_<v> (f32, bf16), compare_<v> and fused_<v> (f32) with tuning Tuning.
template <class Tuning>
void register_variant(const std::string& v, const std::string& m) {
  const fevo::cuda::policy<Tuning> pol{};
  reg("BM_kernels_" + v, m, "f32", [m, pol](benchmark::State& st) { BM_fused_kernels_with<float>(st, m, pol); });
  reg("BM_kernels_" + v, m, "bf16",
      [m, pol](benchmark::State& st) { BM_fused_kernels_with<fevo::bfloat16>(st, m, pol); });
  reg("BM_compare_" + v, m, "f32", [m, pol](benchmark::State& st) { BM_compare_kernels_with<float>(st, m, pol); });
  reg("BM_fused_" + v, m, "f32", [m, pol](benchmark::State& st) { BM_fused_with<float>(st, m, pol, false); });
}

void register_all() {
  using fevo::cuda::par;
  namespace ex = fevo::cuda::experimental;
  for (const char* model : {"vgg16", "resnet50"}) {
    const std::string m = model;
    reg("BM_fused", m, "f32", [m](benchmark::State& st) { BM_fused_with<float>(st, m, par, false); });
    reg("BM_fused", m, "bf16", [m](benchmark::State& st) { BM_fused_with<fevo::bfloat16>(st, m, par, false); });
    reg("BM_fused_first", m, "f32", [m](benchmark::State& st) { BM_fused_with<float>(st, m, par, true); });
    reg("BM_fused_kernels", m, "f32", [m](benchmark::State& st) { BM_fused_kernels_with<float>(st, m, par); });
    reg("BM_fused_kernels", m, "bf16", [m](benchmark::State& st) { BM_fused_kernels_with<fevo::bfloat16>(st, m, par); });
    reg("BM_compare_kernels", m, "f32", [m](benchmark::State& st) { BM_compare_kernels_with<float>(st, m, par); });
    register_variant<shared_tuning>("shared", m);
    register_variant<unshared_tuning>("unshared", m);
    register_variant<ex::lean>("lean", m);
    register_variant<ex::work_queue>("work_queue", m);
    register_variant<ex::staged>("staged", m);
    register_variant<ex::global_words>("global_words", m);
    register_variant<ex::overlapped_merge>("overlapped_merge", m);
    register_variant<ex::deep>("deep", m);
    reg("BM_compare_advance", m, "f32", [m](benchmark::State& st) { BM_compare_advance<float>(st, m); });
    reg("BM_compare_advance", m, "bf16", [m](benchmark::State& st) { BM_compare_advance<fevo::bfloat16>(st, m); });
    reg("BM_cub_reduce", m, "f32", [m](benchmark::State& st) { BM_cub_reduce<float>(st, m); });
    reg("BM_cub_reduce", m, "bf16", [m](benchmark::State& st) { BM_cub_reduce<fevo::bfloat16>(st, m); });
    reg("BM_memcpy_d2d", m, "f32", [m](benchmark::State& st) { BM_memcpy_d2d<float>(st, m); });
    reg("BM_thrust", m, "f32", [m](benchmark::State& st) { BM_thrust<float>(st, m); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int k = 0; k < argc; ++k) {
    if (std::strcmp(argv[k], "--quick") == 0) {
      g_shrink = 16;
    } else if (std::strncmp(argv[k], "--skip=", 7) == 0) {
      try {
        g_skip = std::make_unique<std::regex>(argv[k] + 7);
      } catch (const std::regex_error& e) {
        std::fprintf(stderr, "fevo_bench_cuda: --skip: not a regular expression: %s (%s)\n", argv[k] + 7, e.what());
        return 2;
      }
    } else {
      args.push_back(argv[k]);
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("fevo_bench_cuda: no usable CUDA device; nothing measured\n");
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  register_all();
  collector rep;
  benchmark::RunSpecifiedBenchmarks(&rep);

  auto get = [&](const std::string& k) { return rep.rate.count(k) ? rep.rate[k] : 0.0; };
  std::printf("\n%-10s %-5s %10s %10s %10s %10s %10s | %-22s %-22s\n", "model", "type", "fused",
              "cub", "memcpy", "cmp+adv", "thrust", "fused/cub (>=0.9)", "cmp+adv/memcpy (>=0.9)");
  // The device's part alone (events around the kernels of a call): the fused kernel against the
  // same bytes through cub::DeviceReduce::Sum and a device-to-device copy.
  auto kernel_rows = [&] {
    std::printf("\n%-10s %-5s %10s %10s | %-22s %-22s\n", "model", "type", "kernels", "cmp kern",
                "kernels/cub (>=0.9)", "cmp kern/memcpy (>=0.9)");
    for (const char* model : {"vgg16", "resnet50"}) {
      for (const char* ty : {"f32", "bf16"}) {
        const std::string m = model, t = ty;
        const double k = get("BM_fused_kernels/" + m + "/" + t), cub = get("BM_cub_reduce/" + m + "/" + t);
        const double ck = t == "f32" ? get("BM_compare_kernels/" + m + "/f32") : 0;
        const double cpy = get("BM_memcpy_d2d/" + m + "/f32");
        const double r1 = cub > 0 ? k / cub : 0, r2 = cpy > 0 ? ck / cpy : 0;
        std::printf("%-10s %-5s %10.1f %10.1f | %6.2f %-15s %6.2f %s\n", model, ty, k / 1e9, ck / 1e9, r1,
                    r1 >= 0.9 ? "PASS" : "MISS", r2, t == "f32" ? (r2 >= 0.9 ? "PASS" : "MISS") : "");
      }
    }
  };
  for (const char* model : {"vgg16", "resnet50"}) {
    for (const char* ty : {"f32", "bf16"}) {
      const std::string m = model, t = ty;
      const double fused = get("BM_fused/" + m + "/" + t), cub = get("BM_cub_reduce/" + m + "/" + t);
      const double cpy = get("BM_memcpy_d2d/" + m + "/f32"), ca = get("BM_compare_advance/" + m + "/f32");
      const double thr = get("BM_thrust/" + m + "/f32");
      const double r1 = cub > 0 ? fused / cub : 0, r2 = (t == "f32" && cpy > 0) ? ca / cpy : 0;
      std::printf("%-10s %-5s %10.1f %10.1f %10.1f %10.1f %10.1f | %6.2f %-15s %6.2f %s\n", model, ty,
                  fused / 1e9, cub / 1e9, t == "f32" ? cpy / 1e9 : 0.0, t == "f32" ? ca / 1e9 : 0.0,
                  t == "f32" ? thr / 1e9 : 0.0, r1, r1 >= 0.9 ? "PASS" : "MISS",
                  r2, t == "f32" ? (r2 >= 0.9 ? "PASS" : "MISS") : "");
      const double l = rep.launches["BM_fused/" + m + "/" + t];
      const double la = rep.launches["BM_compare_advance/" + m + "/" + t];
      std::printf("%-10s %-5s launches per model call: fused %.0f, compare-and-advance %.0f (target <= 2) %s\n",
                  model, ty, l, la, l <= 2 && la <= 2 ? "PASS" : "MISS");
    }
  }
  kernel_rows();
  // Each variant beside the default: GB/s and the ratio to the default kernel's (kernels_,
  // compare_: the kernels alone; fused_: the whole call), the fastest of them against the targets.
  std::printf("\nvariants beside the default (GB/s, ratio to the default; > 1: faster):\n");
  std::printf("%-10s %-5s %-18s %9s %6s %9s %6s %9s %6s\n", "model", "type", "variant", "kernels", "ratio",
              "compare", "ratio", "call", "ratio");
  for (const char* model : {"vgg16", "resnet50"}) {
    for (const char* ty : {"f32", "bf16"}) {
      const std::string m = model, t = ty;
      const double k0 = get("BM_fused_kernels/" + m + "/" + t), c0 = get("BM_compare_kernels/" + m + "/" + t),
                   f0 = get("BM_fused/" + m + "/" + t);
      const auto ratio = [](double g, double ref) { return ref > 0 && g > 0 ? g / ref : 0.0; };
      std::string best = "default";
      double top = k0;
      for (const char* v : variant_names) {
        const std::string n = v;
        const double k = get("BM_kernels_" + n + "/" + m + "/" + t), c = get("BM_compare_" + n + "/" + m + "/" + t),
                     f = get("BM_fused_" + n + "/" + m + "/" + t);
        std::printf("%-10s %-5s %-18s %9.1f %6.2f %9.1f %6.2f %9.1f %6.2f\n", model, ty, v, k / 1e9, ratio(k, k0),
                    c / 1e9, ratio(c, c0), f / 1e9, ratio(f, f0));
        if (k > top) {
          top = k;
          best = n;
        }
      }
      const double cub = get("BM_cub_reduce/" + m + "/" + t);
      std::printf("%-10s %-5s fastest kernels: %s, %.1f GB/s, %.2f of cub (target 0.9) %s\n", model, ty,
                  best.c_str(), top / 1e9, ratio(top, cub), ratio(top, cub) >= 0.9 ? "PASS" : "MISS");
    }
  }
  std::printf("(GB/s; bytes each must move: fused/cub/thrust 2N, memcpy 2N, compare-and-advance 3N)\n");
  return 0;
}
