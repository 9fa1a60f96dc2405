// Little-endian encoding of fixed-size integers and doubles, whatever the host's byte order: the
// byte layout of fevo's binary files (the recorder's journal and checkpoint, TFRecord framing,
// .npy data).
#pragma once

#include "../config.hpp"

#include <cstdint>
#include <cstring>

namespace fevo::detail {

inline void put_u32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void put_u64(unsigned char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void put_f64(unsigned char* p, double v) {
  std::uint64_t u;
  std::memcpy(&u, &v, 8);
  put_u64(p, u);
}
inline std::uint32_t get_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t(p[i]) << (8 * i);
  return v;
}
inline std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}
inline double get_f64(const unsigned char* p) {
  const std::uint64_t u = get_u64(p);
  double v;
  std::memcpy(&v, &u, 8);
  return v;
}

}  // namespace fevo::detail
