// Little-endian encoding of fixed-size integers and doubles, whatever the host's byte order: the
// byte layout of fevo's binary files (the recorder's journal and checkpoint, TFRecord framing,
// .npy data).
#pragma once

#include "../config.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace fevo::detail {

// On a little-endian host a field is its bytes as they are: one store or load (GCC keeps the byte
// loops below byte by byte where the destination may alias the source, as in the journal's
// encoding of 26,560 filters a record).
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
inline constexpr bool host_little_endian = true;
#else
inline constexpr bool host_little_endian = false;
#endif

inline void put_u32(unsigned char* p, std::uint32_t v) {
  if constexpr (host_little_endian) std::memcpy(p, &v, 4);
  else
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void put_u64(unsigned char* p, std::uint64_t v) {
  if constexpr (host_little_endian) std::memcpy(p, &v, 8);
  else
    for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void put_f64(unsigned char* p, double v) {
  std::uint64_t u;
  std::memcpy(&u, &v, 8);
  put_u64(p, u);
}
inline std::uint32_t get_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  if constexpr (host_little_endian) std::memcpy(&v, p, 4);
  else
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(p[i]) << (8 * i);
  return v;
}
inline std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  if constexpr (host_little_endian) std::memcpy(&v, p, 8);
  else
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}
inline double get_f64(const unsigned char* p) {
  const std::uint64_t u = get_u64(p);
  double v;
  std::memcpy(&v, &u, 8);
  return v;
}

/// Appends little-endian fields to a byte vector: what fevo sends between processes (the sharded
/// recorder's fragments, `mpirun fevo analyze`'s messages).
struct byte_writer {
  std::vector<unsigned char> b;
  void u64(std::uint64_t v) {
    unsigned char t[8];
    put_u64(t, v);
    b.insert(b.end(), t, t + 8);
  }
  void f64(double v) {
    unsigned char t[8];
    put_f64(t, v);
    b.insert(b.end(), t, t + 8);
  }
  /// The length (u64), then the bytes.
  void text(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};

}  // namespace fevo::detail
