// libFuzzer target: the .npy parser on arbitrary bytes. Every input must either be refused with a
// fevo::error or give an array whose bytes match its dtype and shape exactly; any other
// exception, a crash, a sanitizer report or a leak is a finding.
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz_npy.cpp
#define FEVO_IO_NO_NPZ 1
#include <fevo/io/npy.hpp>

#include "check_array.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    fevo::io::npy_options opt;
    opt.void2_as_bfloat16 = size % 2 == 0;
    const fevo::io::npy_array a = fevo::io::parse_npy(data, size, "fuzz", opt);
    fevo_fuzz::check_array(a);
    if (a.type == fevo::io::dtype::f32 && (a.shape.size() == 4 || a.shape.size() == 2)) {
      std::vector<float> scratch;
      const auto v = fevo::io::view_of<float>(a, fevo::io::layout::hwio, scratch, true, "fuzz");
      volatile double sink = 0;
      if (!v.empty()) sink = sink + v(v.extent(0) - 1, v.extent(1) - 1, v.extent(2) - 1, v.extent(3) - 1);
    }
  } catch (const fevo::error&) {
  }
  return 0;
}
