// fevo::cuda's host side and kernels, run on the host SIMT emulator (simt/simt.hpp) in every build:
// the shared backend body and the compare-and-advance cases, with the same descriptor table,
// scratch layout and kernels a GPU runs. Buffers are allocated at their exact size, so under
// AddressSanitizer any read or write a kernel makes outside them fails the test.
#include "simt/simt.hpp"

#include <fevo/cuda/pass.hpp>

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

/// How an emulated call runs: the block-mode threshold of fevo::cuda::policy, and the most
/// blocks one pass launches (few: the blocks' grid-stride loops then take many items each).
struct emulated_policy {
  std::size_t block_from = 16384;
  unsigned blocks = 3;
  bool one_launch = false;   ///< as fevo::cuda::policy::single_launch()
  /// as fevo::cuda::policy::warp_sharing() (the default: automatic)
  fevo::cuda::detail::sharing share_warps = fevo::cuda::detail::sharing::automatic;
  bool lean = false;   ///< as fevo::cuda::policy::lean_kernel()
  bool queue = false;  ///< as fevo::cuda::policy::work_queue()
  bool staged = false;  ///< as fevo::cuda::policy::staged_copies()
  /// false: the device has too little shared memory for the staged kernel (max_blocks says 0)
  bool staged_fits = true;
  bool autotune = false;  ///< as fevo::cuda::policy::autotune()
  fevo::cuda::detail::pass_options options() const {
    return {block_from, one_launch, share_warps, lean, queue, staged, autotune};
  }
};

/// The device memory of one host thread's emulated calls: the scratch stays from call to call
/// (as fevo::cuda's does) while its size stays the same, so that a repeated call finds its
/// descriptor table there; everything past the table is refilled with garbage each call.
struct emulated_memory {
  std::unique_ptr<char, void (*)(void*)> scratch{nullptr, std::free};
  std::size_t scratch_size = 0;
  fevo::cuda::detail::uploaded_table table;
  std::size_t uploads = 0;  ///< descriptor uploads so far
  std::size_t shared_launches = 0;  ///< launches of the shared-warp kernel so far
  std::size_t lean_launches = 0;    ///< launches of the lean kernel so far
  std::size_t queue_launches = 0;   ///< of which with a work queue (the queued or staged kernel)
  std::size_t staged_launches = 0;  ///< of which the staged kernel
  /// autotune()'s measurements, and the device times the emulator reports for each kernel kind
  /// (milliseconds; first_extra[k] more for kind k's first timed pass, as a GPU's first launch of
  /// a kernel, which loads its module, takes longer); `timed`: the timed passes so far, of each kind.
  fevo::cuda::detail::tuning_table tuning;
  std::array<float, 4> kernel_ms{1, 1, 1, 1};
  std::array<float, 4> first_extra{};
  std::array<std::size_t, 4> timed{};
  fevo::cuda::detail::kernel_kind last_kind = fevo::cuda::detail::kernel_kind::full;
  bool timing = false;  ///< between time_start and time_stop
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
  template <class T, bool Advance, bool Shared, fevo::cuda::detail::kernel_kind Kind>
  std::size_t max_blocks() {
    return Kind == fevo::cuda::detail::kernel_kind::staged && !staged_fits ? 0 : blocks;
  }
  void upload(void* dst, const void* src, std::size_t bytes) {
    std::memcpy(dst, src, bytes);
    ++emulated_memory::for_this_thread().uploads;
  }
  void download(void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); }
  template <class T, bool Advance, bool Shared, fevo::cuda::detail::kernel_kind Kind>
  void fold(const fevo::cuda::detail::pass_args<T>& a) {
    using namespace fevo::cuda::detail;
    if (Shared) ++emulated_memory::for_this_thread().shared_launches;
    if (Kind != kernel_kind::full) ++emulated_memory::for_this_thread().lean_launches;
    if (Kind == kernel_kind::queued || Kind == kernel_kind::staged) ++emulated_memory::for_this_thread().queue_launches;
    if (Kind == kernel_kind::staged) ++emulated_memory::for_this_thread().staged_launches;
    emulated_memory::for_this_thread().last_kind = Kind;
    simt::launch(
        a.grid, block_threads,
        [&] {
          fold_filters<T, Advance, Shared, Kind>(a.layers, a.n_layers, a.n_items, a.n_filters, a.filters, a.r,
                                                 a.totals, a.done, a.queue);
        },
        dynamic_shared_bytes(Kind));
    ++launches;
    if (a.done) return;
    simt::launch(unsigned(a.n_layers), block_threads,
                 [&] { reduce_layers<T>(a.layers, a.n_layers, a.n_filters, a.filters, a.totals, a.queue); });
    ++launches;
  }
  void finish() {}
  fevo::cuda::detail::tuning_table& tuning() { return emulated_memory::for_this_thread().tuning; }
  void time_start() {
    emulated_memory& mem = emulated_memory::for_this_thread();
    REQUIRE_FALSE(mem.timing);
    mem.timing = true;
  }
  void time_stop() {
    emulated_memory& mem = emulated_memory::for_this_thread();
    REQUIRE(mem.timing);
    mem.timing = false;
  }
  /// The emulator's time of the pass's kernel: kernel_ms of its kind (plus first_extra the first
  /// time it is timed).
  float time_read() {
    emulated_memory& mem = emulated_memory::for_this_thread();
    REQUIRE_FALSE(mem.timing);
    const std::size_t k = std::size_t(mem.last_kind);
    return mem.kernel_ms[k] + (mem.timed[k]++ == 0 ? mem.first_extra[k] : 0.f);
  }
};

/// fevo::compute & co. reach this by argument-dependent lookup on emulated_policy.
template <class T>
void evaluate(const emulated_policy& pol, fevo::layer_task<T, fevo::device_space>* tasks, std::size_t n) {
  emulated_device dev{pol.blocks, pol.staged_fits};
  fevo::cuda::detail::run_pass<T, false>(dev, pol.options(), tasks, n, nullptr);
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

struct emulated_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, 3 blocks)";
  static auto policy() { return emulated_policy{}; }
};
/// One launch: each layer's totals merged by the block that finishes the layer.
struct emulated_one_launch_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, one launch, 3 blocks)";
  static auto policy() { return emulated_policy{16384, 3, true}; }
};
/// One block takes every item: every layer is merged by it, each one item after its last. A
/// warp to every filter, never shared.
struct emulated_warp_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, warp per filter, one launch, 1 block)";
  static auto policy() { return emulated_policy{SIZE_MAX, 1, true, fevo::cuda::detail::sharing::never}; }
};
/// Block mode from 64 weights (fewer than a block's threads): every filter in block mode would
/// make the body five times slower here, and the smallest filters in block mode are in the
/// compare-and-advance cases below.
struct emulated_block_backend : emulated_upload {
  static constexpr const char* name =
      "fevo::cuda kernels (emulated, block per filter from 64 weights, one launch, 64 blocks)";
  static auto policy() { return emulated_policy{64, 64, true}; }
};

/// Small packed filters two or four to a warp, with idle groups past each layer's last filter.
struct emulated_shared_warp_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, shared warps, one launch, 3 blocks)";
  static auto policy() { return emulated_policy{16384, 3, true, fevo::cuda::detail::sharing::always}; }
};

/// The kernels a pass of warp-mode filters may take besides the default one.
enum class lean_kind { lean, queue, staged };

/// A warp per filter on `blocks` blocks, with the lean kernel, the work queue or staged copies.
inline emulated_policy lean_policy(lean_kind k, unsigned blocks = 3,
                                   fevo::cuda::detail::sharing s = fevo::cuda::detail::sharing::automatic,
                                   bool one_launch = false) {
  emulated_policy p{SIZE_MAX, blocks, one_launch, s};
  (k == lean_kind::lean ? p.lean : k == lean_kind::queue ? p.queue : p.staged) = true;
  return p;
}

/// A warp per filter, the lean kernel with a work queue: the emulator runs blocks one after
/// another, so the first block's warps take every unit and the others find the queue empty.
struct emulated_queue_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, work queue, warp per filter, 3 blocks)";
  static auto policy() { return lean_policy(lean_kind::queue); }
};

/// The staged kernel (policy::staged_copies()), a warp per filter: calls whose layers are all
/// packed take it (its asynchronous copies land only when waited for), the others the default
/// kernel, as on a GPU.
struct emulated_staged_backend : emulated_upload {
  static constexpr const char* name = "fevo::cuda kernels (emulated, staged copies, warp per filter, 3 blocks)";
  static auto policy() { return lean_policy(lean_kind::staged); }
};

using emulated_backends = std::tuple<emulated_backend, emulated_one_launch_backend, emulated_warp_backend,
                                     emulated_block_backend, emulated_shared_warp_backend, emulated_queue_backend,
                                     emulated_staged_backend>;
static_assert(std::tuple_size_v<emulated_backends> == 7,
              "tests/CMakeLists.txt runs the emulated backends in ctest parts by index: update it");

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
  template <class T>
  static std::vector<fevo::layer_metrics> advance(const emulated_policy& pol,
                                                  const std::vector<fevo::cuda::advance_pair<T>>& pairs,
                                                  double tau, std::vector<fevo::filter_results>* per,
                                                  std::size_t& launches) {
    emulated_device dev{pol.blocks, pol.staged_fits};
    auto m = fevo::cuda::detail::advance_layers(dev, pol.options(), pairs, tau, per);
    launches = dev.launches;
    return m;
  }
};

}  // namespace fevo_test

#define FEVO_TEST_BACKENDS ::fevo_test::emulated_backends
#include "backend_body.hpp"
#include "cuda_cases.hpp"

TEST_CASE("cuda emulated: compare_and_advance_layers on a mixed model, every mode and dtype", "[cuda]") {
  for (auto pol : {fevo_test::emulated_policy{}, fevo_test::emulated_policy{1, 5},
                   fevo_test::emulated_policy{SIZE_MAX, 2}, fevo_test::emulated_policy{16384, 4, true},
                   fevo_test::emulated_policy{1, 3, true}, fevo_test::emulated_policy{SIZE_MAX, 1, true},
                   fevo_test::emulated_policy{16384, 3, false, fevo::cuda::detail::sharing::always},
                   fevo_test::emulated_policy{SIZE_MAX, 2, true, fevo::cuda::detail::sharing::always},
                   fevo_test::emulated_policy{16384, 2, false, fevo::cuda::detail::sharing::never}}) {
    INFO("block_from " << pol.block_from << ", blocks " << pol.blocks << ", one launch " << pol.one_launch
                       << ", shared warps " << int(pol.share_warps) << " (0 automatic, 1 always, 2 never)");
    fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(pol);
  }
}

TEST_CASE("cuda emulated: compare_and_advance_layers refuses overlapping prev and next", "[cuda]") {
  std::vector<float> h(2 * 3 * 3 * 3 * 2, 1.f);
  fevo_test::emulated_env::buffer<float> d(h);
  auto first = fevo::oihw<fevo::device_space>(d.p, 2, 3, 3, 3);
  std::vector<fevo::cuda::advance_pair<float>> same{{"a", first, first}};
  std::size_t launches = 0;
  REQUIRE_THROWS_WITH(fevo_test::emulated_env::advance(fevo_test::emulated_policy{}, same, 0.1, nullptr, launches),
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

TEST_CASE("cuda emulated: shared warps give small packed filters 8 or 16 lanes", "[cuda]") {
  using fevo::cuda::detail::group_for;
  using fevo::cuda::detail::items_of;
  // Each lane takes at most two rounds of `unroll` vectors (4 by default: f32 up to 256 weights
  // with 8 lanes, 512 with 16).
  constexpr std::size_t u = fevo::cuda::detail::unroll;
  CHECK(group_for<float>(4) == 8);
  CHECK(group_for<float>(64 * u) == 8);
  CHECK(group_for<float>(64 * u + 4) == 16);
  CHECK(group_for<float>(128 * u) == 16);
  CHECK(group_for<float>(128 * u + 4) == 32);
  CHECK(group_for<fevo::bfloat16>(128 * u) == 8);
  CHECK(group_for<fevo::half>(256 * u) == 16);
  CHECK(group_for<fevo::half>(256 * u + 8) == 32);
  CHECK(group_for<double>(2) == 16);  // a 16-byte vector of f64 holds 2: words span 16 lanes
  CHECK(group_for<double>(64 * u) == 16);
  CHECK(group_for<double>(64 * u + 2) == 32);
  CHECK(items_of(33, false, 8) == 2);  // 32 filters per item of 8 warps
  CHECK(items_of(33, false, 16) == 3);
  CHECK(items_of(33, false) == 5);
  CHECK(items_of(33, true, 8) == 33);
}

TEST_CASE("cuda emulated: warps are shared by default where small filters hold an eighth of the weights",
          "[cuda]") {
  using fevo::cuda::detail::sharing;
  using fevo::cuda::detail::use_shared_warps;
  CHECK(use_shared_warps(sharing::automatic, 1, 8));
  CHECK_FALSE(use_shared_warps(sharing::automatic, 1, 9));
  CHECK(use_shared_warps(sharing::always, 1, 1000));
  CHECK_FALSE(use_shared_warps(sharing::always, 0, 1000));  // no layer would share: plain kernel
  CHECK_FALSE(use_shared_warps(sharing::never, 8, 8));
  // A 1x1 layer of 64-weight filters (8 lanes each) beside 8 filters of 3x3x512: 1024 of 37888
  // weights (2.7%) share, or 8192 of 45056 (18%).
  fevo_test::rng g = fevo_test::rng_for("automatic sharing");
  for (const std::size_t small : {std::size_t(16), std::size_t(128)}) {
    const fevo_test::float_model<fevo_test::emulated_env> model(g, {{small, 64, 1, 1}, {8, 512, 3, 3}}, 3);
    const auto& layers = model.device;
    const auto& host_layers = model.host;
    const auto ref = fevo::compute_layers(fevo::seq, host_layers, 1e-3);
    for (const sharing s : {sharing::automatic, sharing::always, sharing::never}) {
      INFO(small << " small filters, sharing " << int(s) << " (0 automatic, 1 always, 2 never)");
      std::size_t& shared = fevo_test::emulated_memory::for_this_thread().shared_launches;
      const std::size_t before = shared;
      const auto got = fevo::compute_layers(fevo_test::emulated_policy{16384, 4, false, s}, layers, 1e-3);
      const bool expect = s == sharing::always || (s == sharing::automatic && small == 128);
      CHECK(shared - before == (expect ? 1u : 0u));
      fevo_test::check_like(got, ref);
    }
  }
}

TEST_CASE("cuda emulated: a repeated call finds its descriptors on the device and gives the same results",
          "[cuda]") {
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(
      [](bool one_launch) { return fevo_test::emulated_policy{16384, 3, one_launch}; });
}

namespace {

using fevo::cuda::detail::sharing;
using fevo_test::emulated_policy;
using fevo_test::lean_kind;
using fevo_test::lean_policy;

const char* name_of(lean_kind k) {
  return k == lean_kind::lean ? "lean kernel" : k == lean_kind::queue ? "work queue" : "staged copies";
}

/// The lean kernel, the work-queue kernel or the staged kernel serves passes of warp-mode filters
/// (packed ones only, for the staged kernel): every dtype through compare-and-advance against
/// fevo::seq, one launch of it per call; the default kernel's exact bits; passes it cannot serve
/// take the default kernel.
void check_lean_kind(lean_kind kind) {
  fevo_test::emulated_memory& mem = fevo_test::emulated_memory::for_this_thread();
  const std::size_t& launched = kind == lean_kind::lean    ? mem.lean_launches
                                : kind == lean_kind::queue ? mem.queue_launches
                                                           : mem.staged_launches;
  const bool staged = kind == lean_kind::staged;
  const auto shapes = staged ? fevo_test::packed_warp_mode_shapes() : fevo_test::warp_mode_shapes();
  for (const sharing s : {sharing::automatic, sharing::always, sharing::never}) {
    INFO(name_of(kind) << ", sharing " << int(s) << " (0 automatic, 1 always, 2 never)");
    const std::size_t before = launched;
    fevo_test::check_advance_model_every_dtype<fevo_test::emulated_env>(lean_policy(kind, 3, s), shapes);
    CHECK(launched - before == 4);
  }
  for (const sharing s : {sharing::always, sharing::never}) {
    for (const unsigned blocks : {1u, 3u, 7u}) {
      INFO(name_of(kind) << ", sharing " << int(s) << ", " << blocks << " blocks");
      const std::size_t before = launched;
      const std::size_t calls = fevo_test::check_same_bits<fevo_test::emulated_env>(
          lean_policy(kind, blocks, s), emulated_policy{SIZE_MAX, blocks, false, s},
          staged ? fevo_test::packed_bits_shapes() : fevo_test::same_bits_shapes());
      CHECK(launched - before == calls);
    }
  }
  // Passes it cannot serve: a filter in block mode, a filter larger than a warp's bitset, or one
  // launch.
  fevo_test::rng g = fevo_test::rng_for(std::string(name_of(kind)) + " fallback");
  const fevo_test::float_model<fevo_test::emulated_env> big(g, {{4, 16, 3, 3}, {2, 4000, 3, 3}}, 3);
  const auto big_ref = fevo::compute_layers(fevo::seq, big.host, 1e-3);
  emulated_policy block = lean_policy(kind, 3, sharing::automatic);
  block.block_from = 64;
  for (const emulated_policy& pol :
       {block, lean_policy(kind, 3, sharing::automatic), lean_policy(kind, 3, sharing::automatic, true)}) {
    INFO(name_of(kind) << ", block_from " << pol.block_from << ", one launch " << pol.one_launch);
    const std::size_t lean = mem.lean_launches, queued = mem.queue_launches;
    fevo_test::check_like(fevo::compute_layers(pol, big.device, 1e-3), big_ref);
    CHECK(mem.lean_launches == lean);
    CHECK(mem.queue_launches == queued);
  }
}

/// The `n` layers of the float descriptor table the last call uploaded, in the table's order.
std::vector<fevo::cuda::detail::layer_desc<float>> table_descs(std::size_t n) {
  using desc = fevo::cuda::detail::layer_desc<float>;
  const fevo::cuda::detail::uploaded_table& t = fevo_test::emulated_memory::for_this_thread().table;
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

TEST_CASE("cuda emulated: the lean kernel serves passes of warp-mode filters, with the default kernel's bits",
          "[cuda]") {
  check_lean_kind(lean_kind::lean);
}

TEST_CASE("cuda emulated: a work queue serves the lean kernel's passes, largest units first, with the default "
          "kernel's bits",
          "[cuda]") {
  check_lean_kind(lean_kind::queue);
  // The table's layers in the order of their units.
  for (const sharing s : {sharing::always, sharing::never}) {
    INFO("sharing " << int(s));
    fevo_test::rng g = fevo_test::rng_for("work queue order");
    const fevo_test::float_model<fevo_test::emulated_env> model(
        g, {{3, 2, 1, 1}, {4, 16, 3, 3}, {6, 8, 1, 1}, {2, 100, 3, 3}, {5, 16, 3, 3}}, 3);
    fevo_test::check_like(fevo::compute_layers(lean_policy(lean_kind::queue, 3, s), model.device, 1e-3),
                          fevo::compute_layers(fevo::seq, model.host, 1e-3));
    const std::vector<std::size_t> units = table_units(5);
    CHECK(std::is_sorted(units.rbegin(), units.rend()));
    CHECK(units.front() == 900);
  }
  // A repeated call finds its table (and the queue set back to zero by the merge launch).
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(
      [](bool one_launch) { return lean_policy(lean_kind::queue, 3, sharing::automatic, one_launch); });
}

TEST_CASE("cuda emulated: staged copies serve the work queue's passes of packed filters, with the default "
          "kernel's bits",
          "[cuda]") {
  check_lean_kind(lean_kind::staged);
  fevo_test::emulated_memory& mem = fevo_test::emulated_memory::for_this_thread();
  fevo_test::rng g = fevo_test::rng_for("staged copies");
  // A device without the shared memory it needs: the work queue's kernel serves the pass.
  const fevo_test::float_model<fevo_test::emulated_env> packed(g, {{9, 16, 3, 3}, {40, 64, 1, 1}, {3, 8, 7, 7}}, 3);
  const auto packed_ref = fevo::compute_layers(fevo::seq, packed.host, 1e-3);
  emulated_policy small = lean_policy(lean_kind::staged, 3, sharing::automatic);
  small.staged_fits = false;
  std::size_t staged = mem.staged_launches, queued = mem.queue_launches;
  fevo_test::check_like(fevo::compute_layers(small, packed.device, 1e-3), packed_ref);
  CHECK(mem.staged_launches == staged);
  CHECK(mem.queue_launches == queued + 1);
  // A layer that is not packed (3x3x3 floats: 27 weights, not whole vectors): the default kernel.
  const fevo_test::float_model<fevo_test::emulated_env> mixed(g, {{9, 16, 3, 3}, {5, 3, 3, 3}}, 3);
  staged = mem.staged_launches;
  queued = mem.queue_launches;
  const std::size_t lean = mem.lean_launches;
  fevo_test::check_like(fevo::compute_layers(lean_policy(lean_kind::staged, 3, sharing::automatic), mixed.device, 1e-3),
                        fevo::compute_layers(fevo::seq, mixed.host, 1e-3));
  CHECK(mem.staged_launches == staged);
  CHECK(mem.queue_launches == queued);
  CHECK(mem.lean_launches == lean);
  // Repeated calls find their table on the device, with the queue the merge launch set back to
  // zero, and give the same bits; the six calls of two launches are the staged kernel's.
  staged = mem.staged_launches;
  fevo_test::check_repeated_calls<fevo_test::emulated_env>(
      [](bool one_launch) { return lean_policy(lean_kind::staged, 2, sharing::automatic, one_launch); },
      {{9, 16, 3, 3}, {40, 64, 1, 1}, {3, 8, 7, 7}});
  CHECK(mem.staged_launches == staged + 6);
}

TEST_CASE("cuda emulated: autotune times each kernel that can serve a shape, then launches the fastest, with the "
          "default kernel's bits",
          "[cuda]") {
  using fevo::cuda::detail::kernel_kind;
  using fevo::cuda::detail::last_pass_report;
  fevo_test::emulated_memory& mem = fevo_test::emulated_memory::for_this_thread();
  const auto start = [&](std::array<float, 4> ms, std::array<float, 4> first) {
    mem.tuning.clear();
    mem.timed = {};
    mem.kernel_ms = ms;
    mem.first_extra = first;
  };
  emulated_policy tuned{SIZE_MAX, 3};
  tuned.autotune = true;
  emulated_policy default_only = tuned;
  default_only.one_launch = true;
  const emulated_policy plain{SIZE_MAX, 3};
  {
    INFO("the work queue fastest; its first pass slow: the fastest of each kernel's passes decides");
    start({3, 2, 1, 4}, {0, 0, 100, 0});
    CHECK(fevo_test::check_autotune<fevo_test::emulated_env>(tuned, plain, default_only) == kernel_kind::queued);
    // 5 shapes, 3 passes each; the staged kernel only for the 3 whose layers are all packed.
    CHECK(mem.timed == std::array<std::size_t, 4>{15, 15, 15, 9});
  }
  {
    INFO("no shared memory for the staged kernel: three candidates");
    start({3, 1, 2, 0.5f}, {});
    emulated_policy small = tuned;
    small.staged_fits = false;
    emulated_policy small_default_only = default_only;
    small_default_only.staged_fits = false;
    CHECK(fevo_test::check_autotune<fevo_test::emulated_env>(small, plain, small_default_only) == kernel_kind::lean);
    CHECK(mem.timed[std::size_t(kernel_kind::staged)] == 0);
  }
  {
    INFO("ties: the default kernel");
    start({1, 1, 1, 1}, {});
    CHECK(fevo_test::check_autotune<fevo_test::emulated_env>(tuned, plain, default_only) == kernel_kind::full);
  }
  fevo_test::rng g = fevo_test::rng_for("autotune");
  const fevo_test::float_model<fevo_test::emulated_env> model(g, fevo_test::packed_bits_shapes(), 3);
  const auto ref = fevo::compute_layers(fevo::seq, model.host, 1e-3);
  {
    INFO("a kernel asked for is launched, not timed");
    start({3, 2, 1, 4}, {});
    for (lean_kind k : {lean_kind::lean, lean_kind::queue, lean_kind::staged}) {
      emulated_policy pol = lean_policy(k);
      pol.autotune = true;
      fevo_test::check_like(fevo::compute_layers(pol, model.device, 1e-3), ref);
      CHECK(last_pass_report().kernel == (k == lean_kind::lean    ? kernel_kind::lean
                                          : k == lean_kind::queue ? kernel_kind::queued
                                                                  : kernel_kind::staged));
      CHECK(last_pass_report().candidates == 1);
      CHECK_FALSE(last_pass_report().tuning);
    }
    CHECK(mem.timed == std::array<std::size_t, 4>{});
    CHECK(mem.tuning.empty());
  }
  {
    INFO("a pass with a filter in block mode: only the default kernel, not timed");
    emulated_policy block = tuned;
    block.block_from = 64;
    fevo_test::check_like(fevo::compute_layers(block, model.device, 1e-3), ref);
    CHECK(last_pass_report().kernel == kernel_kind::full);
    CHECK(last_pass_report().candidates == 1);
    CHECK(mem.timed == std::array<std::size_t, 4>{});
  }
  {
    INFO("a full table is forgotten, and the new shape tuned");
    start({3, 2, 1, 4}, {});
    for (std::size_t k = 0; k < fevo::cuda::detail::tuning_table_limit; ++k) mem.tuning["shape " + std::to_string(k)];
    fevo_test::check_like(fevo::compute_layers(tuned, model.device, 1e-3), ref);
    CHECK(mem.tuning.size() == 1);
    CHECK(last_pass_report().tuning);
    CHECK(last_pass_report().kernel == kernel_kind::full);
  }
  start({1, 1, 1, 1}, {});
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

TEST_CASE("cuda emulated: in a work-queue pass, the first round of loads of every unit past the grid's warps is "
          "prefetched",
          "[cuda]") {
  using fevo::cuda::detail::unroll;
  using fevo::cuda::detail::warps_per_block;
  for (const sharing s : {sharing::always, sharing::never}) {
    for (const unsigned blocks : {1u, 2u}) {
      INFO("sharing " << int(s) << " (1 always, 2 never), " << blocks << " blocks");
      fevo_test::rng g = fevo_test::rng_for("work queue prefetch");
      const fevo_test::float_model<fevo_test::emulated_env> model(
          g, {{40, 16, 3, 3}, {24, 64, 1, 1}, {9, 8, 1, 1}, {3, 512, 3, 3}, {19, 3, 3, 3}}, 3);
      prefetch_log log;
      const std::size_t queued = fevo_test::emulated_memory::for_this_thread().queue_launches;
      fevo_test::check_like(fevo::compute_layers(lean_policy(lean_kind::queue, blocks, s), model.device, 1e-3),
                            fevo::compute_layers(fevo::seq, model.host, 1e-3));
      REQUIRE(fevo_test::emulated_memory::for_this_thread().queue_launches == queued + 1);
      const std::set<const void*> hinted(log.hinted.begin(), log.hinted.end());
      // Unit u of the table is the (u - first_item)-th share of 32 / p filters of its layer.
      const std::size_t warps = std::size_t(blocks) * warps_per_block;
      std::size_t checked = 0;
      for (const auto& d : table_descs(5)) {
        const int p = s == sharing::always ? d.group : 32;
        const std::size_t per_unit = std::size_t(32 / p), units = (d.ext[0] + per_unit - 1) / per_unit;
        const std::size_t nv = d.ext[1] * d.ext[2] * d.ext[3] / 4, first_round = std::size_t(p) * unroll;
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
    }
  }
}
