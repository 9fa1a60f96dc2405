// libFuzzer target: the .npz reader (libzip behind fevo's checks) on arbitrary bytes, held in
// memory. Every input must either be refused with a fevo::error or give members whose arrays
// match their dtype and shape exactly, and whose .npy header, read on its own, says the same; any
// other exception, a crash, a sanitizer report or a leak is a finding.
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz_npz.cpp -lzip
// libzip itself is not instrumented: ASan sees fevo's accesses, libzip's crashes still crash.
#include <fevo/io/npz.hpp>

#include "check_array.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Limits scaled to the fuzzer's inputs (at most a few KiB), so that a member that declares more
  // than it holds costs a small allocation, and the ratio check is reached.
  fevo::io::npz_limits lim;
  lim.max_members = 64;
  lim.max_member_bytes = std::uint64_t(1) << 20;
  lim.max_total_bytes = std::uint64_t(4) << 20;
  lim.max_ratio = 256;
  lim.ratio_floor_bytes = std::uint64_t(64) << 10;
  fevo::io::npy_options opt;
  opt.void2_as_bfloat16 = size % 2 == 0;
  try {
    const auto z = fevo::io::npz_archive::from_memory(data, size, "fuzz.npz", lim, opt);
    for (const fevo::io::npz_member& m : z.members()) {
      if (m.size > lim.max_member_bytes) __builtin_trap();  // scan() must have refused it
      try {
        const fevo::io::npy_array a = z.read(m);
        fevo_fuzz::check_array(a);
        // A member that reads whole has a header that reads alone, and it says the same.
        const fevo::io::npy_header h = z.header(m.key);
        if (h.type != a.type || h.shape != a.shape) __builtin_trap();
      } catch (const fevo::error&) {
      }
    }
  } catch (const fevo::error&) {
  }
  return 0;
}
