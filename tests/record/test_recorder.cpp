// The online recorder: metrics equal fevo::compute on the same snapshots; every sink (CSV, filter
// summaries, .npy series, TensorBoard events) reads back to the same values; reopening a run
// (after close, and after simulated crashes that leave torn tails) continues it without lost or
// duplicated rows; I/O errors are fevo::error naming the path; CRC32C against known vectors.
#include "../support.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>

#include <fevo/record/recorder.hpp>
#if defined(FEVO_TEST_HAVE_CPU)
#include <fevo/cpu.hpp>
#endif

#include "record_support.hpp"

namespace {

using namespace fevo_record_test;
namespace rd = fevo::record::detail;
using fevo_test::seed;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits_f(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

/// Three layers in three layouts: OIHW, HWIO and a channel slice of OIHW (not exhaustive). The
/// second name needs CSV quoting, and '/' in it exercises the series file names and TB tags.
template <class T>
struct model {
  std::vector<T> a = std::vector<T>(6 * 4 * 3 * 3), b = std::vector<T>(3 * 3 * 5 * 8),
                 c = std::vector<T>(5 * 7 * 2 * 2);
  std::vector<std::string> names{"conv1", "features/conv,\"2\"", "fc.weight"};
  std::vector<fevo::filter_view<T>> views{fevo::oihw(a.data(), 6, 4, 3, 3), fevo::hwio(b.data(), 3, 3, 5, 8),
                                          fevo::oihw(c.data(), 5, 7, 2, 2).channel_slice(1, 4)};
  std::uint64_t seed_;
  explicit model(std::uint64_t s) : seed_(s) {}
  void fill(std::int64_t step) {
    for (unsigned k = 0; k < views.size(); ++k) synth_fill(views[k], seed_, k, step);
  }
  template <class R>
  void add_to(R& rec) {
    for (std::size_t k = 0; k < views.size(); ++k) rec.add_layer(names[k], views[k]);
  }
  model(const model&) = delete;
};

/// The previous snapshot as the test keeps it: same layout for exhaustive views, packed OIHW else.
template <class T>
struct snapshot {
  std::vector<T> data;
  fevo::filter_view<const T> view;
  void take(const fevo::filter_view<T>& live) {
    data.resize(live.size());
    if (live.is_exhaustive()) {
      std::memcpy(static_cast<void*>(data.data()), live.data_handle(), live.size() * sizeof(T));
      view = fevo::strided(static_cast<const T*>(data.data()),
                           {live.extent(0), live.extent(1), live.extent(2), live.extent(3)},
                           {live.stride(0), live.stride(1), live.stride(2), live.stride(3)});
    } else {
      std::size_t k = 0;
      for (std::size_t i = 0; i < live.filters(); ++i)
        for (std::size_t c = 0; c < live.channels(); ++c)
          for (std::size_t h = 0; h < live.rows(); ++h)
            for (std::size_t w = 0; w < live.cols(); ++w) data[k++] = live(i, c, h, w);
      view = fevo::oihw(static_cast<const T*>(data.data()), live.filters(), live.channels(), live.rows(),
                        live.cols());
    }
  }
};

struct step_result {
  std::int64_t step_prev, step;
  std::vector<fevo::layer_metrics> m;
  std::vector<fevo::filter_results> per;
};

fevo::record::recorder_options options(const std::string& dir, bool series = true, bool tb = true) {
  fevo::record::recorder_options o;
  o.out_dir = dir;
  o.tau = synth_tau;
  o.per_filter_series = series;
  o.tensorboard = tb;
  return o;
}

struct tb_event {
  std::int64_t step;
  std::vector<std::pair<std::string, float>> scalars;
};

std::vector<std::string> list_events(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& n : rd::list_dir(dir))
    if (n.rfind("events.out.tfevents.", 0) == 0) out.push_back(dir + "/" + n);
  std::sort(out.begin(), out.end());
  return out;
}

/// Every scalar event of a run's event file(s); checks the framing, CRCs and file_version.
std::vector<tb_event> read_events(const std::string& dir) {
  std::vector<tb_event> out;
  const auto files = list_events(dir);
  REQUIRE(files.size() == 1);
  rd::file f(files[0], O_RDONLY);
  std::uint64_t end = 0;
  const auto recs = rd::tb::scan(f, end, true);
  CHECK(end == f.size());  // no torn or corrupt tail
  REQUIRE(!recs.empty());
  CHECK(recs[0].ev.file_version == "brain.Event:2");
  CHECK(!recs[0].ev.has_summary);
  for (std::size_t k = 1; k < recs.size(); ++k) {
    CHECK(recs[k].ev.has_summary);
    CHECK(recs[k].ev.wall_time > 1e9);
    out.push_back({recs[k].ev.step, recs[k].ev.scalars});
  }
  return out;
}

bool same_events(const std::vector<tb_event>& a, const std::vector<tb_event>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (a[k].step != b[k].step || a[k].scalars.size() != b[k].scalars.size()) return false;
    for (std::size_t j = 0; j < a[k].scalars.size(); ++j)
      if (a[k].scalars[j].first != b[k].scalars[j].first ||
          !same_bits_f(a[k].scalars[j].second, b[k].scalars[j].second))
        return false;
  }
  return true;
}

/// Records steps 1..n of the model with recorder<T>(policy) while computing the same metrics with
/// fevo::compute on snapshots the test keeps; checks they are bitwise equal and returns them.
template <class T, class R, class P>
std::vector<step_result> record_and_check(R& rec, model<T>& m, const P& policy, std::int64_t n) {
  std::vector<step_result> out;
  std::vector<snapshot<T>> prev(m.views.size());
  m.fill(0);
  for (std::size_t k = 0; k < m.views.size(); ++k) prev[k].take(m.views[k]);
  rec.start(0);
  for (std::int64_t s = 1; s <= n; ++s) {
    m.fill(s);
    const std::vector<fevo::layer_metrics> got = rec.record(s);
    REQUIRE(got.size() == m.views.size());
    step_result r{s - 1, s, {}, {}};
    for (std::size_t k = 0; k < m.views.size(); ++k) {
      fevo::filter_results per;
      const fevo::filter_view<const T> live = m.views[k];
      const fevo::layer_metrics want = fevo::compute(policy, prev[k].view, live, synth_tau, per);
      INFO("step " << s << " layer " << m.names[k]);
      CHECK(same_bits(got[k].D, want.D));
      CHECK(got[k].S == want.S);
      CHECK(got[k].Z == want.Z);
      CHECK(got[k].n_filters == want.n_filters);
      CHECK(got[k].nonfinite == want.nonfinite);
      const fevo::filter_results& rp = rec.last_filters()[k];
      REQUIRE(rp.size() == per.size());
      for (std::size_t i = 0; i < per.size(); ++i) CHECK(same_bits(rp.D[i], per.D[i]));
      CHECK(rp.changed == per.changed);
      CHECK(rp.zero_channels == per.zero_channels);
      r.m.push_back(want);
      r.per.push_back(per);
      prev[k].take(m.views[k]);
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// Checks metrics.csv, filter_summary.csv, the series files and the event file of a closed run
/// against the results computed directly.
void check_files(const std::string& dir, const std::vector<std::string>& names,
                 const std::vector<step_result>& results, bool series, bool tb) {
  // metrics.csv
  bool complete = false;
  const auto rows = parse_csv(slurp(dir + "/metrics.csv"), &complete);
  CHECK(complete);
  REQUIRE(rows.size() == 1 + results.size() * names.size());
  CHECK(rows[0] == std::vector<std::string>{"step_prev", "step", "layer", "D", "S", "Z", "n_filters", "nonfinite",
                                            "D_per_weight"});
  std::size_t r = 1;
  for (const auto& res : results)
    for (std::size_t k = 0; k < names.size(); ++k, ++r) {
      INFO("metrics.csv row " << r);
      REQUIRE(rows[r].size() == 9);
      CHECK(std::stoll(rows[r][0]) == res.step_prev);
      CHECK(std::stoll(rows[r][1]) == res.step);
      CHECK(rows[r][2] == names[k]);
      CHECK(same_bits(to_double(rows[r][3]), res.m[k].D));
      CHECK(same_bits(to_double(rows[r][4]), res.m[k].S));
      CHECK(same_bits(to_double(rows[r][5]), res.m[k].Z));
      CHECK(std::stoull(rows[r][6]) == res.m[k].n_filters);
      CHECK(std::stoull(rows[r][7]) == res.m[k].nonfinite);
      CHECK(same_bits(to_double(rows[r][8]), res.m[k].D_per_weight));
    }

  // filter_summary.csv, against a direct computation
  const auto srows = parse_csv(slurp(dir + "/filter_summary.csv"), &complete);
  CHECK(complete);
  CHECK(srows.at(0) == std::vector<std::string>{"layer", "filter", "steps", "D_mean", "D_min", "D_max",
                                                "frac_S_zero", "frac_Z_one"});
  std::size_t s = 1, some_s_zero = 0, some_z_one = 0;
  const double n = double(results.size());
  for (std::size_t k = 0; k < names.size(); ++k)
    for (std::size_t i = 0; i < results.at(0).per[k].size(); ++i, ++s) {
      double sum = 0, mn = INFINITY, mx = -INFINITY;
      std::uint64_t sz = 0, zo = 0;
      for (const auto& res : results) {
        const auto& p = res.per[k];
        sum += p.D[i];
        mn = std::min(mn, p.D[i]);
        mx = std::max(mx, p.D[i]);
        sz += p.S[i] == 0;
        zo += p.Z[i] == 1;
      }
      INFO("filter_summary.csv row " << s);
      REQUIRE(srows.at(s).size() == 8);
      CHECK(srows[s][0] == names[k]);
      CHECK(std::stoull(srows[s][1]) == i);
      CHECK(std::stoull(srows[s][2]) == results.size());
      CHECK(same_bits(to_double(srows[s][3]), sum / n));
      CHECK(same_bits(to_double(srows[s][4]), mn));
      CHECK(same_bits(to_double(srows[s][5]), mx));
      CHECK(same_bits(to_double(srows[s][6]), double(sz) / n));
      CHECK(same_bits(to_double(srows[s][7]), double(zo) / n));
      some_s_zero += sz > 0;
      some_z_one += zo > 0;
    }
  CHECK(s == srows.size());
  // The synthetic weights are built so that both events happen (else the test proves little).
  CHECK(some_s_zero > 0);
  CHECK(some_z_one > 0);

  // series/
  if (series) {
    const auto idx = parse_csv(slurp(dir + "/series/index.csv"), &complete);
    CHECK(complete);
    REQUIRE(idx.size() == names.size() + 1);
    CHECK(idx[0] == std::vector<std::string>{"layer", "D", "S", "Z", "n_filters"});
    const npy_array steps = read_npy(dir + "/series/steps.npy");
    CHECK(steps.descr == "<i8");
    CHECK(!steps.fortran);
    CHECK(steps.header_total % 64 == 0);
    REQUIRE(steps.shape == std::vector<std::uint64_t>{results.size(), 2});
    for (std::size_t t = 0; t < results.size(); ++t) {
      CHECK(steps.i64(2 * t) == results[t].step_prev);
      CHECK(steps.i64(2 * t + 1) == results[t].step);
    }
    for (std::size_t k = 0; k < names.size(); ++k) {
      CHECK(idx[k + 1][0] == names[k]);
      CHECK(idx[k + 1][1].find('/') == std::string::npos);
      const std::size_t N = results.at(0).per[k].size();
      CHECK(std::stoull(idx[k + 1][4]) == N);
      for (int which = 0; which < 3; ++which) {
        const npy_array a = read_npy(dir + "/series/" + idx[k + 1][1 + which]);
        INFO(idx[k + 1][1 + which]);
        CHECK(a.descr == "<f8");
        CHECK(!a.fortran);
        CHECK(a.header_total % 64 == 0);
        REQUIRE(a.shape == std::vector<std::uint64_t>{results.size(), N});
        REQUIRE(a.data.size() == 8 * results.size() * N);
        bool all = true;
        for (std::size_t t = 0; t < results.size(); ++t)
          for (std::size_t i = 0; i < N; ++i) {
            const auto& p = results[t].per[k];
            const double want = which == 0 ? p.D[i] : which == 1 ? p.S[i] : p.Z[i];
            all = all && same_bits(a.f64(t * N + i), want);
          }
        CHECK(all);
      }
    }
  } else {
    CHECK(!exists(dir + "/series"));
  }

  // event file
  if (tb) {
    const auto evs = read_events(dir);
    REQUIRE(evs.size() == results.size());
    for (std::size_t t = 0; t < results.size(); ++t) {
      CHECK(evs[t].step == results[t].step);
      REQUIRE(evs[t].scalars.size() == 3 * names.size());
      for (std::size_t k = 0; k < names.size(); ++k) {
        const auto& m = results[t].m[k];
        const std::string base = "fevo/" + names[k] + "/";
        CHECK(evs[t].scalars[3 * k].first == base + "D");
        CHECK(evs[t].scalars[3 * k + 1].first == base + "S");
        CHECK(evs[t].scalars[3 * k + 2].first == base + "Z");
        CHECK(same_bits_f(evs[t].scalars[3 * k].second, float(m.D)));
        CHECK(same_bits_f(evs[t].scalars[3 * k + 1].second, float(m.S)));
        CHECK(same_bits_f(evs[t].scalars[3 * k + 2].second, float(m.Z)));
      }
    }
  } else {
    CHECK(list_events(dir).empty());
  }
}

/// A run recorded without interruption: the reference the resumed and crashed runs must equal.
void reference_run(const std::string& dir, std::uint64_t s, std::int64_t steps,
                   fevo::record::recorder_options o) {
  o.out_dir = dir;
  model<float> m(s);
  fevo::record::recorder<float> rec(o);
  m.add_to(rec);
  m.fill(0);
  rec.start(0);
  for (std::int64_t t = 1; t <= steps; ++t) {
    m.fill(t);
    rec.record(t);
  }
  rec.close();
}

/// Records steps from..to in a child process that then dies without closing (as kill -9 would).
void crash_after(const std::string& dir, std::uint64_t s, std::int64_t from, std::int64_t to,
                 fevo::record::recorder_options o) {
  o.out_dir = dir;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 0;
    try {
      model<float> m(s);
      auto* rec = new fevo::record::recorder<float>(o);  // never destroyed: no close()
      m.add_to(*rec);
      m.fill(from);
      rec->start(from);
      for (std::int64_t t = from + 1; t <= to; ++t) {
        m.fill(t);
        rec->record(t);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      rc = 3;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

/// Reopens the run in `dir`, checks where it resumed, finishes it up to `steps` and closes it.
void resume_and_finish(const std::string& dir, std::uint64_t s, std::int64_t restart_at,
                       std::int64_t want_last, std::int64_t steps, fevo::record::recorder_options o) {
  o.out_dir = dir;
  model<float> m(s);
  fevo::record::recorder<float> rec(o);
  m.add_to(rec);
  m.fill(restart_at);
  rec.start(restart_at);
  REQUIRE(rec.last_recorded_step().has_value());
  CHECK(*rec.last_recorded_step() == want_last);
  CHECK(rec.records() == std::uint64_t(want_last));
  for (std::int64_t t = restart_at + 1; t <= steps; ++t) {
    m.fill(t);
    const auto got = rec.record(t);
    CHECK(got.empty() == (t <= want_last));
  }
  rec.close();
}

/// The files of two runs are the same: metrics.csv and filter_summary.csv byte for byte, the
/// series files byte for byte, the event scalars value for value.
void check_same_run(const std::string& a, const std::string& b, bool series, bool tb) {
  CHECK(slurp(a + "/metrics.csv") == slurp(b + "/metrics.csv"));
  CHECK(slurp(a + "/filter_summary.csv") == slurp(b + "/filter_summary.csv"));
  if (series)
    for (const auto& n : rd::list_dir(a + "/series")) {
      INFO("series/" << n);
      CHECK(slurp(a + "/series/" + n) == slurp(b + "/series/" + n));
    }
  if (tb) CHECK(same_events(read_events(a), read_events(b)));
}

/// Byte offset of the first row of the record with `step` in metrics.csv (its line starts
/// "step-1,step,").
std::uint64_t row_offset(const std::string& csv, std::int64_t step) {
  const std::string key = "\n" + std::to_string(step - 1) + "," + std::to_string(step) + ",";
  const auto p = csv.find(key);
  REQUIRE(p != std::string::npos);
  return p + 1;
}

}  // namespace

// ---- CRC32C and framing ---------------------------------------------------------------------

TEST_CASE("crc32c: known vectors (RFC 3720 B.4 and the check value)", "[record][crc]") {
  CHECK(rd::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(rd::crc32c("", 0) == 0u);
  unsigned char buf[32];
  std::memset(buf, 0, 32);
  CHECK(rd::crc32c(buf, 32) == 0x8A9136AAu);
  std::memset(buf, 0xff, 32);
  CHECK(rd::crc32c(buf, 32) == 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(i);
  CHECK(rd::crc32c(buf, 32) == 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(31 - i);
  CHECK(rd::crc32c(buf, 32) == 0x113FDB5Cu);
  // iSCSI read command PDU (RFC 3720 B.4).
  const unsigned char pdu[48] = {0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                 0x14, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
                                 0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0};
  CHECK(rd::crc32c(pdu, 48) == 0xD9963A56u);
  // Any split gives the same CRC (slicing-by-8 and the byte loop agree).
  fevo_test::rng g = fevo_test::rng_for("crc split");
  std::string data(1000, '\0');
  for (auto& ch : data) ch = static_cast<char>(g.bits());
  const std::uint32_t whole = rd::crc32c(data.data(), data.size());
  for (int t = 0; t < 50; ++t) {
    const std::size_t cut = g.below(data.size() + 1);
    CHECK(rd::crc32c_extend(rd::crc32c(data.data(), cut), data.data() + cut, data.size() - cut) == whole);
  }
  // The instruction (where the CPU has it) and slicing-by-8 agree at every length and alignment.
  if (rd::crc32c_hardware()) {
    for (std::size_t at = 0; at < 9; ++at)
      for (std::size_t n = 0; n + at <= 200; n += 7) {
        const std::uint32_t start = static_cast<std::uint32_t>(g.bits());
        CHECK(rd::crc32c_extend(start, data.data() + at, n) == rd::crc32c_portable(start, data.data() + at, n));
      }
  } else {
    WARN("this CPU has no crc32 instruction: only the portable CRC32C is tested");
  }
  CHECK(rd::crc32c_portable(0, "123456789", 9) == 0xE3069283u);
  // TFRecord's mask: rotate right 15, add 0xa282ead8.
  CHECK(rd::mask_crc(0) == 0xa282ead8u);
  CHECK(rd::mask_crc(0xE3069283u) == (((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xa282ead8u));
}

TEST_CASE("tfevents: records frame and parse back; varints of negative steps", "[record][tensorboard]") {
  const std::string ev = rd::tb::scalars_event(1.5e9, -3, {{"fevo/x/D", 0.25f}, {"fevo/x/S", -1.0f}});
  const std::string fr = rd::tb::frame(ev);
  REQUIRE(fr.size() == ev.size() + 16);
  rd::tb::event e;
  REQUIRE(rd::tb::parse_event(reinterpret_cast<const unsigned char*>(ev.data()), ev.size(), e));
  CHECK(e.step == -3);
  CHECK(e.wall_time == 1.5e9);
  REQUIRE(e.scalars.size() == 2);
  CHECK(e.scalars[1].first == "fevo/x/S");
  CHECK(e.scalars[1].second == -1.0f);
  const std::string v = rd::tb::file_version_event(2.0);
  REQUIRE(rd::tb::parse_event(reinterpret_cast<const unsigned char*>(v.data()), v.size(), e));
  CHECK(e.file_version == "brain.Event:2");
}

// ---- the recorder against fevo::compute -----------------------------------------------------

TEST_CASE("recorder: metrics equal fevo::compute; CSV, summaries, series and events read back",
          "[record]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  fevo_test::for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    auto run = [&](const auto& policy, const char* pname, bool series, bool tb) {
      INFO("type " << fevo::element_traits<T>::name << " policy " << pname);
      temp_dir d;
      model<T> m(s);
      std::vector<step_result> results;
      {
        fevo::record::recorder<T> rec(options(d.path(), series, tb), policy);
        m.add_to(rec);
        results = record_and_check(rec, m, policy, 7);
        CHECK(rec.copy_bytes() == (m.a.size() + m.b.size() + 5 * 4 * 2 * 2) * sizeof(T));
        rec.close();
        rec.close();  // idempotent
        CHECK_THROWS_AS(rec.record(8), fevo::error);
      }
      check_files(d.path(), m.names, results, series, tb);
      // Layer names with ',' and '"' are quoted per RFC 4180.
      CHECK(slurp(d / "metrics.csv").find(",\"features/conv,\"\"2\"\"\",") != std::string::npos);
    };
    run(fevo::seq, "seq", true, true);
#if defined(FEVO_TEST_HAVE_CPU)
    run(fevo::cpu::par, "cpu::par", false, true);
    run(fevo::cpu::par.threads(2), "cpu::par.threads(2)", true, false);
#endif
  });
}

TEST_CASE("recorder: a statically typed policy, and the fevo:: aliases", "[record]") {
  temp_dir d;
  model<double> m(seed());
  fevo::recorder_options o = options(d.path(), false, false);
  fevo::record::recorder<double, fevo::sequential_policy> rec(o, fevo::seq);
  m.add_to(rec);
  const auto results = record_and_check(rec, m, fevo::seq, 3);
  rec.close();
  check_files(d.path(), m.names, results, false, false);
  fevo::recorder<float> other(options(d / "other"));  // the aliases compile
  CHECK(other.records() == 0);
  // fevo::record::layer_desc is the core's layer_info, so code written with either name compiles.
  STATIC_REQUIRE(std::is_same_v<fevo::record::layer_desc, fevo::layer_info>);
  const std::vector<fevo::record::layer_desc> descs{{"a", {2, 2, 3, 3}}};
  fevo::record::run_writer w(options(d / "writer"), descs, "f32");
  CHECK(w.layers()[0].filters() == 2);
  CHECK(w.layers()[0].channels() == 2);
  CHECK(!w.is_open());
}

TEST_CASE("recorder: non-finite changes are counted and written as nan/inf", "[record]") {
  temp_dir d;
  std::vector<float> w(4 * 2 * 3 * 3, 0.5f);
  {
    fevo::record::recorder<float> rec(options(d.path(), true, true));
    rec.add_layer("L", fevo::oihw(w.data(), 4, 2, 3, 3));
    rec.start(10);
    w[0] = NAN;             // filter 0
    w[18] = INFINITY;       // filter 1
    const auto m = rec.record(20);
    REQUIRE(m.size() == 1);
    CHECK(std::isnan(m[0].D));
    CHECK(m[0].nonfinite == 2);
    w[0] = 0.5f;
    w[18] = 0.5f;
    rec.record(30);
    rec.close();
  }
  const auto rows = parse_csv(slurp(d / "metrics.csv"));
  REQUIRE(rows.size() == 3);
  CHECK(rows[1] == std::vector<std::string>{"10", "20", "L", "nan", "0.027777777777777776", "0.75", "4", "2", "nan"});
  CHECK(rows[2][3] == "nan");  // NaN - 0.5 is NaN again
  const auto sum = parse_csv(slurp(d / "filter_summary.csv"));
  REQUIRE(sum.size() == 5);
  CHECK(sum[1][3] == "nan");   // filter 0: D_mean
  CHECK(sum[2][3] == "inf");   // filter 1: an infinite D_i
  CHECK(sum[3][3] == "0");     // filter 2 never moved
  CHECK(sum[3][6] == "1");     // S_2 == 0 at every record
  CHECK(sum[3][7] == "1");     // Z_2 == 1 at every record
  const npy_array D = read_npy(d / "series/L.D.npy");
  REQUIRE(D.shape == std::vector<std::uint64_t>{2, 4});
  CHECK(std::isnan(D.f64(0)));
  CHECK(std::isinf(D.f64(1)));
  const auto evs = read_events(d.path());
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].step == 20);
  CHECK(std::isnan(evs[0].scalars[0].second));
}

TEST_CASE("recorder: a D beyond the float range is an infinite TensorBoard scalar", "[record][tensorboard]") {
  temp_dir d;
  std::vector<double> w(2 * 1 * 1 * 1, 0.0);
  {
    fevo::record::recorder<double> rec(options(d.path(), false, true));
    rec.add_layer("L", fevo::oihw(w.data(), 2, 1, 1, 1));
    rec.start(0);
    w[0] = 1e30;  // D = 1e60 / 2
    rec.record(1);
    rec.close();
  }
  const auto evs = read_events(d.path());
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].scalars[0].second == INFINITY);
  CHECK(evs[0].scalars[1].second == 0.5f);
  CHECK(to_double(parse_csv(slurp(d / "metrics.csv"))[1][3]) == 1e30 * 1e30 / 2);
}

// ---- reopening a run ------------------------------------------------------------------------

TEST_CASE("recorder: a closed run reopens; replayed steps are skipped; the files equal an "
          "uninterrupted run", "[record][resume]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  temp_dir ref("ref"), d("resumed");
  const auto o = options("", true, true);
  reference_run(ref.path(), s, 9, o);
  {
    auto o1 = o;
    o1.out_dir = d.path();
    model<float> m(s);
    fevo::record::recorder<float> rec(o1);
    m.add_to(rec);
    m.fill(0);
    rec.start(0);
    CHECK(!rec.last_recorded_step());
    for (int t = 1; t <= 5; ++t) {
      m.fill(t);
      rec.record(t);
    }
  }  // the destructor closes
  CHECK(exists(d / "filter_summary.csv"));
  resume_and_finish(d.path(), s, 3, 5, 9, o);  // restarts from an older checkpoint (step 3)
  check_same_run(ref.path(), d.path(), true, true);

  // A restart after the last record leaves a visible gap: step_prev is not the previous step.
  {
    auto o2 = o;
    o2.out_dir = d.path();
    model<float> m(s);
    fevo::record::recorder<float> rec(o2);
    m.add_to(rec);
    m.fill(12);
    rec.start(12);
    CHECK(*rec.last_recorded_step() == 9);
    m.fill(13);
    CHECK(rec.record(13).size() == 3);
    CHECK_THROWS_WITH(rec.record(13), Catch::Contains("greater than the kept snapshot's step 13"));
    CHECK_THROWS_AS(rec.record(2), fevo::error);
  }
  const auto rows = parse_csv(slurp(d / "metrics.csv"));
  CHECK(rows.back()[0] == "12");
  CHECK(rows.back()[1] == "13");
  CHECK(parse_csv(slurp(d / "filter_summary.csv"))[1][2] == "10");
}

TEST_CASE("recorder: close() checkpoints and empties a journal whose records outweigh a checkpoint",
          "[record][resume]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  const auto o = options("", false, true);  // without the series the journal may be compacted
  temp_dir ref("ref"), empty("empty"), d("resumed");
  reference_run(ref.path(), s, 9, o);
  reference_run(empty.path(), s, 0, o);  // the journal's header alone
  const std::uint64_t header = slurp(empty / "fevo-state/journal.bin").size();
  const std::string j = d / "fevo-state/journal.bin", ck = d / "fevo-state/summary.ckpt";
  // 5 records of the 19 filters (584 bytes each) outweigh a checkpoint (964 bytes): close()
  // checkpoints them and empties the journal.
  reference_run(d.path(), s, 5, o);
  CHECK(slurp(j).size() == header);
  CHECK(exists(ck));
  const std::string ck5 = slurp(ck);
  // One record since the last checkpoint does not: close() syncs the journal and keeps it.
  resume_and_finish(d.path(), s, 5, 5, 6, o);
  const std::uint64_t record = slurp(j).size() - header;
  CHECK(record == 24 * 19 + 32 * 3 + 32);
  CHECK(slurp(ck) == ck5);
  resume_and_finish(d.path(), s, 6, 6, 9, o);  // 3 records: compacted again
  CHECK(slurp(j).size() == header);
  check_same_run(ref.path(), d.path(), false, true);
  // fsync_each_record has synced every record already: close() leaves the journal whole.
  temp_dir f("fsynced");
  auto of = o;
  of.fsync_each_record = true;
  reference_run(f.path(), s, 5, of);
  CHECK(slurp(f / "fevo-state/journal.bin").size() == header + 5 * record);
  CHECK(!exists(f / "fevo-state/summary.ckpt"));
}

TEST_CASE("recorder: fsync_each_record writes the same files", "[record][resume]") {
  const std::uint64_t s = seed();
  temp_dir ref("ref"), d;
  auto o = options("", true, true);
  reference_run(ref.path(), s, 5, o);
  o.fsync_each_record = true;
  o.journal_compact_bytes = 1;  // checkpoints too (the series journal is kept whole)
  reference_run(d.path(), s, 5, o);
  check_same_run(ref.path(), d.path(), true, true);
  CHECK(exists(d / "fevo-state/summary.ckpt"));
}

TEST_CASE("recorder: crash tails are repaired on reopening, with no lost or duplicated row",
          "[record][resume][crash]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  for (const bool compact : {false, true}) {
    auto o = options("", !compact, true);
    if (compact) o.journal_compact_bytes = 1;  // checkpoint and empty the journal before every record
    INFO((compact ? "compacting journal" : "series journal"));
    temp_dir ref("ref");
    reference_run(ref.path(), s, 8, o);

    SECTION("a torn last line of metrics.csv") {
      temp_dir d;
      crash_after(d.path(), s, 0, 4, o);
      append_bytes(d / "metrics.csv", "4,5,conv1,0.12");
      resume_and_finish(d.path(), s, 4, 4, 8, o);
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("the journal and events have a record that metrics.csv lacks") {
      temp_dir d;
      crash_after(d.path(), s, 0, 5, o);
      const std::string csv = slurp(d / "metrics.csv");
      truncate_to(d / "metrics.csv", row_offset(csv, 5));
      resume_and_finish(d.path(), s, 2, 4, 8, o);
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("metrics.csv holds part of the last record's rows") {
      temp_dir d;
      crash_after(d.path(), s, 0, 5, o);
      const std::string csv = slurp(d / "metrics.csv");
      const std::uint64_t first = row_offset(csv, 5);
      const std::uint64_t second = csv.find('\n', first) + 1;
      truncate_to(d / "metrics.csv", second + 9);
      resume_and_finish(d.path(), s, 4, 4, 8, o);
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("a torn journal record and a torn event record") {
      temp_dir d;
      crash_after(d.path(), s, 0, 4, o);
      append_bytes(d / "fevo-state/journal.bin", std::string(100, '\x5a'));
      append_bytes(list_events(d.path()).at(0), std::string("\x10\0\0\0\0\0\0\0\x01\x02", 10));
      resume_and_finish(d.path(), s, 4, 4, 8, o);
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("a journal shorter than metrics.csv (only after a system crash): both cut to the journal") {
      temp_dir d;
      crash_after(d.path(), s, 0, 5, o);
      const std::string j = d / "fevo-state/journal.bin";
      truncate_to(j, slurp(j).size() - 7);
      resume_and_finish(d.path(), s, 3, 4, 8, o);
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("a crash right after the run was created") {
      temp_dir d;
      crash_after(d.path(), s, 0, 0, o);
      model<float> m(s);
      auto o2 = o;
      o2.out_dir = d.path();
      fevo::record::recorder<float> rec(o2);
      m.add_to(rec);
      m.fill(0);
      rec.start(0);
      CHECK(!rec.last_recorded_step());
      for (int t = 1; t <= 8; ++t) {
        m.fill(t);
        rec.record(t);
      }
      rec.close();
      check_same_run(ref.path(), d.path(), !compact, true);
    }
    SECTION("leftover temporary files are removed") {
      temp_dir d;
      crash_after(d.path(), s, 0, 3, o);
      append_bytes(d / ".filter_summary.csv.fevo-tmp.1.0", "partial");
      append_bytes(d / "fevo-state/.summary.ckpt.fevo-tmp.1.0", "partial");
      resume_and_finish(d.path(), s, 3, 3, 8, o);
      CHECK(!exists(d / ".filter_summary.csv.fevo-tmp.1.0"));
      CHECK(!exists(d / "fevo-state/.summary.ckpt.fevo-tmp.1.0"));
      check_same_run(ref.path(), d.path(), !compact, true);
    }
  }
}

TEST_CASE("recorder: a run recorded before the D_per_weight column resumes in its own format",
          "[record][resume]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  auto o = options("", true, true);
  temp_dir ref("ref"), d;
  reference_run(ref.path(), s, 8, o);
  // metrics.csv as a run before the column wrote it: the header and every row without its last
  // field (D_per_weight is last and numeric, so the last ',' starts it).
  auto without_dw = [](const std::string& csv) {
    std::string out;
    for (std::size_t b = 0, e; b < csv.size(); b = e + 1) {
      e = csv.find('\n', b);
      REQUIRE(e != std::string::npos);
      out += csv.substr(b, csv.rfind(',', e) - b) + "\n";
    }
    return out;
  };
  const std::string v1 = without_dw(slurp(ref / "metrics.csv"));
  REQUIRE(v1.rfind("step_prev,step,layer,D,S,Z,n_filters,nonfinite\n", 0) == 0);
  crash_after(d.path(), s, 0, 4, o);
  const std::string before = without_dw(slurp(d / "metrics.csv"));
  truncate_to(d / "metrics.csv", 0);
  append_bytes(d / "metrics.csv", before + "4,5,conv1,0.12");  // and a torn last line
  resume_and_finish(d.path(), s, 4, 4, 8, o);
  CHECK(slurp(d / "metrics.csv") == v1);
  CHECK(slurp(d / "filter_summary.csv") == slurp(ref / "filter_summary.csv"));
  CHECK(same_events(read_events(ref.path()), read_events(d.path())));
  // Rows of another width are damage, not a torn write.
  const std::string csv = slurp(d / "metrics.csv");
  std::string bad = csv;
  bad.insert(csv.find('\n') + 1, "0,1,conv1,0,0,0,2,0,0\n");
  truncate_to(d / "metrics.csv", 0);
  append_bytes(d / "metrics.csv", bad);
  auto o2 = o;
  o2.out_dir = d.path();
  model<float> m(s);
  fevo::record::recorder<float> rec(o2);
  m.add_to(rec);
  m.fill(8);
  CHECK_THROWS_WITH(rec.start(8), Catch::Contains("line 2") && Catch::Contains("8 fields"));
}

TEST_CASE("recorder: tensorboard enabled on a reopened run starts a file; disabling leaves it",
          "[record][resume][tensorboard]") {
  const std::uint64_t s = seed();
  temp_dir d;
  crash_after(d.path(), s, 0, 3, options(d.path(), false, false));
  CHECK(list_events(d.path()).empty());
  resume_and_finish(d.path(), s, 3, 3, 5, options(d.path(), false, true));
  auto evs = read_events(d.path());
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].step == 4);
  resume_and_finish(d.path(), s, 5, 5, 6, options(d.path(), false, false));
  resume_and_finish(d.path(), s, 6, 6, 7, options(d.path(), false, true));
  evs = read_events(d.path());
  REQUIRE(evs.size() == 4);  // step 6, recorded without tensorboard, is backfilled from metrics.csv
  CHECK(evs[1].step == 5);
  CHECK(evs[2].step == 6);
  CHECK(evs[3].step == 7);
}

// ---- errors ---------------------------------------------------------------------------------

TEST_CASE("recorder: bad calls and bad directories throw fevo::error naming the problem",
          "[record][errors]") {
  temp_dir d;
  std::vector<float> w(2 * 2 * 3 * 3, 0.f), w2(3 * 2 * 3 * 3, 0.f);
  auto o = options(d / "run", false, false);

  fevo::record::recorder<float> rec(o);
  CHECK_THROWS_WITH(rec.start(0), Catch::Contains("no layer"));
  CHECK_THROWS_WITH(rec.record(1), Catch::Contains("before start"));
  CHECK_THROWS_WITH(rec.add_layer("", fevo::oihw(w.data(), 2, 2, 3, 3)), Catch::Contains("empty"));
  CHECK_THROWS_WITH(rec.add_layer("a\nb", fevo::oihw(w.data(), 2, 2, 3, 3)), Catch::Contains("newline"));
  rec.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3));
  CHECK_THROWS_WITH(rec.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3)), Catch::Contains("twice"));
  rec.start(5);
  CHECK_THROWS_WITH(rec.add_layer("b", fevo::oihw(w.data(), 2, 2, 3, 3)), Catch::Contains("after start"));
  CHECK_THROWS_WITH(rec.start(5), Catch::Contains("twice"));
  CHECK_THROWS_WITH(rec.record(5), Catch::Contains("greater than the kept snapshot's step 5"));

  // A second recorder on a directory in use.
  {
    fevo::record::recorder<float> other(o);
    other.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3));
    CHECK_THROWS_WITH(other.start(0), Catch::Contains("in use by another recorder"));
  }
  rec.record(6);
  rec.close();

  // Reopening with another configuration names the difference.
  auto reopen = [&](fevo::record::recorder_options oo, const char* name, std::vector<float>& buf,
                    long long n) {
    fevo::record::recorder<float> r(oo);
    r.add_layer(name, fevo::oihw(buf.data(), n, 2, 3, 3));
    r.start(7);
  };
  CHECK_THROWS_WITH(reopen(o, "a", w2, 3), Catch::Contains("layer 3 2 3 3 a") && Catch::Contains("layer 2 2 3 3 a"));
  CHECK_THROWS_WITH(reopen(o, "b", w, 2), Catch::Contains("another configuration"));
  auto o_tau = o;
  o_tau.tau = 0.5;
  CHECK_THROWS_WITH(reopen(o_tau, "a", w, 2), Catch::Contains("tau 0.5"));
  auto o_series = o;
  o_series.per_filter_series = true;
  CHECK_THROWS_WITH(reopen(o_series, "a", w, 2), Catch::Contains("per_filter_series"));
  auto o_fresh = o;
  o_fresh.resume = false;
  CHECK_THROWS_WITH(reopen(o_fresh, "a", w, 2), Catch::Contains("already holds a run") && Catch::Contains(o.out_dir));
  {
    fevo::record::recorder<double> r(o);
    std::vector<double> wd(w.size());
    r.add_layer("a", fevo::oihw(wd.data(), 2, 2, 3, 3));
    CHECK_THROWS_WITH(r.start(7), Catch::Contains("dtype f64") && Catch::Contains("dtype f32"));
  }

  // Options.
  auto o_bad = o;
  o_bad.tau = -1;
  CHECK_THROWS_WITH(fevo::record::recorder<float>(o_bad), Catch::Contains("tau"));
  o_bad.tau = NAN;
  CHECK_THROWS_AS(fevo::record::recorder<float>(o_bad), fevo::error);
  o_bad.tau = 1e300;
  CHECK_THROWS_WITH(fevo::record::recorder<float>(o_bad), Catch::Contains("compute type"));
  o_bad = o;
  o_bad.out_dir = "";
  CHECK_THROWS_WITH(fevo::record::recorder<float>(o_bad), Catch::Contains("out_dir"));

  // out_dir below a regular file: the error names the path.
  append_bytes(d / "plain", "x");
  {
    auto o_file = o;
    o_file.out_dir = d / "plain/run";
    fevo::record::recorder<float> r(o_file);
    r.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3));
    CHECK_THROWS_WITH(r.start(0), Catch::Contains(d / "plain"));
  }
  // metrics.csv with rows but no journal: not a run we can continue.
  rd::make_dirs(d / "foreign");
  append_bytes(d / "foreign/metrics.csv", "step_prev,step,layer,D,S,Z,n_filters,nonfinite\n0,1,a,0,0,0,2,0\n");
  {
    auto o_for = o;
    o_for.out_dir = d / "foreign";
    fevo::record::recorder<float> r(o_for);
    r.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3));
    CHECK_THROWS_WITH(r.start(0), Catch::Contains("holds rows but"));
  }
  // Damage before the end of metrics.csv is not a torn write.
  {
    const std::string csv = slurp(d / "run/metrics.csv");
    std::string bad = csv;
    bad.insert(csv.find('\n') + 1, "garbage\n");
    truncate_to(d / "run/metrics.csv", 0);
    append_bytes(d / "run/metrics.csv", bad);
    CHECK_THROWS_WITH(reopen(o, "a", w, 2), Catch::Contains("line 2") && Catch::Contains("metrics.csv"));
  }
}

TEST_CASE("record::detail I/O helpers name the path in every error", "[record][errors]") {
  temp_dir d;
  CHECK_THROWS_WITH(rd::write_file_atomic(d / "missing/x.csv", "x"), Catch::Contains(d / "missing"));
  if (exists("/dev/full")) {
    rd::file f("/dev/full", O_WRONLY);
    CHECK_THROWS_WITH(f.write_all("abc", 3), Catch::Contains("/dev/full") && Catch::Contains("space"));
  }
  CHECK_THROWS_WITH(rd::read_file(d / "nope"), Catch::Contains(d / "nope"));
  // An atomic write that is never committed leaves no file and no temporary.
  { rd::atomic_file a(d / "y.csv"); a.write("partial"); }
  CHECK(rd::list_dir(d.path()).empty());
}

TEST_CASE("recorder: the destructor never throws; close() reports the error", "[record][errors]") {
  temp_dir d;
  std::vector<float> w(2 * 2 * 3 * 3, 0.f);
  {
    fevo::record::recorder<float> rec(options(d / "run", false, false));
    rec.add_layer("a", fevo::oihw(w.data(), 2, 2, 3, 3));
    rec.start(0);
    rec.record(1);
    remove_tree(d / "run");  // the summary cannot be written any more
    CHECK_THROWS_WITH(rec.close(), Catch::Contains(d / "run"));
  }  // destructor: prints the error, does not throw
  SUCCEED("destructor did not throw");
}

TEST_CASE("recorder: a summary whose write fails part-way (rows formatted in parallel) leaves nothing; "
          "close() retried writes it", "[record][errors]") {
  temp_dir d;
  constexpr std::size_t N = 8192;  // 8192 rows: formatted in chunks on every thread
  std::vector<float> w(N, 0.f);
  fevo::record::recorder<float> rec(options(d / "run", false, false));
  rec.add_layer("a", fevo::oihw(w.data(), N, 1, 1, 1));
  rec.start(0);
  for (std::size_t i = 0; i < N; ++i) w[i] = float(i % 7) * 1e-3f;
  rec.record(1);
  // Files may grow to 64 KiB from now on: the summary (about 300 KB) fails part-way, with EFBIG.
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  struct rlimit lim = old;
  lim.rlim_cur = 64 << 10;
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  std::string msg;
  try {
    rec.close();
  } catch (const fevo::error& e) {
    msg = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  INFO(msg);
  CHECK(msg.find(d / "run/filter_summary.csv") != std::string::npos);
  CHECK(msg.find("nothing was written under that name") != std::string::npos);
  CHECK(!exists(d / "run/filter_summary.csv"));
  for (const auto& n : rd::list_dir(d / "run")) CHECK(n.find(".fevo-tmp.") == std::string::npos);
  rec.close();
  const auto rows = parse_csv(slurp(d / "run/filter_summary.csv"));
  REQUIRE(rows.size() == N + 1);
  for (std::size_t i = 0; i < N; ++i) {
    CHECK(rows[i + 1][1] == std::to_string(i));
    CHECK((rows[i + 1][3] == "0") == (i % 7 == 0));  // D_mean: zero where the filter did not change
  }
}

TEST_CASE("recorder: a write error rolls the record back; retrying it succeeds", "[record][errors]") {
  // RLIMIT_FSIZE makes writes past a size fail (EFBIG) in a child process. With the journal
  // compacted before every record, metrics.csv is the largest file, so the limit lets the journal
  // record through and cuts the CSV rows: the record must be rolled back, then retried.
  const std::uint64_t s = seed();
  temp_dir ref("ref"), d;
  auto o = options("", false, false);
  o.journal_compact_bytes = 1;
  reference_run(ref.path(), s, 13, o);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 0;
    try {
      ::signal(SIGXFSZ, SIG_IGN);
      auto oc = o;
      oc.out_dir = d.path();
      model<float> m(s);
      fevo::record::recorder<float> rec(oc);
      m.add_to(rec);
      m.fill(0);
      rec.start(0);
      for (int t = 1; t <= 10; ++t) {
        m.fill(t);
        rec.record(t);
      }
      const std::uint64_t csv_size = slurp(d / "metrics.csv").size();
      if (csv_size <= slurp(d / "fevo-state/journal.bin").size() + 200) rc = 10;
      struct rlimit old, lim;
      ::getrlimit(RLIMIT_FSIZE, &old);
      lim = old;
      lim.rlim_cur = csv_size + 10;
      ::setrlimit(RLIMIT_FSIZE, &lim);
      m.fill(11);
      bool threw = false;
      try {
        rec.record(11);
      } catch (const fevo::error& e) {
        threw = std::string(e.what()).find("metrics.csv") != std::string::npos;
      }
      ::setrlimit(RLIMIT_FSIZE, &old);
      if (!threw) rc = 11;
      if (slurp(d / "metrics.csv").size() != csv_size) rc = 12;  // rolled back
      for (int t = 11; t <= 13; ++t) {
        m.fill(t);
        rec.record(t);
      }
      rec.close();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      rc = 13;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  check_same_run(ref.path(), d.path(), false, false);
}

// ---- files written ahead of the last records (run_writer::summarize_ahead) -------------------

namespace {

struct record_data {
  std::int64_t step_prev, step;
  std::vector<fevo::layer_metrics> m;
  std::vector<fevo::filter_results> per;
};
using pending_t = std::vector<std::vector<fevo::filter_results>>;

/// Three layers, the first with enough filters for the summary to be formatted on every thread;
/// the second's name needs CSV quoting.
const std::vector<fevo::layer_info> ahead_layers{
    {"a", {9000, 3, 1, 1}}, {"b,\"q\"", {40, 8, 3, 3}}, {"c", {1, 2, 2, 2}}};

/// A record of made-up results, a pure function of (seed, step): zero and NaN D_i, S_i == 0 and
/// Z_i == 1 all occur.
record_data ahead_record(std::uint64_t s, std::int64_t step) {
  record_data r{step - 1, step, {}, {}};
  for (std::size_t k = 0; k < ahead_layers.size(); ++k) {
    const auto& l = ahead_layers[k];
    fevo::filter_results f;
    f.resize(l.filters(), l.channels(), l.filter_size(), false);
    fevo::layer_metrics m{};
    m.n_filters = l.filters();
    for (std::size_t i = 0; i < l.filters(); ++i) {
      const std::uint64_t h = mix(s ^ mix(k * 1000003ull + i * 7919ull + std::uint64_t(step)));
      f.D[i] = h % 11 == 0 ? 0.0 : (h % 997 == 0 ? std::nan("") : unit(h) * unit(h) * 1e-3);
      f.changed[i] = h % 5 == 0 ? 0 : (h >> 8) % (l.filter_size() + 1);
      f.zero_channels[i] = h % 3 == 0 ? l.channels() : (h >> 16) % (l.channels() + 1);
      f.S[i] = double(f.changed[i]) / double(l.filter_size());
      f.Z[i] = double(f.zero_channels[i]) / double(l.channels());
      m.D += f.D[i] / double(l.filters());
      m.S += f.S[i] / double(l.filters());
      m.Z += f.Z[i] / double(l.filters());
    }
    r.m.push_back(m);
    r.per.push_back(std::move(f));
  }
  return r;
}

fevo::record::recorder_options ahead_options(const std::string& dir, bool series) {
  fevo::record::recorder_options o;
  o.out_dir = dir;
  o.tau = synth_tau;
  o.per_filter_series = series;
  return o;
}

/// A new run in `dir` with records [0, n) of `recs`; `ahead(writer)` is called before record
/// `ahead_at` is written; then close().
void ahead_run(const std::string& dir, const std::vector<record_data>& recs, std::size_t n, bool series,
               std::size_t ahead_at = 0, const std::function<void(fevo::record::run_writer&)>& ahead = nullptr) {
  fevo::record::run_writer w(ahead_options(dir, series), ahead_layers, "f32");
  w.open();
  for (std::size_t r = 0; r < n; ++r) {
    if (ahead && r == ahead_at) ahead(w);
    w.write(recs[r].step_prev, recs[r].step, recs[r].m, recs[r].per);
  }
  w.close();
}

pending_t pending_of(const std::vector<record_data>& recs, std::size_t from, std::size_t to) {
  pending_t p;
  for (std::size_t r = from; r < to; ++r) p.push_back(recs[r].per);
  return p;
}

/// A checkpoint's bytes but the run id's traces: the journal header's CRC and the final CRC.
std::string checkpoint_body(const std::string& path) {
  const std::string s = slurp(path);
  REQUIRE(s.size() > 20);
  return s.substr(16, s.size() - 20);
}

void check_no_temporaries(const std::string& dir) {
  for (const auto& sub : {std::string(), std::string("/fevo-state")})
    for (const auto& n : rd::list_dir(dir + sub)) CHECK(n.find(".fevo-tmp.") == std::string::npos);
}

/// Reopens the run in `dir`, appends `r` and closes it.
void ahead_append(const std::string& dir, const record_data& r, bool series) {
  fevo::record::run_writer w(ahead_options(dir, series), ahead_layers, "f32");
  w.open();
  REQUIRE(w.last_step().has_value());
  CHECK(*w.last_step() == r.step_prev);
  w.write(r.step_prev, r.step, r.m, r.per);
  w.close();
}

}  // namespace

TEST_CASE("run_writer: summarize_ahead writes the files close() would; close() writes them anew where "
          "the run ended otherwise", "[record][ahead]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  std::vector<record_data> recs;
  for (std::int64_t t = 1; t <= 7; ++t) recs.push_back(ahead_record(s, t));
  for (const bool series : {false, true}) {
    INFO("per_filter_series=" << series);
    temp_dir ref("ref"), ref5("ref5");
    ahead_run(ref.path(), recs, 6, series);
    ahead_run(ref5.path(), recs, 5, series);
    const std::string ck = "/fevo-state/summary.ckpt";
    CHECK(exists(ref.path() + ck) != series);  // without the series, close() checkpoints 6 records
    if (series)  // the series come from the journal: each record's every filter, as given
      for (std::size_t k = 0; k < ahead_layers.size(); ++k) {
        const std::string stem = k == 1 ? "b__q_" : ahead_layers[k].name;
        const npy_array D = read_npy(ref / ("series/" + stem + ".D.npy"));
        const npy_array Z = read_npy(ref / ("series/" + stem + ".Z.npy"));
        REQUIRE(D.shape == std::vector<std::uint64_t>{6, ahead_layers[k].filters()});
        bool same = true;
        for (std::size_t r = 0; r < 6; ++r)
          for (std::size_t i = 0; i < ahead_layers[k].filters(); ++i) {
            const std::size_t at = r * ahead_layers[k].filters() + i;
            same = same && same_bits(D.f64(at), recs[r].per[k].D[i]) &&
                   same_bits(Z.f64(at), double(recs[r].per[k].zero_channels[i]) / double(ahead_layers[k].channels()));
          }
        CHECK(same);
      }

    SECTION("the last two records' files written ahead, in two steps, are kept") {
      temp_dir d("ahead");
      const pending_t p = pending_of(recs, 4, 6);
      ahead_run(d.path(), recs, 6, series, 4, [&](fevo::record::run_writer& w) {
        w.summarize_ahead(1, p, 6);
        CHECK(exists(d / "filter_summary.csv") == false);  // not before close()
        w.summarize_ahead(3, p, 6);
      });
      check_same_run(ref.path(), d.path(), series, false);
      if (!series) CHECK(checkpoint_body(ref.path() + ck) == checkpoint_body(d.path() + ck));
      check_no_temporaries(d.path());
      // The run reopens from the files written ahead and goes on as the reference does.
      ahead_append(ref.path(), recs[6], series);
      ahead_append(d.path(), recs[6], series);
      check_same_run(ref.path(), d.path(), series, false);
    }
    SECTION("pending results other than the records written: rewritten") {
      temp_dir d("other");
      pending_t p = pending_of(recs, 4, 6);
      p[1][1].D[7] += 1e-9;
      ahead_run(d.path(), recs, 6, series, 4, [&](fevo::record::run_writer& w) { w.summarize_ahead(3, p, 6); });
      check_same_run(ref.path(), d.path(), series, false);
      if (!series) CHECK(checkpoint_body(ref.path() + ck) == checkpoint_body(d.path() + ck));
      check_no_temporaries(d.path());
    }
    SECTION("not every layer given, another last step, or fewer records written: rewritten") {
      temp_dir d1("part"), d2("step"), d3("fewer");
      const pending_t p = pending_of(recs, 4, 6);
      ahead_run(d1.path(), recs, 6, series, 4, [&](fevo::record::run_writer& w) { w.summarize_ahead(2, p, 6); });
      ahead_run(d2.path(), recs, 6, series, 4, [&](fevo::record::run_writer& w) { w.summarize_ahead(3, p, 9); });
      ahead_run(d3.path(), recs, 5, series, 4, [&](fevo::record::run_writer& w) { w.summarize_ahead(3, p, 6); });
      check_same_run(ref.path(), d1.path(), series, false);
      check_same_run(ref.path(), d2.path(), series, false);
      check_same_run(ref5.path(), d3.path(), series, false);
      if (!series) {
        CHECK(checkpoint_body(ref.path() + ck) == checkpoint_body(d2.path() + ck));
        CHECK(checkpoint_body(ref5.path() + ck) == checkpoint_body(d3.path() + ck));
      }
      for (const auto* d : {&d1, &d2, &d3}) check_no_temporaries(d->path());
    }
    SECTION("an I/O error while writing ahead drops it; close() writes the files itself") {
      for (const char* stage : {"create", "write"}) {
        INFO(stage);
        temp_dir d("io");
        const pending_t p = pending_of(recs, 4, 6);
        const bool at_create = std::string(stage) == "create";  // the first call creates the file
        ahead_run(d.path(), recs, 6, series, 4, [&](fevo::record::run_writer& w) {
          if (!at_create) w.summarize_ahead(1, p, 6);  // written
          fevo::detail::inject_failure_at = stage;
          CHECK_NOTHROW(w.summarize_ahead(at_create ? 1 : 2, p, 6));  // fails: dropped
          fevo::detail::inject_failure_at.clear();
          check_no_temporaries(d.path());
          CHECK_NOTHROW(w.summarize_ahead(3, p, 6));  // does nothing
          check_no_temporaries(d.path());
        });
        check_same_run(ref.path(), d.path(), series, false);
        check_no_temporaries(d.path());
      }
    }
    SECTION("a failed flush of a file written ahead fails close() and leaves nothing; a retry writes it") {
      temp_dir d("flush");
      const pending_t p = pending_of(recs, 4, 6);
      fevo::record::run_writer w(ahead_options(d.path(), series), ahead_layers, "f32");
      w.open();
      for (std::size_t r = 0; r < 6; ++r) {
        if (r == 4) w.summarize_ahead(3, p, 6);
        w.write(recs[r].step_prev, recs[r].step, recs[r].m, recs[r].per);
      }
      fevo::detail::inject_failure_at = "fdatasync";
      std::string msg;
      try {
        w.close();
      } catch (const fevo::error& e) {
        msg = e.what();
      }
      fevo::detail::inject_failure_at.clear();
      INFO(msg);
      CHECK(msg.find(d / "filter_summary.csv") != std::string::npos);
      CHECK(msg.find("fdatasync failed") != std::string::npos);
      CHECK(!exists(d / "filter_summary.csv"));
      check_no_temporaries(d.path());
      w.close();
      check_same_run(ref.path(), d.path(), series, false);
    }
  }
}

TEST_CASE("run_writer: summarize_ahead refuses calls out of order and results of another shape",
          "[record][ahead][errors]") {
  const std::uint64_t s = seed();
  INFO("seed=" << s);
  temp_dir d;
  const record_data r1 = ahead_record(s, 1), r2 = ahead_record(s, 2);
  fevo::record::run_writer w(ahead_options(d.path(), false), ahead_layers, "f32");
  const pending_t p{r1.per, r2.per};
  CHECK_THROWS_WITH(w.summarize_ahead(1, p, 2), Catch::Contains("is not open"));
  w.open();
  CHECK_THROWS_WITH(w.summarize_ahead(1, {}, 2), Catch::Contains("at least one record"));
  CHECK_THROWS_WITH(w.summarize_ahead(0, p, 2), Catch::Contains("layers up to 0 after the first 0 of 3"));
  CHECK_THROWS_WITH(w.summarize_ahead(4, p, 2), Catch::Contains("layers up to 4"));
  pending_t short_layers{r1.per};
  short_layers[0].pop_back();
  CHECK_THROWS_WITH(w.summarize_ahead(1, short_layers, 2), Catch::Contains("got results of 2 layers"));
  pending_t wrong{r1.per};
  wrong[0][1] = r1.per[0];  // layer b given layer a's 2500 filters
  CHECK_THROWS_WITH(w.summarize_ahead(2, wrong, 2), Catch::Contains("layer 'b,\"q\"' has 40 filters"));
  w.summarize_ahead(2, p, 2);
  CHECK_THROWS_WITH(w.summarize_ahead(2, p, 2), Catch::Contains("layers up to 2 after the first 2"));
  CHECK_THROWS_WITH(w.summarize_ahead(3, p, 3), Catch::Contains("pending records changed"));
  CHECK_THROWS_WITH(w.summarize_ahead(3, {r1.per}, 2), Catch::Contains("pending records changed"));
  w.write(r1.step_prev, r1.step, r1.m, r1.per);
  CHECK_THROWS_WITH(w.summarize_ahead(3, p, 2), Catch::Contains("a record was written"));
  w.write(r2.step_prev, r2.step, r2.m, r2.per);
  w.close();  // the part written ahead is dropped: the summary covers both records
  temp_dir ref("ref");
  ahead_run(ref.path(), {r1, r2}, 2, false);
  check_same_run(ref.path(), d.path(), false, false);
  check_no_temporaries(d.path());
}
