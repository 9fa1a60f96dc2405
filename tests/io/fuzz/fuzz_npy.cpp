// libFuzzer target: the .npy parser on arbitrary bytes. Every input must either be refused with a
// fevo::error or give an array whose bytes match its dtype and shape exactly; any other
// exception, a crash, a sanitizer report or a leak is a finding.
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz_npy.cpp
#define FEVO_IO_NO_NPZ 1
#include <fevo/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    fevo::io::npy_options opt;
    opt.void2_as_bfloat16 = size % 2 == 0;
    const fevo::io::npy_array a = fevo::io::parse_npy(data, size, "fuzz", opt);
    std::uint64_t elements = 0, nbytes = 0;
    if (!fevo::io::detail::shape_bytes(a.shape, a.type, elements, nbytes) || nbytes != a.bytes.size())
      __builtin_trap();  // a parsed array must be self-consistent
    volatile double sink = 0;
    if (fevo::io::is_analysable(a.type))
      for (std::uint64_t i = 0; i < elements; ++i) sink = sink + fevo::io::element_as_double(a.type, a.bytes.data(), i);
    if (a.type == fevo::io::dtype::f32 && (a.shape.size() == 4 || a.shape.size() == 2)) {
      std::vector<float> scratch;
      const auto v = fevo::io::view_of<float>(a, fevo::io::layout::hwio, scratch, true, "fuzz");
      if (!v.empty()) sink = sink + v(v.extent(0) - 1, v.extent(1) - 1, v.extent(2) - 1, v.extent(3) - 1);
    }
  } catch (const fevo::error&) {
  }
  return 0;
}
