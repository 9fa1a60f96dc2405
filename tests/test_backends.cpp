// The shared backend body run against fevo::seq and, when built, every fevo::cpu::par variant
// (fevo_test::host_backends in backends.hpp); then what only the CPU backend promises.
#include "backend_body.hpp"

#if defined(FEVO_TEST_HAVE_CPU)

#include <cstring>

namespace {

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
               {{3, 9000, 3, 3}, L::oihw, L::ohwi}};       // one filter per block
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
    std::size_t task, first, count;
  };
  float a[1], b[1], c[1], x[1], y[1];
  // Tasks 0, 2 and 3 share buffers (a-b, b-c, a-c); task 1 (x-y) shares nothing.
  const task tasks[] = {{{a}, {b}}, {{x}, {y}}, {{b}, {c}}, {{a}, {c}}};
  std::vector<block> blocks;
  for (std::size_t t = 0; t < 4; ++t)
    for (std::size_t f = 0; f < 3; ++f) blocks.push_back({t, 10 * f, 10});
  fevo::cpu::detail::interleave_shared(tasks, 4, blocks);
  std::vector<std::pair<std::size_t, std::size_t>> order;
  for (const auto& bl : blocks) order.emplace_back(bl.task, bl.first);
  const std::vector<std::pair<std::size_t, std::size_t>> want{
      {0, 0}, {2, 0}, {3, 0}, {0, 10}, {2, 10}, {3, 10}, {0, 20}, {2, 20}, {3, 20},
      {1, 0}, {1, 10}, {1, 20}};
  CHECK(order == want);

  // Nothing shared: the order is untouched.
  const task apart[] = {{{a}, {b}}, {{x}, {y}}};
  std::vector<block> kept{{1, 0, 5}, {0, 0, 5}, {0, 5, 5}};
  fevo::cpu::detail::interleave_shared(apart, 2, kept);
  CHECK((kept[0].task == 1 && kept[1].task == 0 && kept[1].first == 0 && kept[2].first == 5));
}

#endif  // FEVO_TEST_HAVE_CPU
