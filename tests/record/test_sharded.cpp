// fevo::record::sharded_recorder (<fevo/record/sharded.hpp>): K ranks simulated in one process
// (each rank's gather leaves its bytes in a mailbox; the root's takes them all), each holding a
// flat fragment of every layer, against one fevo::record::recorder over the whole layers. With
// dim-0 fragments (whole filters per rank) the files are byte for byte the recorder's; with cuts
// anywhere (inside filters and channels, empty fragments) the counts and S, Z are exact and D
// within 1e-12. A rank that recorded another step or added other layers, fragments that do not
// tile a layer, and replayed steps of a reopened run.
#include "../support.hpp"

#include <fevo/record/recorder.hpp>
#include <fevo/record/sharded.hpp>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "record_support.hpp"

namespace {

using namespace fevo_record_test;
using bytes = std::vector<unsigned char>;

/// Two layers (a conv and a 2-D one) of live weights, whole, as the unsharded run sees them.
template <class T>
struct whole_model {
  std::vector<std::array<std::uint64_t, 4>> ext = {{7, 5, 3, 3}, {11, 6, 1, 1}};
  std::vector<std::string> names = {"conv", "fc.weight"};
  std::vector<std::vector<T>> w;
  std::uint64_t seed;
  explicit whole_model(std::uint64_t s) : seed(s) {
    for (const auto& e : ext) w.emplace_back(e[0] * e[1] * e[2] * e[3]);
  }
  fevo::filter_view<T> view(std::size_t l) {
    const auto& e = ext[l];
    return fevo::oihw(w[l].data(), (long long)e[0], (long long)e[1], (long long)e[2], (long long)e[3]);
  }
  void fill(std::int64_t step) {
    for (std::size_t l = 0; l < w.size(); ++l) synth_fill(view(l), seed, unsigned(l), step);
  }
};

/// The simulated collective: ranks other than the root leave their bytes; the root takes them.
struct mailbox {
  std::vector<bytes> box;
  fevo::record::gather_fn for_rank(int r) {
    return [this, r](const bytes& mine) -> std::vector<bytes> {
      if (r != 0) {
        box.push_back(mine);
        return {};
      }
      std::vector<bytes> all = std::move(box);
      all.insert(all.begin(), mine);  // any order: the root sorts fragments by position
      box.clear();
      return all;
    };
  }
};

fevo::record::recorder_options opts(const std::string& dir) {
  fevo::record::recorder_options o;
  o.out_dir = dir;
  o.tau = synth_tau;
  o.per_filter_series = true;
  o.tensorboard = false;
  return o;
}

/// Runs K ranks whose fragments of layer l are [bounds[l][r], bounds[l][r + 1]) over `steps`
/// records, with the whole weights copied into each rank's own buffer at every step; then an
/// unsharded recorder over the same steps. Returns {sharded dir contents, whole dir contents}.
template <class T>
void run_both(const std::vector<std::vector<std::uint64_t>>& bounds, int steps, const std::string& sharded_dir,
              const std::string& whole_dir) {
  const std::size_t K = bounds[0].size() - 1;
  whole_model<T> m(fevo_test::seed());
  mailbox mb;
  std::vector<std::vector<std::vector<T>>> shard(K, std::vector<std::vector<T>>(m.w.size()));
  const auto scatter = [&] {
    for (std::size_t r = 0; r < K; ++r)
      for (std::size_t l = 0; l < m.w.size(); ++l)
        shard[r][l].assign(m.w[l].begin() + std::ptrdiff_t(bounds[l][r]), m.w[l].begin() + std::ptrdiff_t(bounds[l][r + 1]));
  };
  m.fill(0);
  scatter();
  std::vector<std::unique_ptr<fevo::record::sharded_recorder<T>>> ranks;
  for (std::size_t r = 0; r < K; ++r) {
    ranks.push_back(std::make_unique<fevo::record::sharded_recorder<T>>(opts(sharded_dir), r == 0, mb.for_rank(int(r))));
    for (std::size_t l = 0; l < m.w.size(); ++l) {
      // (shard buffers keep their capacity, so the live pointers stay valid across assign)
      shard[r][l].reserve(m.w[l].size());
      ranks[r]->add_fragment(m.names[l], m.ext[l], bounds[l][r], bounds[l][r + 1],
                             shard[r][l].empty() ? nullptr : shard[r][l].data());
    }
  }
  for (std::size_t r = K; r-- > 0;) ranks[r]->start(0);
  for (int s = 1; s <= steps; ++s) {
    m.fill(s);
    scatter();
    for (std::size_t r = K; r-- > 1;) CHECK(ranks[r]->record(s).empty());
    CHECK(ranks[0]->record(s).size() == m.w.size());
  }
  for (auto& r : ranks) r->close();

  whole_model<T> w(fevo_test::seed());
  w.fill(0);
  fevo::record::recorder<T> rec(opts(whole_dir));
  for (std::size_t l = 0; l < w.w.size(); ++l) rec.add_layer(w.names[l], w.view(l));
  rec.start(0);
  for (int s = 1; s <= steps; ++s) {
    w.fill(s);
    rec.record(s);
  }
  rec.close();
}

const char* const series_files[] = {"series/conv.D.npy", "series/conv.S.npy", "series/conv.Z.npy",
                                    "series/fc.weight.D.npy", "series/steps.npy", "series/index.csv"};

}  // namespace

TEST_CASE("sharded_recorder: whole-filter fragments give the recorder's files byte for byte", "[record][sharded]") {
  fevo_test::for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    INFO("type " << fevo::element_traits<T>::name);
    temp_dir a("shard"), b("whole");
    // conv: 7 filters of 45 over 3 ranks (one empty); fc: 11 rows of 6 over 3 ranks.
    run_both<T>({{0, 2 * 45, 2 * 45, 7 * 45}, {0, 5 * 6, 9 * 6, 11 * 6}}, 6, a.path(), b.path());
    for (const char* f : {"metrics.csv", "filter_summary.csv"}) {
      INFO(f);
      CHECK(slurp(a / f) == slurp(b / f));
    }
    for (const char* f : series_files) {
      INFO(f);
      CHECK(slurp(a / f) == slurp(b / f));
    }
  });
}

TEST_CASE("sharded_recorder: fragments cut anywhere give exact counts and D (and D per weight) within 1e-12", "[record][sharded]") {
  auto r = fevo_test::rng_for("sharded recorder cuts");
  for (int trial = 0; trial < (fevo_test::sanitized ? 4 : 8); ++trial) {
    const std::size_t K = 1 + r.below(5);
    std::vector<std::vector<std::uint64_t>> bounds;
    for (std::uint64_t total : {std::uint64_t(7 * 45), std::uint64_t(11 * 6)}) {
      std::vector<std::uint64_t> b = {0};
      for (std::size_t k = 1; k < K; ++k) b.push_back(r.below(total + 1));
      std::sort(b.begin(), b.end());
      b.push_back(total);
      bounds.push_back(b);
    }
    std::string desc;
    for (const auto& b : bounds) {
      for (auto x : b) desc += std::to_string(x) + " ";
      desc += "| ";
    }
    INFO("bounds " << desc);
    temp_dir a("shard"), b("whole");
    run_both<float>(bounds, 4, a.path(), b.path());
    const auto ra = parse_csv(slurp(a / "metrics.csv")), rb = parse_csv(slurp(b / "metrics.csv"));
    REQUIRE(ra.size() == rb.size());
    for (std::size_t i = 1; i < ra.size(); ++i) {
      REQUIRE(ra[i].size() == rb[i].size());
      for (std::size_t c = 0; c < ra[i].size(); ++c) {
        if (c == 3 || c == 8) {  // D, D_per_weight
          const double x = std::stod(ra[i][c]), y = std::stod(rb[i][c]);
          CHECK(std::abs(x - y) <= 1e-12 * std::abs(y));
        } else {
          CHECK(ra[i][c] == rb[i][c]);
        }
      }
    }
    // The summaries: the S and Z shares exact, D's statistics within 1e-12.
    const auto sa = parse_csv(slurp(a / "filter_summary.csv")), sb = parse_csv(slurp(b / "filter_summary.csv"));
    REQUIRE(sa.size() == sb.size());
    for (std::size_t i = 1; i < sa.size(); ++i)
      for (std::size_t c = 0; c < sa[i].size(); ++c) {
        if (c >= 3 && c <= 5) CHECK(std::abs(std::stod(sa[i][c]) - std::stod(sb[i][c])) <= 1e-12 * std::abs(std::stod(sb[i][c])));
        else CHECK(sa[i][c] == sb[i][c]);
      }
  }
}

TEST_CASE("sharded_recorder: mismatched ranks and bad fragments are errors on the root", "[record][sharded]") {
  temp_dir d("shard-bad");
  std::vector<float> w0(20, 0.0f), w1(25, 0.0f);
  const std::array<std::uint64_t, 4> e = {5, 1, 3, 3};  // 45 weights
  const auto pair = [&](const std::string& name1, std::uint64_t cut, std::uint64_t begin1, const std::string& dir) {
    auto mb = std::make_shared<mailbox>();
    auto root = std::make_unique<fevo::record::sharded_recorder<float>>(opts(dir), true, mb->for_rank(0));
    auto other = std::make_unique<fevo::record::sharded_recorder<float>>(opts(dir), false, mb->for_rank(1));
    root->add_fragment("w", e, 0, cut, w0.data());
    other->add_fragment(name1, e, begin1, 45, w1.data() + (25 - (45 - begin1)));
    root->start(0);
    other->start(0);
    return std::make_tuple(mb, std::move(root), std::move(other));
  };
  const auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const fevo::error& x) {
      return x.what();
    }
    return "<no error>";
  };
  {
    auto [mb, root, other] = pair("w", 20, 20, d / "ok");
    other->record(1);
    CHECK(root->record(1).size() == 1);
    // Another step on one rank.
    other->record(3);
    const std::string m = message([&] { root->record(2); });
    INFO(m);
    CHECK(m.find("gathered piece #1: recorded step 3 while the root recorded step 2") != std::string::npos);
  }
  {
    auto [mb, root, other] = pair("v", 20, 20, d / "names");
    other->record(1);
    const std::string m = message([&] { root->record(1); });
    INFO(m);
    CHECK(m.find("layer #0 is 'v', the root's is 'w'") != std::string::npos);
  }
  {
    auto [mb, root, other] = pair("w", 20, 22, d / "gap");  // [0, 20) and [22, 45)
    other->record(1);
    const std::string m = message([&] { root->record(1); });
    INFO(m);
    CHECK(m.find("layer 'w': the ranks' fragments do not tile it") != std::string::npos);
    CHECK(m.find("[0, 20) and [22, 45) do not touch") != std::string::npos);
  }
  {
    mailbox mb;
    fevo::record::sharded_recorder<float> root(opts(d / "x"), true, mb.for_rank(0));
    const std::string m = message([&] { root.add_fragment("w", e, 40, 50, w1.data()); });
    CHECK(m.find("recorder: layer 'w': range [40, 50) is not inside its 45 weights") != std::string::npos);
    CHECK(message([&] { root.add_fragment("w", {5, 0, 3, 3}, 0, 0, nullptr); }).find("extent(1) is zero") !=
          std::string::npos);
    CHECK(message([&] { root.add_fragment("w", e, 0, 5, nullptr); }).find("null pointer") != std::string::npos);
    CHECK(message([] { fevo::record::sharded_recorder<float> x(opts("y"), true, nullptr); }).find("no gather") !=
          std::string::npos);
  }
}

TEST_CASE("sharded_recorder: a reopened run skips the steps it holds on every rank", "[record][sharded]") {
  temp_dir d("shard-resume");
  std::vector<float> all(45);
  const std::array<std::uint64_t, 4> e = {5, 1, 3, 3};
  const auto fill = [&](int step) {
    for (std::size_t k = 0; k < all.size(); ++k) all[k] = float(synth_value(3, 0, k / 9, 0, k % 9 / 3, k % 3, step));
  };
  const auto session = [&](int from, int to) {
    mailbox mb;
    std::vector<float> a(all.begin(), all.begin() + 13), b(all.begin() + 13, all.end());
    fevo::record::sharded_recorder<float> root(opts(d.path()), true, mb.for_rank(0)), other(opts(d.path()), false, mb.for_rank(1));
    root.add_fragment("w", e, 0, 13, a.data());
    other.add_fragment("w", e, 13, 45, b.data());
    fill(from);
    std::copy(all.begin(), all.begin() + 13, a.begin());
    std::copy(all.begin() + 13, all.end(), b.begin());
    root.start(from);
    other.start(from);
    for (int s = from + 1; s <= to; ++s) {
      fill(s);
      std::copy(all.begin(), all.begin() + 13, a.begin());
      std::copy(all.begin() + 13, all.end(), b.begin());
      other.record(s);
      root.record(s);
    }
    root.close();
    other.close();
  };
  session(0, 4);
  session(2, 7);  // steps 3 and 4 are replayed: computed and gathered, not written
  const auto rows = parse_csv(slurp(d / "metrics.csv"));
  REQUIRE(rows.size() == 8);
  CHECK(rows[5][0] == "4");  // the first new row's step_prev is the last replayed step
  CHECK(rows[5][1] == "5");
}
