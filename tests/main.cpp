// The main() of fevo's test executables (those that need nothing before the run; the CUDA tests
// first check for a device): the run of runner.cpp.
#include "runner.hpp"

int main(int argc, char* argv[]) { return fevo_test::run(argc, argv); }
