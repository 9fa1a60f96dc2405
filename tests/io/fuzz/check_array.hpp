// What the .npy and .npz fuzz targets check of every array they parse.
#pragma once

#include <fevo/io/npy.hpp>

#include <cstdint>

namespace fevo_fuzz {

/// Traps unless the array's bytes are exactly what its dtype and shape declare, then reads every
/// element of an analysable dtype (so that AddressSanitizer sees any read past the bytes).
inline void check_array(const fevo::io::npy_array& a) {
  std::uint64_t elements = 0, nbytes = 0;
  if (!fevo::io::detail::shape_bytes(a.shape, a.type, elements, nbytes) || nbytes != a.bytes.size())
    __builtin_trap();  // a parsed array must be self-consistent
  volatile double sink = 0;
  if (fevo::io::is_analysable(a.type))
    for (std::uint64_t i = 0; i < elements; ++i) sink = sink + fevo::io::element_as_double(a.type, a.bytes.data(), i);
}

}  // namespace fevo_fuzz
