// Catch2's implementation and the run every fevo test executable makes (runner.hpp), compiled once
// into the static library fevo_test_runner (tests/CMakeLists.txt says how and why).
//   FEVO_TEST_SEED=1234 ./fevo_test_backends     reproduces a run that printed "seed: 1234".
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_CONSOLE_WIDTH 200  // long INFO lines unbroken
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "runner.hpp"

namespace fevo_test {
namespace {
std::uint64_t run_seed = 0;
}
std::uint64_t seed() { return run_seed; }

int run(int argc, char* argv[]) {
  const char* env = std::getenv("FEVO_TEST_SEED");
  if (env && *env) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long s = std::strtoull(env, &end, 0);
    if (errno != 0 || *end != '\0') {
      std::fprintf(stderr, "FEVO_TEST_SEED must be an unsigned integer, got '%s'\n", env);
      return 2;
    }
    run_seed = s;
  } else {
    std::random_device rd;
    run_seed = (std::uint64_t(rd()) << 32) ^ rd();
  }
  std::printf("fevo test seed: %llu (set FEVO_TEST_SEED=%llu to reproduce)\n", (unsigned long long)run_seed,
              (unsigned long long)run_seed);
  std::fflush(stdout);
  return Catch::Session().run(argc, argv);
}

}  // namespace fevo_test
