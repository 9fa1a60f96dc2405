// The process the crash test kills: records steps FROM+1..STEPS of three synthetic layers (the
// weights at each step are a pure function of SEED and the step, as if training were replayed
// from a checkpoint at FROM) and closes the run. It prints "resumed <last step|none>" once the
// run is open and "done" at the end.
//   fevo_record_crash_worker DIR compact|series SEED FROM STEPS
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <fevo/record/recorder.hpp>

#include "record_support.hpp"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s DIR compact|series SEED FROM STEPS\n", argv[0]);
    return 2;
  }
  try {
    const std::string dir = argv[1], mode = argv[2];
    const std::uint64_t seed = std::strtoull(argv[3], nullptr, 10);
    const std::int64_t from = std::strtoll(argv[4], nullptr, 10), steps = std::strtoll(argv[5], nullptr, 10);
    std::vector<float> a(16 * 8 * 3 * 3), b(3 * 3 * 16 * 24), c(10 * 32);
    const std::vector<fevo::filter_view<float>> views{fevo::oihw(a.data(), 16, 8, 3, 3),
                                                      fevo::hwio(b.data(), 3, 3, 16, 24),
                                                      fevo::oihw(c.data(), 10, 32, 1, 1)};
    const char* names[] = {"conv1", "block/conv,2", "fc"};
    auto fill = [&](std::int64_t step) {
      for (unsigned k = 0; k < views.size(); ++k) fevo_record_test::synth_fill(views[k], seed, k, step);
    };
    fevo::record::recorder_options o;
    o.out_dir = dir;
    o.tau = fevo_record_test::synth_tau;
    o.tensorboard = true;
    if (mode == "series") {
      o.per_filter_series = true;
      o.journal_compact_bytes = 32768;  // checkpoints that shorten the replay; journal kept
    } else {
      o.journal_compact_bytes = 16384;  // checkpoint and empty the journal every ~12 records
    }
    fevo::record::recorder<float> rec(o);
    for (unsigned k = 0; k < views.size(); ++k) rec.add_layer(names[k], views[k]);
    fill(from);
    rec.start(from);
    if (rec.last_recorded_step())
      std::printf("resumed %lld\n", static_cast<long long>(*rec.last_recorded_step()));
    else
      std::printf("resumed none\n");
    std::fflush(stdout);
    for (std::int64_t t = from + 1; t <= steps; ++t) {
      fill(t);
      rec.record(t);
    }
    rec.close();
    std::printf("done\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash worker: %s\n", e.what());
    return 1;
  }
}
