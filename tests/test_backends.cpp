// The shared backend body run against fevo::seq and, when built, every fevo::cpu::par variant
// (fevo_test::host_backends in backends.hpp); then what only the CPU backend promises.
#include "backend_body.hpp"

#if defined(FEVO_TEST_HAVE_CPU)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

namespace {

std::string kernel_list() {
  std::string s;
  for (const auto i : fevo::cpu::detail::supported_isas()) s += std::string(s.empty() ? "" : ", ") + fevo::cpu::detail::isa_name(i);
  return s;
}

/// FEVO_TEST_CPU_KERNEL=generic|avx2|avx512 (ctest's cpu.kernel.* tests): every fevo::cpu call of
/// the run uses that kernel, forced before the first test case. Where this CPU cannot run it, the
/// run stops at once with exit status 77, which ctest reports as skipped (never as passed).
struct forced_kernel {
  std::unique_ptr<fevo::cpu::detail::isa_override> force;
  forced_kernel() {
    namespace d = fevo::cpu::detail;
    const char* e = std::getenv("FEVO_TEST_CPU_KERNEL");
    if (!e || !*e) return;
    for (const d::isa i : {d::isa::generic, d::isa::avx2, d::isa::avx512}) {
      if (std::strcmp(e, d::isa_name(i)) != 0) continue;
      const std::vector<d::isa> runs = d::supported_isas();
      if (std::find(runs.begin(), runs.end(), i) == runs.end()) {
        std::printf("FEVO_TEST_CPU_KERNEL=%s: this CPU (or this build) cannot run that kernel; it runs %s. "
                    "Skipped.\n", e, kernel_list().c_str());
        std::fflush(stdout);
        std::exit(77);
      }
      force = std::make_unique<d::isa_override>(i);
      std::printf("FEVO_TEST_CPU_KERNEL=%s: every fevo::cpu call of this run uses that kernel\n", e);
      return;
    }
    std::fprintf(stderr, "FEVO_TEST_CPU_KERNEL must be generic, avx2 or avx512, not '%s'\n", e);
    std::exit(2);
  }
};
const forced_kernel forced_kernel_;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

/// Bitwise equality of everything two runs produced.
void check_identical(const fevo::layer_metrics& a, const fevo::layer_metrics& b) {
  CHECK(same_bits(a.D, b.D));
  CHECK(same_bits(a.totals.sum_sq, b.totals.sum_sq));
  CHECK(a.totals.changed == b.totals.changed);
  CHECK(a.totals.zero_channels == b.totals.zero_channels);
  CHECK(a.totals.nonfinite == b.totals.nonfinite);
  CHECK(a.S == b.S);
  CHECK(a.Z == b.Z);
}
void check_identical(const fevo::filter_results& a, const fevo::filter_results& b) {
  REQUIRE(a.size() == b.size());
  long long bad = -1;
  for (std::size_t i = 0; i < a.size() && bad < 0; ++i)
    if (!same_bits(a.D[i], b.D[i])) bad = (long long)i;
  CHECK(bad == -1);
  CHECK(a.changed == b.changed);
  CHECK(a.zero_channels == b.zero_channels);
  CHECK(a.nonfinite == b.nonfinite);
  CHECK(a.channel_changed == b.channel_changed);
}

}  // namespace

TEST_CASE("cpu::par: thread_count says how many threads a call runs on", "[cpu][threads]") {
#if defined(_OPENMP)
  CHECK(fevo::cpu::par.threads(3).thread_count() == 3);
  CHECK(fevo::cpu::par.threads(1).thread_count() == 1);
  CHECK(fevo::cpu::par.thread_count() == omp_get_max_threads());
#else  // (config.cpu_without_openmp_warns: such a build is told at compile time)
  CHECK(fevo::cpu::par.threads(3).thread_count() == 1);
#endif
}

// cpu.hpp: "each filter's totals are kept and summed per layer in filter order afterwards, so the
// results do not depend on the number of threads". Layers of several 64K-weight blocks each.
TEST_CASE("cpu::par: results are bitwise the same for any number of threads", "[cpu][threads]") {
  using namespace fevo_test;
  const backend_scope<cpu_par_backend> scope_;
  rng g = rng_for("cpu threads");
  INFO("seed=" << seed());
  using L = layout;
  const struct {
    shape s;
    layout prev, next;
  } specs[] = {{{300, 64, 3, 3}, L::oihw, L::oihw},        // 173K weights, 3 blocks of 113 filters
               {{40, 3, 70, 70}, L::hwio, L::padded},      // channels longer than a run
               {{2000, 40, 1, 1}, L::gapped, L::sliced_oihw},
               {{3, 9000, 3, 3}, L::oihw, L::ohwi},        // one filter per block
               {{1100, 70, 3, 3}, L::hwio, L::hwio},       // lanes: blocks of filters per thread
               {{130, 40, 1, 1}, L::sliced_hwio, L::hwio},  // lanes: groups, whole vectors, a rest
               {{300, 500, 3, 3}, L::hwio, L::hwio}};       // lanes: two segments of channels
  for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    std::vector<layer<T>> prevs, nexts;
    std::vector<fevo::layer_pair<T>> pairs;
    for (const auto& sp : specs) {
      prevs.push_back(make_layer<T>(sp.s, sp.prev));
      nexts.push_back(make_layer<T>(sp.s, sp.next));
      fill_changes(prevs.back(), nexts.back(), 0.25, g);
    }
    for (std::size_t k = 0; k < prevs.size(); ++k)
      pairs.push_back({"", prevs[k].cview(), nexts[k].cview()});

    for (std::size_t k = 0; k < pairs.size(); ++k) {
      INFO(type_name<T>() << ", layer " << specs[k].s);
      fevo::filter_results per1;
      const auto one = fevo::compute(fevo::cpu::par.threads(1), pairs[k].prev, pairs[k].next, 0.25,
                                     per1, fevo::with_channel_counts);
      check_metrics(one, reference_of(pairs[k].prev, pairs[k].next, 0.25));
      for (const int threads : {2, 3, 4, 7, 16}) {
        INFO("threads(" << threads << ") against threads(1)");
        fevo::filter_results per;
        const auto m = fevo::compute(fevo::cpu::par.threads(threads), pairs[k].prev, pairs[k].next,
                                     0.25, per, fevo::with_channel_counts);
        check_identical(m, one);
        check_identical(per, per1);
        check_identical(fevo::compute(fevo::cpu::par.threads(threads), pairs[k].prev, pairs[k].next, 0.25), one);
      }
      INFO("default threads against threads(1)");
      check_identical(fevo::compute(fevo::cpu::par, pairs[k].prev, pairs[k].next, 0.25), one);
    }

    // compute_layers splits all layers' filters into one set of blocks; each layer's result is
    // still its filters summed in order, so it is bitwise the result of compute on that layer.
    for (const int threads : {1, 2, 5}) {
      INFO(type_name<T>() << ", compute_layers with threads(" << threads << ")");
      std::vector<fevo::filter_results> per;
      const auto all = fevo::compute_layers(fevo::cpu::par.threads(threads), pairs, 0.25, &per);
      REQUIRE(all.size() == pairs.size());
      for (std::size_t k = 0; k < pairs.size(); ++k) {
        INFO("layer " << specs[k].s);
        fevo::filter_results one_per;
        const auto one = fevo::compute(fevo::cpu::par.threads(1), pairs[k].prev, pairs[k].next, 0.25, one_per);
        check_identical(all[k], one);
        check_identical(per[k], one_per);
      }
    }
  });
}

// cpu.hpp interleaves the blocks of tasks that share a buffer (a snapshot series); the order of
// blocks must change nothing: every pair is bitwise what compute gives on that pair alone.
TEST_CASE("cpu::par: a snapshot series in one call is bitwise each pair alone", "[cpu][series]") {
  using namespace fevo_test;
  const backend_scope<cpu_par_backend> scope_;
  rng g = rng_for("cpu series");
  INFO("seed=" << seed());
  const shape s{300, 64, 3, 3};  // 3 blocks per task
  std::vector<layer<float>> snaps;
  for (int k = 0; k < 5; ++k) snaps.push_back(make_layer<float>(s, layout::oihw));
  for (int k = 0; k + 1 < 5; ++k) {
    layer<float> scratch = make_layer<float>(s, layout::oihw);
    fill_changes(k == 0 ? snaps[0] : scratch, snaps[std::size_t(k) + 1], 0.25, g);
  }
  std::vector<fevo::layer_pair<float>> pairs;
  for (std::size_t k = 1; k < snaps.size(); ++k) pairs.push_back({"", snaps[k - 1].cview(), snaps[k].cview()});
  for (std::size_t k = 2; k < snaps.size(); ++k) pairs.push_back({"", snaps[0].cview(), snaps[k].cview()});
  for (const int threads : {1, 2, 5}) {
    INFO("threads(" << threads << ")");
    std::vector<fevo::filter_results> per;
    const auto all = fevo::compute_layers(fevo::cpu::par.threads(threads), pairs, 0.25, &per);
    for (std::size_t q = 0; q < pairs.size(); ++q) {
      INFO("pair " << q);
      fevo::filter_results one_per;
      const auto one = fevo::compute(fevo::cpu::par.threads(1), pairs[q].prev, pairs[q].next, 0.25, one_per);
      check_identical(all[q], one);
      check_identical(per[q], one_per);
    }
  }
}

TEST_CASE("cpu::par: blocks of tasks that share a buffer are interleaved, others keep their order",
          "[cpu][series]") {
  struct view {
    const float* p;
    const float* data_handle() const { return p; }
  };
  struct task {
    view prev, next;
  };
  struct block {
    std::size_t task, first, count, segment;
  };
  float a[1], b[1], c[1], x[1], y[1];
  // Tasks 0, 2 and 3 share buffers (a-b, b-c, a-c); task 1 (x-y) shares nothing.
  const task tasks[] = {{{a}, {b}}, {{x}, {y}}, {{b}, {c}}, {{a}, {c}}};
  std::vector<block> blocks;
  for (std::size_t t = 0; t < 4; ++t)
    for (std::size_t f = 0; f < 3; ++f) blocks.push_back({t, 10 * f, 10, 0});
  fevo::cpu::detail::interleave_shared(tasks, 4, blocks);
  std::vector<std::pair<std::size_t, std::size_t>> order;
  for (const auto& bl : blocks) order.emplace_back(bl.task, bl.first);
  const std::vector<std::pair<std::size_t, std::size_t>> want{
      {0, 0}, {2, 0}, {3, 0}, {0, 10}, {2, 10}, {3, 10}, {0, 20}, {2, 20}, {3, 20},
      {1, 0}, {1, 10}, {1, 20}};
  CHECK(order == want);

  // Nothing shared: the order is untouched.
  const task apart[] = {{{a}, {b}}, {{x}, {y}}};
  std::vector<block> kept{{1, 0, 5, 0}, {0, 0, 5, 0}, {0, 5, 5, 0}};
  fevo::cpu::detail::interleave_shared(apart, 2, kept);
  CHECK((kept[0].task == 1 && kept[1].task == 0 && kept[1].first == 0 && kept[2].first == 5));
}

// ---- the kernels of each instruction set (cpu/isa.hpp) --------------------------------------------

namespace {

/// D of two kernels: each is within D_relative_error of the exact sum, so within twice that of
/// each other; NaN and infinities must agree.
bool d_agrees(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= 2 * fevo::cpu::D_relative_error * std::max(std::fabs(a), std::fabs(b));
}

struct kernel_run {
  fevo::layer_metrics m;
  fevo::filter_results per;
};

template <class T>
kernel_run run_kernel(fevo::cpu::detail::isa i, const fevo::filter_view<const T>& p,
                      const fevo::filter_view<const T>& n, double tau, int threads) {
  const fevo::cpu::detail::isa_override force(i);
  kernel_run r;
  r.m = fevo::compute(fevo::cpu::par.threads(threads), p, n, tau, r.per, fevo::with_channel_counts);
  return r;
}

/// Every count of `got` equals the generic kernel's, and every D agrees within the bound.
void check_same_as_generic(const kernel_run& got, const kernel_run& generic) {
  CHECK(got.m.totals.changed == generic.m.totals.changed);
  CHECK(got.m.totals.zero_channels == generic.m.totals.zero_channels);
  CHECK(got.m.totals.nonfinite == generic.m.totals.nonfinite);
  CHECK(got.m.totals.weights == generic.m.totals.weights);
  CHECK(got.m.totals.channels == generic.m.totals.channels);
  CHECK(d_agrees(got.m.D, generic.m.D));
  CHECK(got.per.changed == generic.per.changed);
  CHECK(got.per.zero_channels == generic.per.zero_channels);
  CHECK(got.per.nonfinite == generic.per.nonfinite);
  CHECK(got.per.channel_changed == generic.per.channel_changed);
  long long bad = -1;
  for (std::size_t i = 0; i < got.per.size() && bad < 0; ++i)
    if (!d_agrees(got.per.D[i], generic.per.D[i])) bad = (long long)i;
  INFO("first filter whose D disagrees: " << bad);
  CHECK(bad == -1);
}

}  // namespace

TEST_CASE("cpu::par: every kernel this CPU supports gives the generic kernel's counts", "[cpu][isa]") {
  using namespace fevo_test;
  const backend_scope<cpu_par_backend> scope_;
  rng g = rng_for("cpu kernels");
  INFO("seed=" << seed() << "; kernels this CPU supports: " << kernel_list() << " (best "
               << fevo::cpu::detail::isa_name(fevo::cpu::detail::best_isa()) << ")");
  // Tell the log which kernels this run could not reach (a CPU without AVX-512 or AVX2).
  if (fevo::cpu::detail::supported_isas().size() < (FEVO_CPU_X86_DISPATCH ? 3u : 1u))
    WARN("this CPU supports only the kernels " << kernel_list() << "; the others are not tested here");
  using L = layout;
  // One layout pair per walk: packed (OIHW), lanes (HWIO, sliced HWIO), rows (padded), general.
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::hwio, L::hwio}, {L::sliced_hwio, L::hwio},
                               {L::padded, L::padded}, {L::hwio, L::ohwi}};
  // Filters 1..70 (lanes: whole groups of 64, 1-3 whole vectors and a padded rest), channel
  // sizes 1x1 .. 7x7 and longer than a run, several 64-weight steps and tails.
  const shape shapes[] = {{70, 9, 3, 3}, {33, 64, 1, 1}, {17, 3, 7, 7}, {64, 65, 3, 3},
                          {5, 520, 3, 3}, {2, 2, 70, 70}, {48, 5, 1, 1}, {1, 3, 3, 3}};
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        const double tau = pick_tau(g);
        auto prev = make_layer<T>(s, lp.prev);
        auto next = make_layer<T>(s, lp.next);
        fill_changes(prev, next, tau, g);
        if (g.chance(0.3)) {  // a non-finite change in some layers
          next(g.below(s.N), g.below(s.C), g.below(s.H), g.below(s.W)) = make<T>(std::numeric_limits<double>::infinity());
        }
        INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
               << ", tau = " << tau);
        const reference ref = reference_of(prev.cview(), next.cview(), tau);
        const kernel_run generic = run_kernel(fevo::cpu::detail::isa::generic, prev.cview(), next.cview(), tau, 2);
        check_metrics(generic.m, ref);
        check_per_filter(generic.per, ref, true);
        for (const auto i : fevo::cpu::detail::supported_isas()) {
          INFO("kernel " << fevo::cpu::detail::isa_name(i));
          for (const int threads : {1, 2}) {
            const kernel_run k = run_kernel(i, prev.cview(), next.cview(), tau, threads);
            check_same_as_generic(k, generic);
            check_metrics(k.m, ref);
            check_per_filter(k.per, ref, true);
          }
        }
      });
}

namespace {

/// A change whose square overflows float, finite in the element type T.
template <class T>
constexpr double huge_change() {
  return std::is_same_v<T, fevo::half> ? 65504.0 : std::is_same_v<T, double> ? 1e150 : 1e30;
}
/// An exponent of T at which changes (2^e and below) have float squares that underflow.
template <class T>
constexpr int tiny_exponent() {
  return std::is_same_v<T, fevo::half> ? -20 : std::is_same_v<T, double> ? -510 : -70;
}

}  // namespace

TEST_CASE("cpu::par: NaN, infinities, huge and tiny changes on the lanes walk (HWIO)", "[cpu][isa]") {
  using namespace fevo_test;
  const backend_scope<cpu_par_backend> scope_;
  rng g = rng_for("cpu lanes special");
  INFO("seed=" << seed());
  using L = layout;
  const layout_pair pairs[] = {{L::hwio, L::hwio}, {L::sliced_hwio, L::hwio}};
  const shape shapes[] = {{70, 5, 3, 3}, {19, 33, 1, 1}, {4, 3, 7, 7}};
  const double inf = std::numeric_limits<double>::infinity();
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        const double big = huge_change<T>();
        const int tiny = tiny_exponent<T>();
        for (int kind = 0; kind < 4; ++kind) {
          auto prev = make_layer<T>(s, lp.prev);
          auto next = make_layer<T>(s, lp.next);
          fill_changes(prev, next, 0.25, g);
          // Filter 0: one NaN (kind 0), one infinity (1), one huge change (2); kind 3: every filter
          // but the last changes by tiny amounts only, whose float squares underflow.
          const std::size_t i = g.below(s.N), c = g.below(s.C), h = g.below(s.H), w = g.below(s.W);
          if (kind == 0) next(i, c, h, w) = make<T>(std::nan(""));
          if (kind == 1) prev(i, c, h, w) = make<T>(-inf);
          if (kind == 2) prev(i, c, h, w) = make<T>(0.0), next(i, c, h, w) = make<T>(big);
          if (kind == 3)
            for_each_index(prev.view, [&](std::size_t a, std::size_t b, std::size_t y, std::size_t x) {
              if (a + 1 == s.N) return;
              prev(a, b, y, x) = make<T>(0.0);
              next(a, b, y, x) = make<T>(g.chance(0.3) ? 0.0 : g.sign() * std::ldexp(1.0, tiny - int(g.below(8))));
            });
          INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
                 << ", case " << (kind == 0 ? "NaN" : kind == 1 ? "-Inf" : kind == 2 ? "huge" : "tiny"));
          const reference ref = reference_of(prev.cview(), next.cview(), 0.25);
          for (const auto isa : fevo::cpu::detail::supported_isas()) {
            INFO("kernel " << fevo::cpu::detail::isa_name(isa));
            const kernel_run k = run_kernel(isa, prev.cview(), next.cview(), 0.25, 2);
            check_metrics(k.m, ref);
            check_per_filter(k.per, ref, true);
            if (kind == 2) CHECK(std::isfinite(k.m.D));
            if (kind == 3) CHECK(k.per.D[0] > 0.0);
          }
        }
      });
}

TEST_CASE("cpu::par: filters of 1 to 64 weights, with NaN, infinities, huge and tiny changes next to them",
          "[cpu][isa]") {
  using namespace fevo_test;
  const backend_scope<cpu_par_backend> scope_;
  rng g = rng_for("cpu small filters");
  INFO("seed=" << seed());
  using L = layout;
  // OIHW: contiguous filters, whose last vector reads on into the next filter's weights and must
  // keep only its own; sliced and gapped: filters apart, read with masked loads.
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::sliced_oihw, L::oihw}, {L::oihw, L::gapped}};
  const double inf = std::numeric_limits<double>::infinity();
  for (std::size_t len = 1; len <= 64; ++len) {
    std::vector<shape> shapes{{9, len, 1, 1}};
    if (len % 9 == 0) shapes.push_back({5, len / 9, 3, 3});
    if (len % 4 == 0) shapes.push_back({6, len / 4, 2, 2});
    for (const shape& s : shapes)
      for (const layout_pair lp : pairs)
        for_each_element_type([&](auto tg) {
          using T = typename decltype(tg)::type;
          const double big = huge_change<T>();
          const int tiny = tiny_exponent<T>();
          for (int kind = 0; kind < 4; ++kind) {
            auto prev = make_layer<T>(s, lp.prev);
            auto next = make_layer<T>(s, lp.next);
            fill_changes(prev, next, 0.25, g);
            // The first weight of a filter after the first (in the last vector of the filter
            // before it): NaN (kind 0), -Inf (1), a huge change (2); kind 3: every filter but that
            // one changes by tiny amounts only, whose float squares underflow.
            const std::size_t i = 1 + g.below(s.N - 1);
            if (kind == 0) next(i, 0, 0, 0) = make<T>(std::nan(""));
            if (kind == 1) prev(i, 0, 0, 0) = make<T>(-inf);
            if (kind == 2) prev(i, 0, 0, 0) = make<T>(0.0), next(i, 0, 0, 0) = make<T>(big);
            if (kind == 3)
              for_each_index(prev.view, [&](std::size_t a, std::size_t b, std::size_t y, std::size_t x) {
                if (a == i) return;
                prev(a, b, y, x) = make<T>(0.0);
                next(a, b, y, x) = make<T>(g.chance(0.3) ? 0.0 : g.sign() * std::ldexp(1.0, tiny - int(g.below(8))));
              });
            INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
                   << ", filter " << i << ", case " << (kind == 0 ? "NaN" : kind == 1 ? "-Inf" : kind == 2 ? "huge" : "tiny"));
            const reference ref = reference_of(prev.cview(), next.cview(), 0.25);
            for (const auto isa : fevo::cpu::detail::supported_isas()) {
              INFO("kernel " << fevo::cpu::detail::isa_name(isa));
              const kernel_run k = run_kernel(isa, prev.cview(), next.cview(), 0.25, 1);
              check_metrics(k.m, ref);
              check_per_filter(k.per, ref, true);
              CHECK(k.per.nonfinite[i - 1] == 0);
              if (kind == 3 && ref.D[i - 1] > 0) CHECK(k.per.D[i - 1] > 0.0);
            }
          }
        });
  }
}

TEST_CASE("cpu::instruction_set names the kernel evaluate runs", "[cpu][isa]") {
  namespace d = fevo::cpu::detail;
  const std::string best = d::isa_name(d::best_isa()), running = fevo::cpu::instruction_set();
  CHECK(running == (forced_kernel_.force ? d::isa_name(d::active_isa()) : best));
  CHECK(d::supported_isas().front() == d::isa::generic);
  CHECK(d::supported_isas().back() == d::best_isa());
#if FEVO_CPU_X86_DISPATCH
  // What cpuid says, checked against the compiler's own view of this CPU.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2"))
    CHECK(best == "avx512");
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    CHECK(best == "avx2");
  if (!__builtin_cpu_supports("avx2")) CHECK(best == "generic");
#else
  CHECK(best == "generic");
#endif
  {
    const d::isa_override force(d::isa::generic);
    CHECK(std::string(fevo::cpu::instruction_set()) == "generic");
  }
  CHECK(std::string(fevo::cpu::instruction_set()) == running);
}

#endif  // FEVO_TEST_HAVE_CPU
