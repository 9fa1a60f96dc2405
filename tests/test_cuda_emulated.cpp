// fevo::cuda's dispatch and kernels, run on the host SIMT emulator (simt/simt.hpp) in every build:
// the shared backend body and the compare-and-advance cases, with the same descriptor table,
// scratch layout and kernels a GPU runs, for the default tuning, test tunings that force each
// path (block mode, warp per filter, shared warps) and every experimental tuning. Buffers are
// allocated at their exact size, so under AddressSanitizer any read or write a kernel makes
// outside them fails the test.
#include "simt/simt.hpp"
#include "simt/device_ops.hpp"

#include <fevo/cuda/dispatch.hpp>
#include <fevo/cuda/kernels.cuh>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <tuple>
#include <vector>

#include "support.hpp"

namespace fevo_test {

using fevo::cuda::default_tuning;
namespace experimental = fevo::cuda::experimental;

/// Whether small packed filters share a warp: as the tuning says, always, or never.
enum class sharing { automatic, always, never };
/// `Base` with its share_from set for `S`.
template <class Base, sharing S>
struct with_sharing : Base {
  static constexpr double share_from = S == sharing::automatic ? Base::share_from : S == sharing::always ? 0.0 : 2.0;
};
/// Tunings that force one path of the default kernel: a block for every filter from 1 or 64
/// weights, or a warp for every filter (SIZE_MAX).
template <std::size_t From>
struct blocks_from : default_tuning {
  static constexpr std::size_t block_from = From;
};
using warp_tuning = with_sharing<blocks_from<SIZE_MAX>, sharing::never>;

/// How an emulated call runs: its tuning (the type), and the most blocks one pass launches (few:
/// the blocks' grid-stride loops then take many items each). `staged_fits` false: the device has
/// too little shared memory for schedule::staged (max_blocks says 0).
template <class Tuning>
struct emulated_policy {
  using tuning = Tuning;
  unsigned blocks = 3;
  bool staged_fits = true;
};

/// The device memory of one host thread's emulated calls: the scratch stays from call to call
/// (as fevo::cuda's does) while its size stays the same, so that a repeated call finds its
/// descriptor table there; everything past the table is refilled with garbage each call.
struct emulated_memory {
  std::unique_ptr<char, void (*)(void*)> scratch{nullptr, std::free};
  std::size_t scratch_size = 0;
  fevo::cuda::detail::uploaded_table table;
  std::size_t uploads = 0;           ///< descriptor uploads so far
  std::size_t launches = 0;          ///< passes launched so far
  std::size_t shared_launches = 0;   ///< of which with the shared-warp kernel
  std::size_t warp_only_launches = 0;  ///< of which with a warp_only tuning (the lean kernel, the queues)
  std::size_t queue_launches = 0;    ///< of which with a work queue (schedule::work_queue or staged)
  std::size_t staged_launches = 0;   ///< of which schedule::staged
  static emulated_memory& for_this_thread() {
    static thread_local emulated_memory m;
    return m;
  }
};

/// The Device of fevo::cuda::detail::run_pass, on the emulator. Scratch and staging are
/// allocated at their exact size, and their regions are only 16-byte aligned, so that they abut:
/// a kernel that writes past a region's end hits the next region (whose checks then fail) or,
/// past the last, AddressSanitizer's red zone.
struct emulated_device {
  unsigned blocks;
  bool staged_fits = true;
  std::size_t launches = 0;
  std::unique_ptr<char, void (*)(void*)> staging_mem{nullptr, std::free};

  static char* exact(std::unique_ptr<char, void (*)(void*)>& m, std::size_t bytes) {
    // aligned_alloc wants a multiple of the alignment, which run_pass's layout already is.
    m.reset(static_cast<char*>(std::aligned_alloc(16, bytes)));
    REQUIRE(m);
    std::memset(m.get(), 0xA5, bytes);  // as uninitialised device memory: nothing may rely on it
    return m.get();
  }
  char* scratch(std::size_t bytes) {
    emulated_memory& mem = emulated_memory::for_this_thread();
    if (mem.scratch && mem.scratch_size == bytes) {
      const std::size_t kept = mem.table.at == mem.scratch.get() ? mem.table.bytes.size() : 0;
      std::memset(mem.scratch.get() + kept, 0xA5, bytes - kept);
      return mem.scratch.get();
    }
    mem.table.forget();
    mem.scratch_size = bytes;
    return exact(mem.scratch, bytes);
  }
  fevo::cuda::detail::uploaded_table& table() { return emulated_memory::for_this_thread().table; }
  void check_pointer(const void* p, const char* which, std::size_t layer) {
    INFO(which << " of layer " << layer);
    REQUIRE(p != nullptr);
  }
  std::size_t alignment() const { return 16; }
  char* staging(std::size_t bytes) { return exact(staging_mem, bytes); }
  template <class Tuning, class T, bool Advance, bool Shared>
  std::size_t max_blocks() {
    return Tuning::work == fevo::cuda::schedule::staged && !staged_fits ? 0 : blocks;
  }
  void upload(void* dst, const void* src, std::size_t bytes) {
    std::memcpy(dst, src, bytes);
    ++emulated_memory::for_this_thread().uploads;
  }
  void download(void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); }
  template <class Tuning, class T, bool Advance, bool Shared>
  void launch(const fevo::cuda::detail::pass_args<T>& a) {
    using namespace fevo::cuda::detail;
    emulated_memory& mem = emulated_memory::for_this_thread();
    ++mem.launches;
    mem.shared_launches += Shared;
    mem.warp_only_launches += Tuning::warp_only;
    mem.queue_launches += Tuning::work != fevo::cuda::schedule::grid_stride;
    mem.staged_launches += Tuning::work == fevo::cuda::schedule::staged;
    simt::launch(
        a.grid, block_threads,
        [&] { fold_filters<Tuning, T, Advance, Shared>(a.layers, a.n_layers, a.n_items, a.filters, a.r, a.queue); },
        dynamic_shared_bytes<Tuning>());
    simt::launch(unsigned(a.n_layers), block_threads, [&] {
      reduce_layers<Tuning::dependent_launch>(a.filter_start, a.filters, a.totals, a.queue);
    });
    launches += 2;
  }
  void finish() {}
};

/// fevo::compute & co. reach this by argument-dependent lookup on emulated_policy.
template <class Tuning, class T>
void evaluate(const emulated_policy<Tuning>& pol, fevo::layer_task<T, fevo::device_space>* tasks, std::size_t n) {
  emulated_device dev{pol.blocks, pol.staged_fits};
  fevo::cuda::detail::run_pass<Tuning, T, false>(dev, tasks, n, nullptr);
}

/// Copies the memory a host view spans into a buffer of exactly that size, viewed as device
/// memory with the same strides.
struct emulated_upload {
  static constexpr double d_relative_slack = 0;  // exact double squares, as on the GPU
  template <class T>
  struct uploaded {
    std::shared_ptr<T[]> mem;
    fevo::basic_filter_view<const T, fevo::device_space> v;
    fevo::basic_filter_view<const T, fevo::device_space> view() const { return v; }
  };
  template <class T>
  static uploaded<T> upload(fevo::filter_view<const T> host) {
    const std::size_t n = host.required_span_size();
    std::shared_ptr<T[]> mem(new T[n == 0 ? 1 : n]);
    std::copy(host.data_handle(), host.data_handle() + n, mem.get());
    auto e = host.extents();
    auto s = host.strides();
    return {mem, fevo::strided<fevo::device_space>(static_cast<const T*>(mem.get()), {e[0], e[1], e[2], e[3]},
                                                   {s[0], s[1], s[2], s[3]})};
  }
};

/// The shared backend body on `Tuning`, `Blocks` blocks at most.
template <class Tuning, unsigned Blocks>
struct emulated : emulated_upload {
  static auto policy() { return emulated_policy<Tuning>{Blocks}; }
};
struct emulated_backend : emulated<default_tuning, 3> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, default tuning, 3 blocks)";
};
/// One block takes every item, a warp to every filter, never shared.
struct emulated_warp_backend : emulated<warp_tuning, 1> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, warp per filter, 1 block)";
};
/// Block mode from 64 weights (fewer than a block's threads): every filter in block mode would
/// make the body five times slower here, and the smallest filters in block mode are in the
/// compare-and-advance cases below.
struct emulated_block_backend : emulated<blocks_from<64>, 64> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, block per filter from 64 weights, 64 blocks)";
};
/// Small packed filters two or four to a warp, with idle groups past each layer's last filter.
struct emulated_shared_warp_backend : emulated<with_sharing<default_tuning, sharing::always>, 3> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, shared warps, 3 blocks)";
};
/// The work queue: the emulator runs blocks one after another, so the first block's warps take
/// every unit and the others find the queue empty.
struct emulated_queue_backend : emulated<experimental::work_queue, 3> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, experimental::work_queue, 3 blocks)";
};
/// Staged copies: calls whose layers are all packed take them (the asynchronous copies land only
/// when waited for), the others the default kernel, as on a GPU.
struct emulated_staged_backend : emulated<experimental::staged, 3> {
  static constexpr const char* name = "fevo::cuda kernels (emulated, experimental::staged, 3 blocks)";
};

using all_emulated_backends = std::tuple<emulated_backend, emulated_warp_backend, emulated_block_backend,
                                         emulated_shared_warp_backend, emulated_queue_backend, emulated_staged_backend>;
static_assert(std::tuple_size_v<all_emulated_backends> == 6,
              "tests/CMakeLists.txt builds one executable per emulated backend, by index: update it");
#if defined(FEVO_TEST_EMULATED_BACKEND)
/// This executable's backend (tests/CMakeLists.txt compiles this file once per backend, and once
/// without FEVO_TEST_EMULATED_BACKEND for the cases beyond the shared body: smaller files that
/// compile side by side, and ctest parts that share the cores evenly).
using emulated_backends = std::tuple<std::tuple_element_t<FEVO_TEST_EMULATED_BACKEND, all_emulated_backends>>;
#endif

/// The environment of cuda_cases.hpp on the emulator.
struct emulated_env {
  static std::size_t uploads() { return emulated_memory::for_this_thread().uploads; }
  static void forget_table() { emulated_memory::for_this_thread().table.forget(); }
  template <class T>
  struct buffer {
    std::unique_ptr<T[]> mem;
    T* p;
    explicit buffer(const std::vector<T>& h) : mem(new T[h.size()]), p(mem.get()) {
      std::copy(h.begin(), h.end(), p);
    }
    std::vector<T> get(std::size_t n) const { return std::vector<T>(p, p + n); }
  };
  template <class Tuning, class T>
  static std::vector<fevo::layer_metrics> advance(const emulated_policy<Tuning>& pol,
                                                  const std::vector<fevo::cuda::advance_pair<T>>& pairs,
                                                  double tau, std::vector<fevo::filter_results>* per,
                                                  std::size_t& launches) {
    emulated_device dev{pol.blocks, pol.staged_fits};
    auto m = fevo::cuda::detail::advance_layers<Tuning>(dev, pairs, tau, per);
    launches = dev.launches;
    return m;
  }
};

}  // namespace fevo_test

#if defined(FEVO_TEST_EMULATED_BACKEND)
#define FEVO_TEST_BACKENDS ::fevo_test::emulated_backends
#include "backend_body.hpp"
#else
#include "cuda_cases.hpp"

namespace {

using fevo::cuda::default_tuning;
using fevo_test::emulated_memory;
using fevo_test::emulated_policy;
using fevo_test::sharing;
using fevo_test::with_sharing;
namespace experimental = fevo::cuda::experimental;

/// Calls f(policy) for each of the policies, one per tuning.
template <class F, class... Policies>
void for_each_policy(F&& f, const Policies&... policies) {
  (f(policies), ...);
}

/// The name of a sharing, for INFO.
const char* name_of(sharing s) {
  return s == sharing::automatic ? "automatic" : s == sharing::always ? "always" : "never";
}

}  // namespace

TEST_CASE("cuda emulated: compare_and_advance_layers on a mixed model, every path and dtype", "[cuda]") {
  using fevo_test::blocks_from;
  for_each_policy(
      [](const auto& pol) {
        INFO("block_from " << std::decay_t<decltype(pol)>::tuning::block_from << ", share_from "
                           << std::decay_t<decltype(pol)>::tuning::share_from << ", blocks " << pol.blocks);
        fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(pol);
      },
      emulated_policy<default_tuning>{}, emulated_policy<blocks_from<1>>{5}, emulated_policy<blocks_from<SIZE_MAX>>{2},
      emulated_policy<default_tuning>{4}, emulated_policy<blocks_from<1>>{3}, emulated_policy<fevo_test::warp_tuning>{1},
      emulated_policy<with_sharing<default_tuning, sharing::always>>{3},
      emulated_policy<with_sharing<blocks_from<SIZE_MAX>, sharing::always>>{2},
      emulated_policy<with_sharing<default_tuning, sharing::never>>{2});
}

TEST_CASE("cuda emulated: compare_and_advance_layers refuses overlapping prev and next", "[cuda]") {
  std::vector<float> h(2 * 3 * 3 * 3 * 2, 1.f);
  fevo_test::emulated_env::buffer<float> d(h);
  auto first = fevo::oihw<fevo::device_space>(d.p, 2, 3, 3, 3);
  std::vector<fevo::cuda::advance_pair<float>> same{{"a", first, first}};
  std::size_t launches = 0;
  REQUIRE_THROWS_WITH(fevo_test::emulated_env::advance(emulated_policy<default_tuning>{}, same, 0.1, nullptr, launches),
                      Catch::Contains("overlap") && Catch::Contains("'a' prev"));
  CHECK(launches == 0);
  CHECK(d.get(h.size()) == h);  // refused before anything ran
}

TEST_CASE("simt: warp exchanges, ballots and barriers behave as on a GPU", "[simt]") {
  std::vector<unsigned> down(64), xr(64), ballot(64), sum(2);
  simt::launch(2, 32, [&] {
    const unsigned t = threadIdx.x, b = blockIdx.x, g = b * 32 + t;
    down[g] = __shfl_down_sync(0xffffffffu, t, 3);  // lanes 29..31 keep their own value
    xr[g] = __shfl_xor_sync(0xffffffffu, t, 5);
    ballot[g] = __ballot_sync(0xffffffffu, t % 3 == 0);
    __shared__ unsigned total;
    if (t == 0) total = 0;
    __syncthreads();
    total += t;  // one OS thread: no data race in the emulator
    __syncthreads();
    if (t == 31) sum[b] = total;
  });
  for (unsigned g = 0; g < 64; ++g) {
    const unsigned t = g % 32;
    CHECK(down[g] == (t + 3 < 32 ? t + 3 : t));
    CHECK(xr[g] == (t ^ 5u));
    CHECK(ballot[g] == 0x49249249u);
  }
  CHECK(sum[0] == 496);
  CHECK(sum[1] == 496);
}

TEST_CASE("simt: a barrier some threads never reach, or divergent barriers, are reported, not a hang",
          "[simt]") {
  // Half of each warp waits at __syncwarp for lanes that have exited.
  REQUIRE_THROWS_WITH(simt::launch(1, 64,
                                   [&] {
                                     if (threadIdx.x % 32 < 16) __syncwarp();
                                   }),
                      Catch::Contains("deadlock"));
  // Threads of a block at two different __syncthreads.
  volatile int sink = 0;
  REQUIRE_THROWS_WITH(simt::launch(1, 64,
                                   [&] {
                                     if (threadIdx.x < 32) {
                                       __syncthreads();
                                       sink = 1;
                                     } else {
                                       sink = 2;
                                       __syncthreads();
                                       sink = 3;
                                     }
                                   }),
                      Catch::Contains("different barriers"));
  // The emulator is usable again after a deadlock.
  int ran = 0;
  simt::launch(1, 32, [&] { ran += 1; });
  CHECK(ran == 32);
}

TEST_CASE("simt: asynchronous copies land when their thread waits for their group", "[simt]") {
  std::vector<int> src(64);
  for (int k = 0; k < 64; ++k) src[std::size_t(k)] = k + 1;
  std::vector<int> seen(64 * 3, -1);
  simt::launch(
      1, 64,
      [&] {
        const unsigned t = threadIdx.x;
        int* mine = reinterpret_cast<int*>(simt_dynamic_shared()) + 4 * t;
        simt_copy_async(mine, &src[t], sizeof(int));
        simt_commit_copies();
        simt_copy_async(mine + 1, &src[63 - t], sizeof(int));
        simt_commit_copies();
        seen[3 * t] = mine[0];  // not waited for: what was there before
        simt_wait_copies(1);    // the first group lands
        seen[3 * t + 1] = mine[0];
        seen[3 * t + 2] = mine[1];  // still pending
        simt_wait_copies(0);
        CHECK(mine[1] == 64 - int(t));
      },
      64 * 4 * sizeof(int));
  int stale = 0;
  std::memset(&stale, 0xA5, sizeof stale);
  for (int t = 0; t < 64; ++t) {
    CHECK(seen[std::size_t(3 * t)] == stale);
    CHECK(seen[std::size_t(3 * t + 1)] == t + 1);
    CHECK(seen[std::size_t(3 * t + 2)] == stale);
  }
  // A thread that exits with copies it never waited for is reported.
  REQUIRE_THROWS_WITH(simt::launch(
                          1, 32,
                          [&] {
                            simt_copy_async(simt_dynamic_shared() + 4 * threadIdx.x, &src[0], sizeof(int));
                            simt_commit_copies();
                          },
                          128),
                      Catch::Contains("never waited for"));
  // Dynamic shared memory the launch did not ask for.
  REQUIRE_THROWS_WITH(simt::launch(1, 32, [&] { (void)simt_dynamic_shared(); }),
                      Catch::Contains("did not ask for"));
}

TEST_CASE("cuda emulated: shared warps give small packed filters 8 or 16 lanes", "[cuda]") {
  using fevo::cuda::detail::group_for;
  using fevo::cuda::detail::items_of;
  // Each lane takes at most two rounds of vectors_per_thread vectors (4 by default: f32 up to 256
  // weights with 8 lanes, 512 with 16).
  constexpr std::size_t u = default_tuning::vectors_per_thread;
  CHECK(group_for<default_tuning, float>(4) == 8);
  CHECK(group_for<default_tuning, float>(64 * u) == 8);
  CHECK(group_for<default_tuning, float>(64 * u + 4) == 16);
  CHECK(group_for<default_tuning, float>(128 * u) == 16);
  CHECK(group_for<default_tuning, float>(128 * u + 4) == 32);
  CHECK(group_for<default_tuning, fevo::bfloat16>(128 * u) == 8);
  CHECK(group_for<default_tuning, fevo::half>(256 * u) == 16);
  CHECK(group_for<default_tuning, fevo::half>(256 * u + 8) == 32);
  CHECK(group_for<default_tuning, double>(2) == 16);  // a 16-byte vector of f64 holds 2: words span 16 lanes
  CHECK(group_for<default_tuning, double>(64 * u) == 16);
  CHECK(group_for<default_tuning, double>(64 * u + 2) == 32);
  // Eight vectors per thread: twice the weights per group.
  CHECK(group_for<experimental::deep, float>(128 * u) == 8);
  CHECK(group_for<experimental::deep, float>(128 * u + 4) == 16);
  CHECK(items_of(33, false, 8) == 2);  // 32 filters per item of 8 warps
  CHECK(items_of(33, false, 16) == 3);
  CHECK(items_of(33, false) == 5);
  CHECK(items_of(33, true, 8) == 33);
  CHECK(items_of(33, false, 8, true) == 9);  // a work queue's units: 4 filters each
}

TEST_CASE("cuda emulated: warps are shared by default where small filters hold an eighth of the weights",
          "[cuda]") {
  using fevo::cuda::detail::use_shared_warps;
  using always = with_sharing<default_tuning, sharing::always>;
  using never = with_sharing<default_tuning, sharing::never>;
  CHECK(use_shared_warps<default_tuning, float>(1, 8));
  CHECK_FALSE(use_shared_warps<default_tuning, float>(1, 9));
  CHECK(use_shared_warps<always, float>(1, 1000));
  CHECK_FALSE(use_shared_warps<always, float>(0, 1000));  // no layer would share: plain kernel
  CHECK_FALSE(use_shared_warps<never, float>(8, 8));
  CHECK_FALSE(use_shared_warps<always, double>(8, 8));  // f64 never shares
  CHECK(use_shared_warps<always, fevo::bfloat16>(8, 8));
  // A 1x1 layer of 64-weight filters (8 lanes each) beside 8 filters of 3x3x512: 1024 of 37888
  // weights (2.7%) share, or 8192 of 45056 (18%).
  fevo_test::rng g = fevo_test::rng_for("automatic sharing");
  for (const std::size_t small : {std::size_t(16), std::size_t(128)}) {
    const fevo_test::float_model<fevo_test::emulated_env> model(g, {{small, 64, 1, 1}, {8, 512, 3, 3}}, 3);
    const auto ref = fevo::compute_layers(fevo::seq, model.host, 1e-3);
    for_each_policy(
        [&](const auto& pol) {
          using tuning = typename std::decay_t<decltype(pol)>::tuning;
          INFO(small << " small filters, share_from " << tuning::share_from);
          std::size_t& shared = emulated_memory::for_this_thread().shared_launches;
          const std::size_t before = shared;
          const auto got = fevo::compute_layers(pol, model.device, 1e-3);
          const bool expect = tuning::share_from == 0 || (tuning::share_from == default_tuning::share_from && small == 128);
          CHECK(shared - before == (expect ? 1u : 0u));
          fevo_test::check_like(got, ref);
        },
        emulated_policy<default_tuning>{4}, emulated_policy<always>{4}, emulated_policy<never>{4});
  }
}

TEST_CASE("cuda emulated: a repeated call finds its descriptors on the device and gives the same results",
          "[cuda]") {
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(emulated_policy<default_tuning>{});
}

namespace {

/// The launches an experimental warp_only tuning has made so far (counted in emulated_memory).
template <class Tuning>
std::size_t launches_of() {
  const emulated_memory& mem = emulated_memory::for_this_thread();
  if (Tuning::work == fevo::cuda::schedule::staged) return mem.staged_launches;
  if (Tuning::work == fevo::cuda::schedule::work_queue) return mem.queue_launches;
  return mem.warp_only_launches;
}

/// A warp_only tuning (Base: experimental::lean, work_queue or staged) serves passes of warp-mode
/// filters (packed ones only, for staged), with each sharing: every dtype through
/// compare-and-advance against fevo::seq, one launch of it per call; the default kernel's exact
/// bits (with a warp per filter, as the same sharing); and a pass with a filter larger than a
/// warp's bitset runs with default_tuning.
template <class Base>
void check_warp_only() {
  constexpr bool staged = Base::work == fevo::cuda::schedule::staged;
  const auto shapes = staged ? fevo_test::packed_warp_mode_shapes() : fevo_test::warp_mode_shapes();
  const auto with = [&](auto sharing_tag) {
    constexpr sharing S = decltype(sharing_tag)::value;
    using tuning = with_sharing<Base, S>;
    INFO("sharing " << name_of(S));
    std::size_t before = launches_of<tuning>();
    fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(emulated_policy<tuning>{3}, shapes);
    CHECK(launches_of<tuning>() - before == 4);
    if (S == sharing::automatic) return;
    for (const unsigned blocks : {1u, 3u, 7u}) {
      INFO(blocks << " blocks");
      before = launches_of<tuning>();
      const std::size_t calls = fevo_test::check_same_bits<fevo_test::emulated_env>(
          emulated_policy<tuning>{blocks},
          emulated_policy<with_sharing<fevo_test::blocks_from<SIZE_MAX>, S>>{blocks},
          staged ? fevo_test::packed_bits_shapes() : fevo_test::same_bits_shapes());
      CHECK(launches_of<tuning>() - before == calls);
    }
  };
  with(std::integral_constant<sharing, sharing::automatic>{});
  with(std::integral_constant<sharing, sharing::always>{});
  with(std::integral_constant<sharing, sharing::never>{});
  // A filter larger than a warp's bitset: the pass runs with default_tuning.
  fevo_test::rng g = fevo_test::rng_for("warp_only fallback");
  const fevo_test::float_model<fevo_test::emulated_env> big(g, {{4, 16, 3, 3}, {2, 4000, 3, 3}}, 3);
  const std::size_t before = launches_of<Base>(), all = emulated_memory::for_this_thread().launches;
  fevo_test::check_like(fevo::compute_layers(emulated_policy<Base>{3}, big.device, 1e-3),
                        fevo::compute_layers(fevo::seq, big.host, 1e-3));
  CHECK(launches_of<Base>() == before);
  CHECK(emulated_memory::for_this_thread().launches == all + 1);
}

/// The `n` layers of the float descriptor table the last call uploaded, in the table's order.
std::vector<fevo::cuda::detail::layer_desc<float>> table_descs(std::size_t n) {
  using desc = fevo::cuda::detail::layer_desc<float>;
  const fevo::cuda::detail::uploaded_table& t = emulated_memory::for_this_thread().table;
  REQUIRE(t.bytes.size() >= n * sizeof(desc));
  std::vector<desc> descs(n);
  for (std::size_t k = 0; k < n; ++k) std::memcpy(&descs[k], t.bytes.data() + k * sizeof(desc), sizeof(desc));
  return descs;
}

/// The unit (the weights of the filters a warp folds at once) of each of the `n` layers in the
/// float descriptor table the last call uploaded, in the table's order.
std::vector<std::size_t> table_units(std::size_t n) {
  std::vector<std::size_t> units;
  for (const auto& d : table_descs(n)) units.push_back(d.ext[1] * d.ext[2] * d.ext[3] * std::size_t(32 / d.group));
  return units;
}

/// Collects the addresses of the kernels' L2 prefetch hints while it lives.
struct prefetch_log {
  std::vector<const void*> hinted;
  prefetch_log() { simt_prefetched = &hinted; }
  ~prefetch_log() { simt_prefetched = nullptr; }
  prefetch_log(const prefetch_log&) = delete;
  prefetch_log& operator=(const prefetch_log&) = delete;
};

}  // namespace

TEST_CASE("cuda emulated: experimental::lean serves passes of warp-mode filters, with the default kernel's bits",
          "[cuda]") {
  check_warp_only<experimental::lean>();
}

TEST_CASE("cuda emulated: experimental::work_queue serves passes of warp-mode filters, largest units first, with "
          "the default kernel's bits",
          "[cuda]") {
  check_warp_only<experimental::work_queue>();
  // The table's layers in the order of their units.
  const auto ordered = [](auto pol) {
    fevo_test::rng g = fevo_test::rng_for("work queue order");
    const fevo_test::float_model<fevo_test::emulated_env> model(
        g, {{3, 2, 1, 1}, {4, 16, 3, 3}, {6, 8, 1, 1}, {2, 100, 3, 3}, {5, 16, 3, 3}}, 3);
    fevo_test::check_like(fevo::compute_layers(pol, model.device, 1e-3),
                          fevo::compute_layers(fevo::seq, model.host, 1e-3));
    const std::vector<std::size_t> units = table_units(5);
    CHECK(std::is_sorted(units.rbegin(), units.rend()));
    CHECK(units.front() == 900);
  };
  ordered(emulated_policy<with_sharing<experimental::work_queue, sharing::always>>{});
  ordered(emulated_policy<with_sharing<experimental::work_queue, sharing::never>>{});
  // A repeated call finds its table (and the queue set back to zero by the merge launch).
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(emulated_policy<experimental::work_queue>{});
}

TEST_CASE("cuda emulated: experimental::staged serves the work queue's passes of packed filters, with the "
          "default kernel's bits",
          "[cuda]") {
  check_warp_only<experimental::staged>();
  emulated_memory& mem = emulated_memory::for_this_thread();
  fevo_test::rng g = fevo_test::rng_for("staged copies");
  // A device without the shared memory it needs: the pass runs with default_tuning.
  const fevo_test::float_model<fevo_test::emulated_env> packed(g, {{9, 16, 3, 3}, {40, 64, 1, 1}, {3, 8, 7, 7}}, 3);
  const auto packed_ref = fevo::compute_layers(fevo::seq, packed.host, 1e-3);
  emulated_policy<experimental::staged> small{3};
  small.staged_fits = false;
  std::size_t queued = mem.queue_launches, all = mem.launches;
  fevo_test::check_like(fevo::compute_layers(small, packed.device, 1e-3), packed_ref);
  CHECK(mem.queue_launches == queued);
  CHECK(mem.launches == all + 1);
  // A layer that is not packed (3x3x3 floats: 27 weights, not whole vectors): default_tuning.
  const fevo_test::float_model<fevo_test::emulated_env> mixed(g, {{9, 16, 3, 3}, {5, 3, 3, 3}}, 3);
  queued = mem.queue_launches;
  const std::size_t warp_only = mem.warp_only_launches;
  fevo_test::check_like(fevo::compute_layers(emulated_policy<experimental::staged>{3}, mixed.device, 1e-3),
                        fevo::compute_layers(fevo::seq, mixed.host, 1e-3));
  CHECK(mem.queue_launches == queued);
  CHECK(mem.warp_only_launches == warp_only);
  // Repeated calls find their table on the device, with the queue the merge launch set back to
  // zero, and give the same bits; the four calls are the staged kernel's.
  const std::size_t staged = mem.staged_launches;
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(emulated_policy<experimental::staged>{2},
                                                           {{9, 16, 3, 3}, {40, 64, 1, 1}, {3, 8, 7, 7}});
  CHECK(mem.staged_launches == staged + 6);
}

TEST_CASE("cuda emulated: experimental::global_words, overlapped_merge and deep give results within the core's "
          "bounds, the first two the default kernel's bits",
          "[cuda]") {
  fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(emulated_policy<experimental::global_words>{});
  fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(emulated_policy<experimental::overlapped_merge>{});
  fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(emulated_policy<experimental::deep>{});
  for (const unsigned blocks : {1u, 3u}) {
    INFO(blocks << " blocks");
    fevo_test::check_same_bits<fevo_test::emulated_env>(emulated_policy<experimental::global_words>{blocks},
                                                        emulated_policy<default_tuning>{blocks});
    fevo_test::check_same_bits<fevo_test::emulated_env>(emulated_policy<experimental::overlapped_merge>{blocks},
                                                        emulated_policy<default_tuning>{blocks});
  }
}

TEST_CASE("cuda emulated: in a work-queue pass, the first round of loads of every unit past the grid's warps is "
          "prefetched",
          "[cuda]") {
  using fevo::cuda::detail::warps_per_block;
  constexpr std::size_t vectors = experimental::work_queue::vectors_per_thread;
  const auto check = [&](auto pol, bool always) {
    INFO("shared warps " << always << ", " << pol.blocks << " blocks");
    fevo_test::rng g = fevo_test::rng_for("work queue prefetch");
    const fevo_test::float_model<fevo_test::emulated_env> model(
        g, {{40, 16, 3, 3}, {24, 64, 1, 1}, {9, 8, 1, 1}, {3, 512, 3, 3}, {19, 3, 3, 3}}, 3);
    prefetch_log log;
    const std::size_t queued = emulated_memory::for_this_thread().queue_launches;
    fevo_test::check_like(fevo::compute_layers(pol, model.device, 1e-3),
                          fevo::compute_layers(fevo::seq, model.host, 1e-3));
    REQUIRE(emulated_memory::for_this_thread().queue_launches == queued + 1);
    const std::set<const void*> hinted(log.hinted.begin(), log.hinted.end());
    // Unit u of the table is the (u - first_item)-th share of 32 / p filters of its layer.
    const std::size_t warps = std::size_t(pol.blocks) * warps_per_block;
    std::size_t checked = 0;
    for (const auto& d : table_descs(5)) {
      const int p = always ? d.group : 32;
      const std::size_t per_unit = std::size_t(32 / p), units = (d.ext[0] + per_unit - 1) / per_unit;
      const std::size_t nv = d.ext[1] * d.ext[2] * d.ext[3] / 4, first_round = std::size_t(p) * vectors;
      for (std::size_t u = d.first_item; u < d.first_item + units; ++u) {
        if (u < warps || !d.packed) continue;
        for (std::size_t f = (u - d.first_item) * per_unit; f < d.ext[0] && f < (u - d.first_item + 1) * per_unit;
             ++f) {
          // One hint per 128-byte line of each snapshot: 8 vectors of 16 bytes.
          for (std::size_t v = 0; v < nv && v < first_round; v += 8) {
            INFO("unit " << u << ", filter " << f << " of a layer of " << d.ext[0] << ", vector " << v);
            CHECK(hinted.count(d.prev + f * d.sp[0] + 4 * v) == 1);
            CHECK(hinted.count(d.next + f * d.sn[0] + 4 * v) == 1);
            ++checked;
          }
        }
      }
    }
    CHECK(checked > 20);
  };
  for (const unsigned blocks : {1u, 2u}) {
    check(emulated_policy<with_sharing<experimental::work_queue, sharing::always>>{blocks}, true);
    check(emulated_policy<with_sharing<experimental::work_queue, sharing::never>>{blocks}, false);
  }
}
#endif  // FEVO_TEST_EMULATED_BACKEND
