// The shared backend body on fevo::cuda::par and on fevo::thrust::par built for the CUDA device
// system. Each case's host data is copied to the device with its strides intact (upload), so the
// body is the same one every other backend runs. Without a usable GPU the executable reports
// "skipped" to ctest (exit code 77), never "passed".
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <fevo/cuda.cuh>
#include <fevo/thrust.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backends.hpp"
#include "cuda_cases.hpp"

namespace fevo_test {

namespace {
std::uint64_t run_seed = 0;
}
std::uint64_t seed() { return run_seed; }

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

struct cuda_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par";
  static auto policy() { return fevo::cuda::par; }
};
/// The same kernel with every filter read by one warp (never shared), and with every filter
/// read by a block.
struct cuda_warp_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par (warp per filter)";
  static auto policy() { return fevo::cuda::par.block_per_filter_from(SIZE_MAX).warp_sharing(false); }
};
struct cuda_block_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par (block per filter)";
  static auto policy() { return fevo::cuda::par.block_per_filter_from(1); }
};
/// Each layer's totals merged in the fused launch (par.single_launch()).
struct cuda_one_launch_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par.single_launch()";
  static auto policy() { return fevo::cuda::par.single_launch(); }
};
/// Small packed filters two or four to a warp (par.warp_sharing()).
struct cuda_shared_warp_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par.warp_sharing()";
  static auto policy() { return fevo::cuda::par.warp_sharing(); }
};
/// The lean kernel (par.lean_kernel()) on every layer a warp reads: all of them, but those of
/// more than 32768 weights, with a warp per filter.
struct cuda_lean_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par.lean_kernel() (warp per filter)";
  static auto policy() { return fevo::cuda::par.block_per_filter_from(SIZE_MAX).lean_kernel(); }
};
/// The lean kernel with a work queue (par.work_queue()), a warp per filter.
struct cuda_queue_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par.work_queue() (warp per filter)";
  static auto policy() { return fevo::cuda::par.block_per_filter_from(SIZE_MAX).work_queue(); }
};
/// The staged kernel (par.staged_copies()), a warp per filter: the calls whose layers are all
/// packed take it, the others the default kernel.
struct cuda_staged_backend : device_upload {
  static constexpr const char* name = "fevo::cuda::par.staged_copies() (warp per filter)";
  static auto policy() { return fevo::cuda::par.block_per_filter_from(SIZE_MAX).staged_copies(); }
};
struct thrust_cuda_backend : device_upload {
  static constexpr const char* name = "fevo::thrust::par (cuda)";
  static auto policy() { return fevo::thrust::par; }
};

using cuda_backends =
    std::tuple<cuda_backend, cuda_warp_backend, cuda_block_backend, cuda_one_launch_backend, cuda_shared_warp_backend,
               cuda_lean_backend, cuda_queue_backend, cuda_staged_backend, thrust_cuda_backend>;

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
  static std::size_t uploads() { return fevo::cuda::detail::upload_count(); }
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
  template <class T>
  static std::vector<fevo::layer_metrics> advance(const fevo::cuda::policy& pol,
                                                  const std::vector<fevo::cuda::advance_pair<T>>& pairs,
                                                  double tau, std::vector<fevo::filter_results>* per,
                                                  std::size_t& launches) {
    const std::size_t before = fevo::cuda::detail::launch_count();
    auto m = fevo::cuda::compare_and_advance_layers(pol, pairs, tau, per);
    launches = fevo::cuda::detail::launch_count() - before;
    return m;
  }
};
template <class T>
using device_buffer = gpu_env::buffer<T>;

}  // namespace

TEST_CASE("cuda: compare_and_advance_layers on a mixed model, every mode and dtype", "[cuda]") {
  for (auto pol : {fevo::cuda::par, fevo::cuda::par.block_per_filter_from(1),
                   fevo::cuda::par.block_per_filter_from(SIZE_MAX), fevo::cuda::par.single_launch(),
                   fevo::cuda::par.block_per_filter_from(1).single_launch(), fevo::cuda::par.warp_sharing(),
                   fevo::cuda::par.warp_sharing().single_launch().block_per_filter_from(SIZE_MAX),
                   fevo::cuda::par.warp_sharing(false)}) {
    INFO("block_from " << pol.block_from << ", one launch " << pol.one_launch << ", shared warps "
                       << int(pol.share_warps) << " (0 automatic, 1 always, 2 never)");
    fevo_test::check_advance_model_every_dtype<gpu_env>(pol);
  }
}

TEST_CASE("cuda: the lean, work-queue and staged kernels on warp-mode layers of every dtype, with the default "
          "kernel's bits",
          "[cuda]") {
  for (const int kind : {0, 1, 2}) {
    for (const bool shared : {false, true}) {
      const char* name = kind == 0 ? "lean kernel" : kind == 1 ? "work queue" : "staged copies";
      INFO(name << ", shared warps " << shared);
      const auto warps = fevo::cuda::par.block_per_filter_from(SIZE_MAX).warp_sharing(shared);
      const auto pol = kind == 0 ? warps.lean_kernel() : kind == 1 ? warps.work_queue() : warps.staged_copies();
      // The staged kernel serves passes of packed layers only.
      fevo_test::check_advance_model_every_dtype<gpu_env>(
          pol, kind == 2 ? fevo_test::packed_warp_mode_shapes() : fevo_test::warp_mode_shapes());
      fevo_test::check_same_bits<gpu_env>(pol, warps,
                                          kind == 2 ? fevo_test::packed_bits_shapes() : fevo_test::same_bits_shapes());
    }
  }
  // The merge launch sets the queue back to zero for the next call on the same table.
  fevo_test::check_repeated_calls<gpu_env>(
      [](bool one_launch) { return fevo::cuda::par.work_queue().single_launch(one_launch); });
}

TEST_CASE("cuda: autotune times each kernel that can serve a shape, then launches the fastest, with the default "
          "kernel's bits",
          "[cuda]") {
  const auto warps = fevo::cuda::par.block_per_filter_from(SIZE_MAX);
  const fevo::cuda::detail::kernel_kind chosen =
      fevo_test::check_autotune<gpu_env>(warps.autotune(), warps, warps.autotune().single_launch());
  std::printf("autotune chose the %s kernel for the float test model\n", fevo::cuda::kernel_name(chosen));
}

TEST_CASE("cuda: the staged kernel runs where the device has the shared memory it asks for", "[cuda]") {
  using fevo::cuda::detail::kernel_kind;
  int device = 0, optin = 0, sms = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess);
  const std::size_t staged = fevo::cuda::detail::resident_blocks<float, false, false, kernel_kind::staged>();
  const std::size_t queued = fevo::cuda::detail::resident_blocks<float, false, false, kernel_kind::queued>();
  INFO("opt-in shared memory per block " << optin << " bytes, " << sms << " SMs");
  // A block takes 96 KiB: 64 KiB of rings, 32 KiB of bitsets. Two blocks per SM on an H100 or
  // H200 (227 KiB a block at most), one on an A100 (163 KiB) or sm_86 (99 KiB), none on sm_75
  // (64 KiB), where the work queue's kernel serves its passes.
  const std::size_t need = fevo::cuda::detail::staged_shared_bytes + 32 * 1024;
  if (optin >= 200 * 1024) CHECK(staged >= 2 * std::size_t(sms));
  else if (std::size_t(optin) >= need) CHECK(staged >= std::size_t(sms));
  else CHECK(staged == 0);
  CHECK(queued >= std::size_t(sms));
  // Repeated calls on packed layers (the staged kernel's, where it runs): the same bits, the
  // queue set back to zero by each merge.
  fevo_test::check_repeated_calls<gpu_env>(
      [](bool one_launch) { return fevo::cuda::par.staged_copies().single_launch(one_launch); },
      {{64, 64, 3, 3}, {256, 64, 1, 1}, {32, 16, 7, 7}});
}

TEST_CASE("cuda: the merge launched as a programmatic dependent launch gives a plain launch's bits", "[cuda]") {
  int device = 0, major = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess);
  CHECK(fevo::cuda::detail::device_takes_dependent_launch() == (major >= 9));
  fevo_test::rng g = fevo_test::rng_for("dependent launch");
  const fevo_test::float_model<gpu_env> model(g, {{64, 64, 3, 3}, {256, 64, 1, 1}, {8, 3, 3, 3}, {128, 256, 3, 3}}, 3);
  const auto ref = fevo::compute_layers(fevo::seq, model.host, 1e-3);
  bool& dependent = fevo::cuda::detail::dependent_launches();
  for (const auto pol : {fevo::cuda::par, fevo::cuda::par.warp_sharing(), fevo::cuda::par.work_queue(),
                         fevo::cuda::par.staged_copies()}) {
    INFO("shared warps " << int(pol.share_warps) << ", work queue " << pol.queue << ", staged " << pol.staged);
    dependent = false;
    const auto plain = fevo::compute_layers(pol, model.device, 1e-3);
    dependent = true;
    fevo_test::check_like(plain, ref);
    // The merge must not read a filter's totals before the pass has written them. This model
    // leaves most SMs free during the pass, where the merge's blocks start at once: a merge that
    // did not wait would read totals not yet written.
    for (int rep = 0; rep < 10; ++rep) {
      const auto got = fevo::compute_layers(pol, model.device, 1e-3);
      REQUIRE(got.size() == plain.size());
      for (std::size_t k = 0; k < got.size(); ++k)
        REQUIRE(std::memcmp(&got[k].totals, &plain[k].totals, sizeof(fevo::partial)) == 0);
    }
  }
}

TEST_CASE("cuda: a repeated call finds its descriptors on the device and gives the same results", "[cuda]") {
  fevo_test::check_repeated_calls<gpu_env>([](bool one_launch) { return fevo::cuda::par.single_launch(one_launch); });
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
  const char* env = std::getenv("FEVO_TEST_SEED");
  if (env && *env) {
    char* end = nullptr;
    errno = 0;
    fevo_test::run_seed = std::strtoull(env, &end, 0);
    if (errno != 0 || *end != '\0') {
      std::fprintf(stderr, "FEVO_TEST_SEED must be an unsigned integer, got '%s'\n", env);
      return 2;
    }
  } else {
    std::random_device rd;
    fevo_test::run_seed = (std::uint64_t(rd()) << 32) ^ rd();
  }
  std::printf("fevo test seed: %llu (set FEVO_TEST_SEED=%llu to reproduce)\n",
              (unsigned long long)fevo_test::run_seed, (unsigned long long)fevo_test::run_seed);
  return Catch::Session().run(argc, argv);
}
