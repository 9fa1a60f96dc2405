// The run every fevo test executable makes (runner.cpp): the run's seed, then Catch2's session.
#pragma once

#include <cstdint>

namespace fevo_test {

/// The run's seed: FEVO_TEST_SEED when set, else a random one; run() prints it.
std::uint64_t seed();

/// Picks the run's seed and prints it once, then runs the test cases argv selects (Catch2's
/// command line). Returns the exit code: Catch2's, or 2 when FEVO_TEST_SEED is not a number.
int run(int argc, char* argv[]);

}  // namespace fevo_test
