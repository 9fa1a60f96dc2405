// fevo's GPU benchmark (Google Benchmark, manual time from CUDA events), on the conv weights of
// VGG-16 and ResNet-50 in f32 and bf16, all in one run on one GPU:
//   fused              fevo::compute_layers(fevo::cuda::par, whole model): D, S, Z of every layer
//                      (steady state: the pointers were checked by an earlier call)
//   fused_first        the same, with the pointer checks of a first call in every iteration
//   fused_kernels      the same call, timed by events around its two kernels only (the device's
//                      part; the difference to `fused` is the host's part of a call)
//   compare_kernels    likewise for compare_advance
//   fused_1launch, kernels_1launch, compare_1launch
//                      fused, fused_kernels and compare_kernels with par.single_launch(): each
//                      layer's totals merged in the fused launch instead of a second one
//   fused_shared, kernels_shared, compare_shared
//                      fused, fused_kernels and compare_kernels with par.warp_sharing(): small
//                      packed filters two or four to a warp (by default: only where they hold an
//                      eighth of the weights, ResNet-50 yes, VGG-16 no)
//   kernels_unshared, compare_unshared
//                      fused_kernels and compare_kernels with par.warp_sharing(false)
//   fused_lean, kernels_lean, compare_lean
//                      fused, fused_kernels and compare_kernels with par.lean_kernel(): the kernel
//                      with block mode and the in-launch merge compiled out, 3 blocks per SM
//   fused_queue, kernels_queue, compare_queue
//                      the same with par.work_queue(): the lean kernel, whose warps take their
//                      filters from a queue, largest first, instead of a grid-stride share
//   fused_staged, kernels_staged, compare_staged
//                      the same with par.staged_copies(): the work queue's kernel with its loads
//                      staged through shared memory by asynchronous copies (cp.async), several
//                      rounds ahead
//   fused_tuned, kernels_tuned, compare_tuned
//                      the same with par.autotune(): each kernel that can serve the model timed in
//                      the first calls (the warm-up), the fastest launched from then on; the
//                      summary names the kernel it chose
//   kernels_serial, compare_serial
//                      fused_kernels and compare_kernels with the merge launched plainly after the
//                      fused kernel, not as a programmatic dependent launch (sm_90 and newer:
//                      elsewhere the same as fused_kernels)
//   fused_warp, fused_block1k, fused_block16k
//                      the same with other warp/block switches (par.block_per_filter_from):
//                      a warp per filter always, a block from 1024 and from 16384 weights
//   compare_advance    fevo::cuda::compare_and_advance_layers on the whole model (reads prev and
//                      next, writes prev)
//   cub_reduce         cub::DeviceReduce::Sum over the same 2N elements: the bandwidth reference
//   memcpy_d2d         cudaMemcpyAsync device-to-device of one snapshot (N read + N written)
//   thrust             fevo::thrust::par (CUDA device system) on the whole model
// Bytes/s count the bytes each one must move. After the run a table prints GB/s and the ratios
// against the targets; bench/torch_gpu.py measures PyTorch eager on the same shapes.
// `--quick` uses shrunken models (for a smoke run); `--skip=REGEX` leaves out the benchmarks whose
// names REGEX matches anywhere (ECMAScript syntax; bench/gpu_check.sh leaves out a variant whose
// kernel did not finish in time, and runs the rest again).
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

/// Calls f() once, or, under par.autotune(), until the kernel is chosen (the tuning calls).
template <class F>
void warm_up(F&& f) {
  for (int k = 0; k < 64; ++k) {
    f();
    if (!fevo::cuda::last_pass().tuning) return;
  }
}

/// Under par.autotune(), the kernel the warm-up chose, as a counter (kernel_kind's value).
void count_kernel(benchmark::State& st, const fevo::cuda::policy& pol) {
  if (pol.tune) st.counters["kernel"] = double(int(fevo::cuda::last_pass().kernel));
}

/// Times f() on the default stream with CUDA events.
template <class F>
void timed(benchmark::State& st, F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  warm_up(f);
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

template <class T>
void BM_fused_with(benchmark::State& st, std::string name, fevo::cuda::policy pol, bool first_call) {
  auto& m = model<T>(name);
  std::size_t launches = 0;
  timed(st, [&] {
    if (first_call) fevo::cuda::detail::forget_checked_pointers();
    const std::size_t before = fevo::cuda::detail::launch_count();
    auto r = fevo::compute_layers(pol, m.layers, tau);
    benchmark::DoNotOptimize(r);
    launches = fevo::cuda::detail::launch_count() - before;
  });
  st.counters["launches"] = double(launches);
  count_kernel(st, pol);
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

/// Times only the kernels of each call (fevo::cuda::detail::kernel_timer); `serial`: the merge
/// launched plainly after the fused kernel (fevo::cuda::detail::dependent_launches).
template <class T, class F>
void kernels_only(benchmark::State& st, bool serial, F&& f) {
  auto& timer = fevo::cuda::detail::kernel_timer::for_this_thread();
  timer.on = true;
  fevo::cuda::detail::dependent_launches() = !serial;
  warm_up(f);
  for (auto _ : st) {
    f();
    st.SetIterationTime(timer.last_ms / 1e3);
  }
  fevo::cuda::detail::dependent_launches() = true;
  timer.on = false;
}

template <class T>
void BM_fused_kernels_with(benchmark::State& st, std::string name, fevo::cuda::policy pol, bool serial) {
  auto& m = model<T>(name);
  kernels_only<T>(st, serial, [&] { benchmark::DoNotOptimize(fevo::compute_layers(pol, m.layers, tau)); });
  count_kernel(st, pol);
  st.SetBytesProcessed(st.iterations() * int64_t(2 * m.n * sizeof(T)));
}

template <class T>
void BM_compare_kernels_with(benchmark::State& st, std::string name, fevo::cuda::policy pol, bool serial) {
  auto& m = model<T>(name);
  const advance_model<T> a(m);
  const auto& pairs = a.pairs;
  kernels_only<T>(st, serial,
                  [&] { benchmark::DoNotOptimize(fevo::cuda::compare_and_advance_layers(pol, pairs, tau)); });
  count_kernel(st, pol);
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
    const std::size_t before = fevo::cuda::detail::launch_count();
    benchmark::DoNotOptimize(fevo::cuda::compare_and_advance_layers(fevo::cuda::par, pairs, tau));
    launches = fevo::cuda::detail::launch_count() - before;
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
  std::map<std::string, int> kernel;  ///< under par.autotune(): the kernel_kind chosen
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
      auto c = r.counters.find("kernel");
      if (c != r.counters.end()) kernel[key] = int(c->second);
    }
  }
};

/// A policy timed under a benchmark name (the variants at the top of this file); `serial`: the
/// merge launched plainly (kernels_only).
struct variant {
  const char* name;
  fevo::cuda::policy pol;
  bool serial = false;
};

void register_all() {
  using fevo::cuda::par;
  const variant calls[] = {{"BM_fused_1launch", par.single_launch()},
                           {"BM_fused_shared", par.warp_sharing()},
                           {"BM_fused_lean", par.lean_kernel()},
                           {"BM_fused_queue", par.work_queue()},
                           {"BM_fused_staged", par.staged_copies()},
                           {"BM_fused_tuned", par.autotune()},
                           {"BM_fused_warp", par.block_per_filter_from(SIZE_MAX)},
                           {"BM_fused_block1k", par.block_per_filter_from(1024)},
                           {"BM_fused_block16k", par.block_per_filter_from(16384)}};
  const variant kernels[] = {{"BM_fused_kernels", par},
                             {"BM_kernels_1launch", par.single_launch()},
                             {"BM_kernels_shared", par.warp_sharing()},
                             {"BM_kernels_unshared", par.warp_sharing(false)},
                             {"BM_kernels_lean", par.lean_kernel()},
                             {"BM_kernels_queue", par.work_queue()},
                             {"BM_kernels_staged", par.staged_copies()},
                             {"BM_kernels_tuned", par.autotune()},
                             {"BM_kernels_serial", par, true}};
  const variant compares[] = {{"BM_compare_kernels", par},
                              {"BM_compare_1launch", par.single_launch()},
                              {"BM_compare_shared", par.warp_sharing()},
                              {"BM_compare_unshared", par.warp_sharing(false)},
                              {"BM_compare_lean", par.lean_kernel()},
                              {"BM_compare_queue", par.work_queue()},
                              {"BM_compare_staged", par.staged_copies()},
                              {"BM_compare_tuned", par.autotune()},
                              {"BM_compare_serial", par, true}};
  for (const char* model : {"vgg16", "resnet50"}) {
    const std::string m = model;
    const auto reg = [&](const std::string& name, const char* tag, auto&& fn) {
      const std::string full = name + "/" + m + "/" + tag;
      if (g_skip && std::regex_search(full, *g_skip)) return;
      benchmark::RegisterBenchmark(full.c_str(), fn)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    };
    reg("BM_fused", "f32", [m](benchmark::State& st) { BM_fused_with<float>(st, m, par, false); });
    reg("BM_fused", "bf16", [m](benchmark::State& st) { BM_fused_with<fevo::bfloat16>(st, m, par, false); });
    reg("BM_fused_first", "f32", [m](benchmark::State& st) { BM_fused_with<float>(st, m, par, true); });
    for (const variant& v : kernels) {
      const fevo::cuda::policy pol = v.pol;
      const bool serial = v.serial;
      reg(v.name, "f32", [m, pol, serial](benchmark::State& st) { BM_fused_kernels_with<float>(st, m, pol, serial); });
      reg(v.name, "bf16",
          [m, pol, serial](benchmark::State& st) { BM_fused_kernels_with<fevo::bfloat16>(st, m, pol, serial); });
    }
    for (const variant& v : compares) {
      const fevo::cuda::policy pol = v.pol;
      const bool serial = v.serial;
      reg(v.name, "f32",
          [m, pol, serial](benchmark::State& st) { BM_compare_kernels_with<float>(st, m, pol, serial); });
    }
    for (const variant& v : calls) {
      const fevo::cuda::policy pol = v.pol;
      reg(v.name, "f32", [m, pol](benchmark::State& st) { BM_fused_with<float>(st, m, pol, false); });
    }
    reg("BM_compare_advance", "f32", [m](benchmark::State& st) { BM_compare_advance<float>(st, m); });
    reg("BM_compare_advance", "bf16", [m](benchmark::State& st) { BM_compare_advance<fevo::bfloat16>(st, m); });
    reg("BM_cub_reduce", "f32", [m](benchmark::State& st) { BM_cub_reduce<float>(st, m); });
    reg("BM_cub_reduce", "bf16", [m](benchmark::State& st) { BM_cub_reduce<fevo::bfloat16>(st, m); });
    reg("BM_memcpy_d2d", "f32", [m](benchmark::State& st) { BM_memcpy_d2d<float>(st, m); });
    reg("BM_thrust", "f32", [m](benchmark::State& st) { BM_thrust<float>(st, m); });
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
  // " (tuned: KERNEL)" after a par.autotune() row: the kernel its warm-up chose.
  auto chosen = [&](const std::string& k) {
    const auto it = rep.kernel.find(k);
    return it == rep.kernel.end()
               ? std::string()
               : std::string(" (tuned: ") + fevo::cuda::kernel_name(fevo::cuda::kernel_kind(it->second)) + ")";
  };
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
  std::printf("\nf32 variants (GB/s, ratio to cub; compare_*: ratio to memcpy):\n");
  for (const char* model : {"vgg16", "resnet50"}) {
    const std::string m = model;
    const double cub = get("BM_cub_reduce/" + m + "/f32");
    for (const char* v : {"fused", "fused_first", "fused_kernels", "fused_warp", "fused_block1k",
                          "fused_block16k", "fused_1launch", "kernels_1launch", "fused_shared",
                          "kernels_shared", "kernels_unshared", "fused_lean", "kernels_lean", "fused_queue",
                          "kernels_queue", "fused_staged", "kernels_staged", "fused_tuned", "kernels_tuned",
                          "kernels_serial", "compare_kernels", "compare_1launch", "compare_shared", "compare_unshared",
                          "compare_lean", "compare_queue", "compare_staged", "compare_tuned", "compare_serial"}) {
      const std::string key = std::string("BM_") + v + "/" + m + "/f32";
      const double g = get(key);
      const bool copy_ref = std::string(v).rfind("compare", 0) == 0;
      const double ref = copy_ref ? get("BM_memcpy_d2d/" + m + "/f32") : cub;
      std::printf("%-10s %-15s %8.1f  %5.2f%s\n", model, v, g / 1e9, ref > 0 ? g / ref : 0.0, chosen(key).c_str());
    }
  }
  std::printf("bf16 kernels (GB/s, ratio to cub):\n");
  for (const char* model : {"vgg16", "resnet50"}) {
    const std::string m = model;
    const double cub = get("BM_cub_reduce/" + m + "/bf16");
    for (const char* v :
         {"fused_kernels", "kernels_1launch", "kernels_shared", "kernels_unshared", "kernels_lean", "kernels_queue",
          "kernels_staged", "kernels_tuned", "kernels_serial"}) {
      const std::string key = std::string("BM_") + v + "/" + m + "/bf16";
      const double g = get(key);
      std::printf("%-10s %-15s %8.1f  %5.2f%s\n", model, v, g / 1e9, cub > 0 ? g / cub : 0.0, chosen(key).c_str());
    }
  }
  // The fastest way to run the kernels, of those that give the default's results (the same
  // bits, or D's last bits for the warp-sharing switch), against the targets.
  std::printf("fastest kernels (ratio to cub; compare: to memcpy):\n");
  for (const char* model : {"vgg16", "resnet50"}) {
    for (const char* ty : {"f32", "bf16"}) {
      const std::string m = model, t = ty;
      for (const bool compare : {false, true}) {
        if (compare && t != "f32") continue;
        const double ref = get(std::string(compare ? "BM_memcpy_d2d/" : "BM_cub_reduce/") + m + "/" + t);
        std::string best;
        double top = 0;
        for (const char* v : {"1launch", "shared", "unshared", "lean", "queue", "staged", "tuned", "serial", ""}) {
          // (""): the default, fused_kernels or compare_kernels
          const std::string name = *v ? std::string(compare ? "compare_" : "kernels_") + v
                                      : std::string(compare ? "compare_kernels" : "fused_kernels");
          const double g = get("BM_" + name + "/" + m + "/" + t);
          if (g > top) {
            top = g;
            best = name;
          }
        }
        const double r = ref > 0 ? top / ref : 0;
        std::printf("%-10s %-5s %-16s %8.1f  %5.2f %s%s\n", model, ty, best.c_str(), top / 1e9, r,
                    r >= 0.9 ? "PASS" : "MISS", chosen("BM_" + best + "/" + m + "/" + t).c_str());
      }
    }
  }
  std::printf("(GB/s; bytes each must move: fused/cub/thrust 2N, memcpy 2N, compare-and-advance 3N)\n");
  return 0;
}
