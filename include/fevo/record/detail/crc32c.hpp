// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 with tables built once, and
// TFRecord's masked form. Used for the TensorBoard event file framing and for the checksums of the
// recorder's journal and checkpoint. crc32c("123456789") == 0xE3069283.
#pragma once

#include "../../config.hpp"

#include <cstddef>
#include <cstdint>

namespace fevo::record::detail {

struct crc32c_tables {
  std::uint32_t t[8][256];
  crc32c_tables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
  }
};

inline const crc32c_tables& crc32c_table() {
  static const crc32c_tables tables;
  return tables;
}

/// Continues a CRC32C: crc32c_extend(crc32c(a), b) == crc32c(a + b).
inline std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t n) {
  const auto& T = crc32c_table().t;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
  while (n >= 8) {
    const std::uint32_t lo = (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                              std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24) ^ c;
    const std::uint32_t hi = std::uint32_t(p[4]) | std::uint32_t(p[5]) << 8 |
                             std::uint32_t(p[6]) << 16 | std::uint32_t(p[7]) << 24;
    c = T[7][lo & 0xff] ^ T[6][(lo >> 8) & 0xff] ^ T[5][(lo >> 16) & 0xff] ^ T[4][lo >> 24] ^
        T[3][hi & 0xff] ^ T[2][(hi >> 8) & 0xff] ^ T[1][(hi >> 16) & 0xff] ^ T[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ T[0][(c ^ *p++) & 0xff];
  return ~c;
}

inline std::uint32_t crc32c(const void* data, std::size_t n) { return crc32c_extend(0, data, n); }

/// TFRecord's masked CRC: rotate right by 15 and add a constant (so that a CRC of data that
/// contains CRCs is not degenerate).
inline std::uint32_t mask_crc(std::uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
inline std::uint32_t masked_crc32c(const void* data, std::size_t n) { return mask_crc(crc32c(data, n)); }

}  // namespace fevo::record::detail
