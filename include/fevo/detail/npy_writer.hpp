// The one .npy writer of fevo (fevo::io::write_npy and the recorder's series files): NumPy format
// version 1.0 (2.0 when the header needs more than 65535 bytes), C order, the header dict padded
// with spaces and a newline so that the data start at a multiple of 64 bytes, as NumPy writes it.
// The file is written atomically (atomic_file.hpp). The readers are in <fevo/io/npy.hpp>.
#pragma once

#include "../config.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "atomic_file.hpp"
#include "little_endian.hpp"

namespace fevo::detail {

/// The complete .npy preamble (magic, version, header length, header dict, padding) for an array
/// of `descr` ("<f8", "<i8", ...; little-endian data) and `shape`.
inline std::string npy_header(const char* descr, const std::vector<std::uint64_t>& shape) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dict += ',';  // "(3,)": a 1-tuple
  dict += "), }";
  const auto build = [&](int major) {
    const std::size_t pre = major == 1 ? 10 : 12;  // magic (6), version (2), length (2 or 4)
    std::string h = dict;
    const std::size_t total = pre + h.size() + 1;
    h.append((64 - total % 64) % 64, ' ');
    h += '\n';
    std::string out = "\x93NUMPY";
    out += char(major);
    out += char(0);
    const std::uint64_t len = h.size();
    for (std::size_t i = 0; i < pre - 8; ++i) out += char((len >> (8 * i)) & 0xff);
    return out + h;
  };
  std::string v1 = build(1);
  if (v1.size() - 10 <= 65535) return v1;
  return build(2);
}

/// One .npy file streamed to disk atomically: the header, then the data in C order, then commit().
/// Without commit() nothing appears under the path.
class npy_writer {
 public:
  npy_writer(const std::string& path, const char* descr, const std::vector<std::uint64_t>& shape)
      : f_(path) {
    f_.write(npy_header(descr, shape));
  }
  /// Raw bytes of the data (little-endian elements of the header's descr).
  void write(const void* data, std::size_t n) { f_.write(data, n); }
  /// n doubles, as '<f8'.
  void write_f64(const double* v, std::size_t n) {
    buf_.resize(n * 8);
    for (std::size_t i = 0; i < n; ++i) put_f64(buf_.data() + 8 * i, v[i]);
    f_.write(buf_.data(), buf_.size());
  }
  /// n int64s, as '<i8'.
  void write_i64(const std::int64_t* v, std::size_t n) {
    buf_.resize(n * 8);
    for (std::size_t i = 0; i < n; ++i) put_u64(buf_.data() + 8 * i, static_cast<std::uint64_t>(v[i]));
    f_.write(buf_.data(), buf_.size());
  }
  void commit() { f_.commit(); }

 private:
  atomic_file f_;
  std::vector<unsigned char> buf_;
};

}  // namespace fevo::detail
