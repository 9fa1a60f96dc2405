// libFuzzer target: the safetensors parser on arbitrary bytes. Every input must either be refused
// with a fevo::error or give tensors whose data and views stay inside the buffer; any other
// exception, a crash, a sanitizer report or a leak is a finding.
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude fuzz_safetensors.cpp
#include <fevo/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {
template <class T>
double touch(const fevo::io::safetensors_file& f, const fevo::io::tensor_info& t, bool allow_2d) {
  std::vector<T> scratch;
  double s = 0;
  try {
    const auto v = fevo::io::view_of<T>(f, t, fevo::io::layout::oihw, scratch, allow_2d);
    for (std::size_t i = 0; i < v.extent(0); ++i)
      for (std::size_t c = 0; c < v.extent(1); ++c)
        for (std::size_t h = 0; h < v.extent(2); ++h)
          for (std::size_t w = 0; w < v.extent(3); ++w) s += double(fevo::load(v(i, c, h, w)));
    const auto hw = fevo::io::view_of<T>(f, t, fevo::io::layout::hwio, scratch, allow_2d);
    if (!hw.empty()) s += double(fevo::load(hw(hw.extent(0) - 1, hw.extent(1) - 1, hw.extent(2) - 1, hw.extent(3) - 1)));
  } catch (const fevo::error&) {
  }
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = fevo::io::safetensors_file::from_memory(data, size, "fuzz");
    volatile double sink = 0;
    for (const auto& t : f.tensors()) {
      const unsigned char* p = f.data(t);
      unsigned acc = 0;
      for (std::uint64_t i = 0; i < t.nbytes; ++i) acc += p[i];  // every byte must be in the buffer
      sink = sink + acc;
      if (f.find(t.name) == nullptr) __builtin_trap();
      switch (t.type) {
        case fevo::io::dtype::f16: sink = sink + touch<fevo::half>(f, t, true); break;
        case fevo::io::dtype::bf16: sink = sink + touch<fevo::bfloat16>(f, t, true); break;
        case fevo::io::dtype::f32: sink = sink + touch<float>(f, t, false); break;
        case fevo::io::dtype::f64: sink = sink + touch<double>(f, t, true); break;
        default: break;
      }
    }
    for (const auto& kv : f.metadata()) sink = sink + double(kv.first.size() + kv.second.size());
  } catch (const fevo::error&) {
  }
  return 0;
}
