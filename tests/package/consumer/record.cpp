// fevo::record alone: the host recorder (fevo::seq) writing a run of one record. Usage:
// consumer SCRATCH_DIR (emptied first).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fevo/fevo.hpp>
#include <fevo/record/recorder.hpp>

#include "check.hpp"

int main(int argc, char** argv) {
  using namespace consumer;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    std::filesystem::remove_all(dir);
    std::vector<float> live = a;
    fevo::record::recorder_options o;
    o.out_dir = dir + "/run";
    o.tau = tau;
    fevo::record::recorder<float> rec(o);
    rec.add_layer("conv", fevo::oihw(static_cast<const float*>(live.data()), 2, 1, 1, 2));
    rec.start(0);
    live = b;
    const std::vector<fevo::layer_metrics> ms = rec.record(1);
    rec.close();
    check(ms.size() == 1 && expected(ms[0]), "recorder metrics");

    std::ifstream csv(o.out_dir + "/metrics.csv");
    std::string header, row;
    std::getline(csv, header);
    std::getline(csv, row);
    check(row.rfind("0,1,conv,1.125,0.5,0.5,2,", 0) == 0, "metrics.csv row");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
