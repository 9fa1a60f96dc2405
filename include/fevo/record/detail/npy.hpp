// A minimal private .npy writer for the recorder's per-filter series: NumPy format version 1.0,
// little-endian '<f8' (float64) or '<i8' (int64), C order, header padded with spaces and a newline
// so that the data start at a multiple of 64 bytes, as NumPy writes it. The file is written
// atomically (see io.hpp). The project's general readers and writers live in <fevo/io/...>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io.hpp"

namespace fevo::record::detail {

/// The complete .npy preamble (magic, version, header length, header dict, padding).
inline std::string npy_header(const char* descr, const std::vector<std::uint64_t>& shape) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t k = 0; k < shape.size(); ++k) {
    dict += std::to_string(shape[k]);
    if (shape.size() == 1 || k + 1 < shape.size()) dict += ",";
    if (k + 1 < shape.size()) dict += " ";
  }
  dict += "), }";
  const std::size_t preamble = 10;  // magic (6) + version (2) + header length (2)
  std::size_t total = preamble + dict.size() + 1;  // + '\n'
  const std::size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  FEVO_EXPECTS(dict.size() <= 65535, "npy header too long for format version 1.0");
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  out += dict;
  return out;
}

/// Streams one .npy file to disk atomically: header first, then the data in C order.
class npy_writer {
 public:
  npy_writer(const std::string& path, const char* descr, const std::vector<std::uint64_t>& shape)
      : f_(path) {
    f_.write(npy_header(descr, shape));
  }
  void write_f64(const double* v, std::size_t n) {
    buf_.resize(n * 8);
    for (std::size_t i = 0; i < n; ++i) put_f64(buf_.data() + 8 * i, v[i]);
    f_.write(buf_.data(), buf_.size());
  }
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

}  // namespace fevo::record::detail
