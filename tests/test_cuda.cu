// The shared backend body on fevo::cuda::par and on fevo::thrust::par built for the CUDA device
// system. Each case's host data is copied to the device with its strides intact (upload), so the
// body is the same one every other backend runs. Without a usable GPU the executable reports
// "skipped" to ctest (exit code 77), never "passed".
#include <catch2/catch.hpp>

#include <fevo/cuda.cuh>
#include <fevo/thrust.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <typeinfo>
#include <vector>

#include "backends.hpp"
#include "cuda_cases.hpp"
#include "runner.hpp"

namespace fevo_test {

/// Copies the memory a host view spans to the device and views it with the same strides.
struct device_upload {
  static constexpr double d_relative_slack = 0;  // exact double squares on the device
  template <class T>
  struct uploaded {
    std::shared_ptr<void> mem;
    fevo::basic_filter_view<const T, fevo::device_space> v;
    fevo::basic_filter_view<const T, fevo::device_space> view() const { return v; }
  };
  template <class T>
  static uploaded<T> upload(fevo::filter_view<const T> host) {
    const std::size_t n = host.required_span_size();
    void* p = nullptr;
    REQUIRE(cudaMalloc(&p, n * sizeof(T) + 16) == cudaSuccess);
    std::shared_ptr<void> mem(p, [](void* q) { cudaFree(q); });
    REQUIRE(cudaMemcpy(p, host.data_handle(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    auto e = host.extents();
    auto s = host.strides();
    return {mem, fevo::strided<fevo::device_space>(static_cast<const T*>(p), {e[0], e[1], e[2], e[3]},
                                                   {s[0], s[1], s[2], s[3]})};
  }
};

/// The shared body on fevo::cuda::policy<Tuning>.
template <class Tuning>
struct cuda_with : device_upload {
  static auto policy() { return fevo::cuda::policy<Tuning>{}; }
};
/// Tunings that force one path of the default kernel: a warp for every filter (never shared), a
/// block for every filter, small packed filters always sharing a warp.
struct warp_tuning : fevo::cuda::default_tuning {
  static constexpr std::size_t block_from = SIZE_MAX;
  static constexpr double share_from = 2;
};
struct block_tuning : fevo::cuda::default_tuning {
  static constexpr std::size_t block_from = 1;
};
struct shared_tuning : fevo::cuda::default_tuning {
  static constexpr double share_from = 0;
};
/// A warp for every filter, sharing as the default does: what the warp_only tunings compute.
struct warp_auto_tuning : fevo::cuda::default_tuning {
  static constexpr std::size_t block_from = SIZE_MAX;
};
struct cuda_backend : cuda_with<fevo::cuda::default_tuning> {
  static constexpr const char* name = "fevo::cuda::par";
};
struct cuda_warp_backend : cuda_with<warp_tuning> {
  static constexpr const char* name = "fevo::cuda (warp per filter)";
};
struct cuda_block_backend : cuda_with<block_tuning> {
  static constexpr const char* name = "fevo::cuda (block per filter)";
};
struct cuda_shared_warp_backend : cuda_with<shared_tuning> {
  static constexpr const char* name = "fevo::cuda (shared warps)";
};
struct cuda_lean_backend : cuda_with<fevo::cuda::experimental::lean> {
  static constexpr const char* name = "fevo::cuda::experimental::lean";
};
struct cuda_queue_backend : cuda_with<fevo::cuda::experimental::work_queue> {
  static constexpr const char* name = "fevo::cuda::experimental::work_queue";
};
/// The calls whose layers are all packed take it, the others the default kernel.
struct cuda_staged_backend : cuda_with<fevo::cuda::experimental::staged> {
  static constexpr const char* name = "fevo::cuda::experimental::staged";
};
struct cuda_words_backend : cuda_with<fevo::cuda::experimental::global_words> {
  static constexpr const char* name = "fevo::cuda::experimental::global_words";
};
struct cuda_overlapped_backend : cuda_with<fevo::cuda::experimental::overlapped_merge> {
  static constexpr const char* name = "fevo::cuda::experimental::overlapped_merge";
};
struct cuda_deep_backend : cuda_with<fevo::cuda::experimental::deep> {
  static constexpr const char* name = "fevo::cuda::experimental::deep";
};
struct thrust_cuda_backend : device_upload {
  static constexpr const char* name = "fevo::thrust::par (cuda)";
  static auto policy() { return fevo::thrust::par; }
};

using cuda_backends =
    std::tuple<cuda_backend, cuda_warp_backend, cuda_block_backend, cuda_shared_warp_backend, cuda_lean_backend,
               cuda_queue_backend, cuda_staged_backend, cuda_words_backend, cuda_overlapped_backend,
               cuda_deep_backend, thrust_cuda_backend>;

}  // namespace fevo_test

#define FEVO_TEST_BACKENDS ::fevo_test::cuda_backends
#include "backend_body.hpp"

TEST_CASE("cuda: compare_and_advance gives compute's results and leaves prev equal to next",
          "[cuda]") {
  const int N = 37, C = 19, H = 3, W = 3, n = N * C * H * W;
  std::vector<float> a(n), b(n);
  fevo_test::rng g = fevo_test::rng_for("compare_and_advance");
  for (int k = 0; k < n; ++k) {
    a[k] = float(g.uniform() - 0.5);
    b[k] = (k % 3 == 0) ? a[k] : a[k] + float(g.uniform() - 0.5) * 1e-2f;
  }
  const auto ref = fevo::compute(fevo::seq, fevo::oihw(a.data(), N, C, H, W),
                                 fevo::oihw(b.data(), N, C, H, W), 1e-3);
  float *da = nullptr, *db = nullptr;
  REQUIRE(cudaMalloc(&da, n * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(&db, n * sizeof(float)) == cudaSuccess);
  cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  const auto m = fevo::cuda::compare_and_advance(
      fevo::cuda::par, fevo::oihw<fevo::device_space>(da, N, C, H, W),
      fevo::oihw<fevo::device_space>(static_cast<const float*>(db), N, C, H, W), 1e-3);
  std::vector<float> after(n);
  cudaMemcpy(after.data(), da, n * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(da);
  cudaFree(db);
  CHECK(m.totals.changed == ref.totals.changed);
  CHECK(m.totals.zero_channels == ref.totals.zero_channels);
  CHECK(m.D == Approx(ref.D).epsilon(1e-12));
  CHECK(after == b);
}

namespace {

/// The environment of cuda_cases.hpp on the GPU.
struct gpu_env {
  static std::size_t uploads() { return fevo::cuda::stats().uploads; }
  static void forget_table() { fevo::cuda::detail::scratch::for_this_thread().table.forget(); }
  template <class T>
  struct buffer {
    T* p = nullptr;
    explicit buffer(const std::vector<T>& h) {
      REQUIRE(cudaMalloc(&p, h.size() * sizeof(T) + 16) == cudaSuccess);
      REQUIRE(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    }
    ~buffer() { cudaFree(p); }
    std::vector<T> get(std::size_t n) const {
      std::vector<T> h(n);
      REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
      return h;
    }
  };
  template <class Tuning, class T>
  static std::vector<fevo::layer_metrics> advance(const fevo::cuda::policy<Tuning>& pol,
                                                  const std::vector<fevo::cuda::advance_pair<T>>& pairs,
                                                  double tau, std::vector<fevo::filter_results>* per,
                                                  std::size_t& launches) {
    const std::size_t before = fevo::cuda::stats().launches;
    auto m = fevo::cuda::compare_and_advance_layers(pol, pairs, tau, per);
    launches = fevo::cuda::stats().launches - before;
    return m;
  }
};
template <class T>
using device_buffer = gpu_env::buffer<T>;

}  // namespace

namespace {
namespace experimental = fevo::cuda::experimental;
/// Calls f(policy) for the policy of each tuning.
template <class... Tunings, class F>
void for_each_tuning(F&& f) {
  (f(fevo::cuda::policy<Tunings>{}), ...);
}
}  // namespace

TEST_CASE("cuda: compare_and_advance_layers on a mixed model, every tuning and dtype", "[cuda]") {
  for_each_tuning<fevo::cuda::default_tuning, fevo_test::warp_tuning, fevo_test::block_tuning, fevo_test::shared_tuning,
                  experimental::global_words, experimental::overlapped_merge, experimental::deep>([](auto pol) {
    using tuning = typename decltype(pol)::tuning;
    INFO("block_from " << tuning::block_from << ", share_from " << tuning::share_from << ", vectors "
                       << tuning::vectors_per_thread);
    fevo_test::check_advance_model_every_dtype<gpu_env>(pol);
  });
}

TEST_CASE("cuda: the lean, work-queue and staged tunings on warp-mode layers of every dtype, with the default "
          "kernel's bits",
          "[cuda]") {
  // (The emulated tests run each with small filters always and never sharing a warp.)
  const auto check = [](auto pol, bool staged) {
    INFO(typeid(typename decltype(pol)::tuning).name());
    // The staged kernel serves passes of packed layers only.
    fevo_test::check_advance_model_every_dtype<gpu_env>(
        pol, staged ? fevo_test::packed_warp_mode_shapes() : fevo_test::warp_mode_shapes());
    fevo_test::check_same_bits<gpu_env>(pol, fevo::cuda::policy<fevo_test::warp_auto_tuning>{},
                                        staged ? fevo_test::packed_bits_shapes() : fevo_test::same_bits_shapes());
  };
  check(fevo::cuda::policy<experimental::lean>{}, false);
  check(fevo::cuda::policy<experimental::work_queue>{}, false);
  check(fevo::cuda::policy<experimental::staged>{}, true);
  // The merge launch sets the queue back to zero for the next call on the same table.
  fevo_test::check_repeated_calls<gpu_env>(fevo::cuda::policy<experimental::work_queue>{});
}

TEST_CASE("cuda: the staged tuning runs where the device has the shared memory it asks for", "[cuda]") {
  int device = 0, optin = 0, sms = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess);
  const std::size_t staged = fevo::cuda::detail::resident_blocks<experimental::staged, float, false, false>();
  const std::size_t queued = fevo::cuda::detail::resident_blocks<experimental::work_queue, float, false, false>();
  INFO("opt-in shared memory per block " << optin << " bytes, " << sms << " SMs");
  // A block takes 96 KiB: 64 KiB of rings, 32 KiB of bitsets. Two blocks per SM on an H100 or
  // H200 (227 KiB a block at most), one on an A100 (163 KiB) or sm_86 (99 KiB), none on sm_75
  // (64 KiB), where its passes run with the default tuning.
  const std::size_t need = fevo::cuda::detail::dynamic_shared_bytes<experimental::staged>() + 32 * 1024;
  if (optin >= 200 * 1024) CHECK(staged >= 2 * std::size_t(sms));
  else if (std::size_t(optin) >= need) CHECK(staged >= std::size_t(sms));
  else CHECK(staged == 0);
  CHECK(queued >= std::size_t(sms));
  // Repeated calls on packed layers (the staged kernel's, where it runs): the same bits, the
  // queue set back to zero by each merge.
  fevo_test::check_repeated_calls<gpu_env>(fevo::cuda::policy<experimental::staged>{},
                                           {{64, 64, 3, 3}, {256, 64, 1, 1}, {32, 16, 7, 7}});
}

TEST_CASE("cuda: the merge launched as a programmatic dependent launch gives a plain launch's bits", "[cuda]") {
  int device = 0, major = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess);
  CHECK(fevo::cuda::detail::device_takes_dependent_launch() == (major >= 9));
  fevo_test::rng g = fevo_test::rng_for("dependent launch");
  const fevo_test::float_model<gpu_env> model(g, {{64, 64, 3, 3}, {256, 64, 1, 1}, {8, 3, 3, 3}, {128, 256, 3, 3}}, 3);
  const auto plain = fevo::compute_layers(fevo::cuda::par, model.device, 1e-3);
  fevo_test::check_like(plain, fevo::compute_layers(fevo::seq, model.host, 1e-3));
  // The merge must not read a filter's totals before the pass has written them. This model
  // leaves most SMs free during the pass, where the merge's blocks start at once: a merge that
  // did not wait would read totals not yet written.
  for (int rep = 0; rep < 10; ++rep)
    fevo_test::same_bits(fevo::compute_layers(fevo::cuda::policy<experimental::overlapped_merge>{}, model.device, 1e-3),
                         plain);
}

TEST_CASE("cuda: a repeated call finds its descriptors on the device and gives the same results", "[cuda]") {
  fevo_test::check_repeated_calls<gpu_env>(fevo::cuda::par);
}

TEST_CASE("cuda: compare_and_advance_layers refuses overlapping prev and next", "[cuda]") {
  std::vector<float> h(2 * 3 * 3 * 3 * 2, 1.f);
  device_buffer<float> d(h);
  auto first = fevo::oihw<fevo::device_space>(d.p, 2, 3, 3, 3);
  auto shifted = fevo::oihw<fevo::device_space>(d.p + 5, 2, 3, 3, 3);
  auto second = fevo::oihw<fevo::device_space>(static_cast<const float*>(d.p + 54), 2, 3, 3, 3);
  std::vector<fevo::cuda::advance_pair<float>> same{{"a", first, first}};
  REQUIRE_THROWS_WITH(fevo::cuda::compare_and_advance_layers(fevo::cuda::par, same, 0.1),
                      Catch::Contains("overlap") && Catch::Contains("'a' prev"));
  std::vector<fevo::cuda::advance_pair<float>> cross{{"a", first, second}, {"b", shifted, second}};
  REQUIRE_THROWS_WITH(fevo::cuda::compare_and_advance_layers(fevo::cuda::par, cross, 0.1),
                      Catch::Contains("overlap"));
  // Two prev views reading the same next are fine.
  std::vector<float> h2(27, 2.f);
  device_buffer<float> e(h2), f(h2);
  auto n = fevo::oihw<fevo::device_space>(static_cast<const float*>(d.p + 54), 1, 3, 3, 3);
  std::vector<fevo::cuda::advance_pair<float>> ok{{"a", fevo::oihw<fevo::device_space>(e.p, 1, 3, 3, 3), n},
                                                  {"b", fevo::oihw<fevo::device_space>(f.p, 1, 3, 3, 3), n}};
  const auto m = fevo::cuda::compare_and_advance_layers(fevo::cuda::par, ok, 0.1);
  CHECK(m[0].S == 1.0);
  CHECK(m[1].S == 1.0);
}

TEST_CASE("cuda: host memory in a device view is refused with fevo::error", "[cuda]") {
  std::vector<float> h(2 * 3 * 3 * 3, 1.f);
  auto v = fevo::oihw<fevo::device_space>(static_cast<const float*>(h.data()), 2, 3, 3, 3);
  REQUIRE_THROWS_WITH(fevo::compute(fevo::cuda::par, v, v, 0.1), Catch::Contains("host memory") ||
                                                                       Catch::Contains("not a CUDA pointer"));
}

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no usable CUDA device (%s): skipped\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  return fevo_test::run(argc, argv);
}
