// Recorder crash test: runs the crash worker, kills it with SIGKILL at random (seeded) moments,
// sometimes adds the torn tail a kill in the middle of a write leaves (a partial CSV line, a
// partial journal record, a partial event record), reopens the run each time from a random
// earlier "checkpoint" step, and finally lets it finish. Checks after every reopening that it
// resumed exactly at the last complete record of metrics.csv (no completed record lost), and at
// the end that metrics.csv parses, has every (step, layer) once, and that metrics.csv,
// filter_summary.csv, the series files and the event scalars equal an uninterrupted run's.
//   fevo_record_crash_test WORKER compact|series [KILLS=60] [STEPS=1000]
//   FEVO_TEST_SEED=N reproduces a run that printed "seed: N".
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fevo/record/run_writer.hpp>

#include "record_support.hpp"

namespace {

using namespace fevo_record_test;
namespace rd = fevo::record::detail;

int failures = 0;
#define EXPECT(cond, ...)                                     \
  do {                                                        \
    if (!(cond)) {                                            \
      ++failures;                                             \
      std::printf("FAILED: %s: ", #cond);                     \
      std::printf(__VA_ARGS__);                               \
      std::printf("\n");                                      \
    }                                                         \
  } while (0)

const std::vector<std::string> layer_names{"conv1", "block/conv,2", "fc"};

struct run_result {
  int status = 0;
  bool killed = false;
  std::string out;
};

/// Starts the worker; kills it after `kill_after` seconds unless negative; returns its output.
run_result run_worker(const std::string& worker, const std::vector<std::string>& args, double kill_after) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv{const_cast<char*>(worker.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(worker.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  run_result r;
  if (kill_after >= 0) {
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(kill_after);
    ts.tv_nsec = static_cast<long>((kill_after - double(ts.tv_sec)) * 1e9);
    ::nanosleep(&ts, nullptr);
    r.killed = ::kill(pid, SIGKILL) == 0;
  }
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  ::waitpid(pid, &r.status, 0);
  r.killed = r.killed && WIFSIGNALED(r.status);
  return r;
}

/// The last step whose rows are all complete lines in metrics.csv (0 when none); checks that
/// every complete line parses and that no (step, layer) repeats.
std::int64_t last_complete(const std::string& dir) {
  const std::string path = dir + "/metrics.csv";
  if (!exists(path)) return 0;
  std::string text = slurp(path);
  const auto cut = text.rfind('\n');
  text = cut == std::string::npos ? std::string() : text.substr(0, cut + 1);  // complete lines only
  const auto rows = parse_csv(text);
  std::int64_t last = 0;
  std::size_t in_group = 0;
  std::int64_t group_step = 0;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].size() != 9) return last;  // a torn line that happened to end in '\n' cannot occur
    const std::int64_t step = std::stoll(rows[r][1]);
    if (rows[r][2] != layer_names[in_group]) return last;
    if (in_group == 0) group_step = step;
    else if (step != group_step) return last;
    if (++in_group == layer_names.size()) {
      last = step;
      in_group = 0;
    }
  }
  return last;
}

std::string newest_events(const std::string& dir) {
  std::string best;
  if (!exists(dir)) return best;
  for (const auto& n : rd::list_dir(dir))
    if (n.rfind("events.out.tfevents.", 0) == 0 && n > best) best = n;
  return best.empty() ? best : dir + "/" + best;
}

std::vector<std::pair<std::int64_t, std::vector<std::pair<std::string, float>>>> events(const std::string& dir) {
  std::vector<std::pair<std::int64_t, std::vector<std::pair<std::string, float>>>> out;
  const std::string p = newest_events(dir);
  if (p.empty()) return out;
  rd::file f(p, O_RDONLY);
  std::uint64_t end = 0;
  const auto recs = rd::tb::scan(f, end, true);
  EXPECT(end == f.size(), "%s has a torn or corrupt tail at %llu of %llu", p.c_str(),
         (unsigned long long)end, (unsigned long long)f.size());
  for (const auto& r : recs)
    if (r.ev.has_summary) out.emplace_back(r.ev.step, r.ev.scalars);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s WORKER compact|series [KILLS] [STEPS]\n", argv[0]);
    return 2;
  }
  const std::string worker = argv[1], mode = argv[2];
  const int kills = argc > 3 ? std::atoi(argv[3]) : 60;
  const std::int64_t steps = argc > 4 ? std::atoll(argv[4]) : 1000;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::uint64_t seed;
  if (const char* env = std::getenv("FEVO_TEST_SEED"); env && *env) {
    seed = std::strtoull(env, nullptr, 0);
  } else {
    std::random_device rd_;
    seed = (std::uint64_t(rd_()) << 32) ^ rd_();
  }
  std::printf("fevo test seed: %llu (set FEVO_TEST_SEED=%llu to reproduce)\n", (unsigned long long)seed,
              (unsigned long long)seed);
  std::mt19937_64 rng(seed);
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto below = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng); };

  const auto t_begin = std::chrono::steady_clock::now();
  temp_dir tmp("crash");
  const std::string ref = tmp / "ref", run = tmp / "run";
  const std::string wseed = std::to_string(seed % 1000000007ull);

  // The uninterrupted reference, timed to scale the kill moments.
  const auto t0 = std::chrono::steady_clock::now();
  const run_result r0 = run_worker(worker, {ref, mode, wseed, "0", std::to_string(steps)}, -1);
  const double t_ref = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!WIFEXITED(r0.status) || WEXITSTATUS(r0.status) != 0 || r0.out.find("done") == std::string::npos) {
    std::printf("FAILED: the reference run did not finish (status %d): %s\n", r0.status, r0.out.c_str());
    return 1;
  }
  std::printf("reference: %lld steps in %.3f s\n", (long long)steps, t_ref);

  int killed = 0, completed = 0, torn_csv = 0, torn_journal = 0, torn_events = 0, natural_torn = 0;
  double scale = 2.0 * t_ref / std::max(kills, 1);
  for (int k = 0; k <= kills; ++k) {
    const bool last_round = k == kills;
    const std::int64_t L = last_complete(run);
    // Restart from a "training checkpoint" at or a little before the last recorded step.
    const std::int64_t from = std::max<std::int64_t>(0, L - std::int64_t(below(4)));
    // About steps/kills records per session on average, some kills while the run is reopened;
    // the scale adapts when sessions finish before their kill or die before reopening the run.
    const double delay = last_round ? -1 : uniform(0.0, scale);
    const run_result r = run_worker(worker, {run, mode, wseed, std::to_string(from), std::to_string(steps)}, delay);
    std::string resumed = "(killed before it reopened the run)";
    if (const auto p = r.out.find("resumed "); p != std::string::npos) {
      resumed = r.out.substr(p + 8, r.out.find('\n', p) - p - 8);
      const std::string want = L == 0 ? "none" : std::to_string(L);
      EXPECT(resumed == want, "round %d: resumed at %s, the last complete record of metrics.csv was %s", k,
             resumed.c_str(), want.c_str());
    }
    const bool done = r.out.find("done") != std::string::npos;
    if (r.killed) ++killed;
    if (done) ++completed;
    if (done) scale *= 0.7;
    else if (r.out.find("resumed ") == std::string::npos) scale *= 1.3;
    if (exists(run + "/metrics.csv")) {
      const std::string csv = slurp(run + "/metrics.csv");
      natural_torn += !csv.empty() && csv.back() != '\n';
    }
    if (!r.killed && !(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0)) {
      EXPECT(false, "round %d: the worker failed (status %d)", k, r.status);
      return 1;
    }
    scale = std::min(scale, 1.0 + 2.0 * t_ref);
    std::printf("round %2d: from %4lld, kill after %7.4f s: %s, resumed %s, last complete now %lld\n", k,
                (long long)from, delay, r.killed ? "killed" : (done ? "finished" : "exited"), resumed.c_str(),
                (long long)last_complete(run));
    if (last_round) {
      EXPECT(done, "the final run did not finish: %s", r.out.c_str());
      break;
    }
    // The torn tail a kill inside a write() leaves behind (sometimes on top of a real one).
    switch (below(4)) {
      case 1:
        if (exists(run + "/metrics.csv")) {
          append_bytes(run + "/metrics.csv", (std::to_string(L) + "," + std::to_string(L + 1) + ",conv1,0.0")
                                                 .substr(0, 1 + below(8)));
          ++torn_csv;
        }
        break;
      case 2:
        if (exists(run + "/fevo-state/journal.bin")) {
          std::string g(1 + below(99), '\0');
          for (auto& ch : g) ch = static_cast<char>(below(256));
          append_bytes(run + "/fevo-state/journal.bin", g);
          ++torn_journal;
        }
        break;
      case 3:
        if (const std::string ev = newest_events(run); !ev.empty()) {
          std::string g(1 + below(40), '\0');
          for (auto& ch : g) ch = static_cast<char>(below(256));
          append_bytes(ev, g);
          ++torn_events;
        }
        break;
      default:
        break;
    }
  }
  std::printf("%d kills (%d runs finished before their kill), %d left a torn metrics.csv line; torn tails "
              "added: %d csv, %d journal, %d events\n",
              killed, completed, natural_torn, torn_csv, torn_journal, torn_events);

  // metrics.csv parses; every (step, layer) once; step_prev = step - 1; equal to the reference.
  bool complete = false;
  const auto rows = parse_csv(slurp(run + "/metrics.csv"), &complete);
  EXPECT(complete, "metrics.csv does not end with a complete line");
  EXPECT(rows.size() == 1 + std::size_t(steps) * layer_names.size(), "metrics.csv has %zu rows, expected %zu",
         rows.size(), 1 + std::size_t(steps) * layer_names.size());
  std::set<std::pair<std::int64_t, std::string>> seen;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    EXPECT(rows[r].size() == 9, "row %zu has %zu fields", r, rows[r].size());
    if (rows[r].size() != 9) continue;
    const std::int64_t sp = std::stoll(rows[r][0]), s = std::stoll(rows[r][1]);
    EXPECT(seen.insert({s, rows[r][2]}).second, "duplicate row for step %lld layer %s", (long long)s,
           rows[r][2].c_str());
    EXPECT(sp == s - 1, "row %zu: step_prev %lld, step %lld", r, (long long)sp, (long long)s);
    for (int f : {3, 4, 5, 8}) to_double(rows[r][f]);
  }
  for (std::int64_t s = 1; s <= steps; ++s)
    for (const auto& n : layer_names) EXPECT(seen.count({s, n}) == 1, "no row for step %lld layer %s", (long long)s, n.c_str());
  EXPECT(slurp(run + "/metrics.csv") == slurp(ref + "/metrics.csv"), "metrics.csv differs from the reference");
  EXPECT(slurp(run + "/filter_summary.csv") == slurp(ref + "/filter_summary.csv"),
         "filter_summary.csv differs from the reference");
  if (mode == "series")
    for (const auto& n : rd::list_dir(ref + "/series"))
      EXPECT(exists(run + "/series/" + n) && slurp(run + "/series/" + n) == slurp(ref + "/series/" + n),
             "series/%s differs from the reference", n.c_str());
  const auto ev_run = events(run), ev_ref = events(ref);
  EXPECT(ev_ref.size() == std::size_t(steps), "reference events: %zu", ev_ref.size());
  EXPECT(ev_run.size() == ev_ref.size(), "events: %zu, reference %zu", ev_run.size(), ev_ref.size());
  bool same = ev_run.size() == ev_ref.size();
  for (std::size_t k = 0; same && k < ev_run.size(); ++k) same = ev_run[k] == ev_ref[k];
  EXPECT(same, "the event scalars differ from the reference");
  for (const auto& n : rd::list_dir(run))
    EXPECT(n.find(".fevo-tmp.") == std::string::npos, "temporary file left: %s", n.c_str());

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count();
  std::printf("%s in %.2f s\n", failures ? "FAILED" : "passed", secs);
  return failures ? 1 : 0;
}
