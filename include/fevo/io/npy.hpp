// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), and, when libzip's
// <zip.h> is available, .npz archives (<fevo/io/npz.hpp>, included at the end).
//
//   fevo::io::npy_array a = fevo::io::read_npy("w.npy");   // validated, C order, little-endian
//   std::vector<float> scratch;
//   auto v = fevo::io::view_of<float>(a, fevo::io::layout::oihw, scratch);
//   fevo::io::write_npy("D_series.npy", fevo::io::dtype::f64, {steps, n}, values.data());
//
// Why fevo has its own reader instead of xtensor's load_npy: xtensor trusts the file. It does not
// check that the header length fits in the file, that the shape's element count times the item
// size does not overflow, or that the file holds exactly that many bytes (a truncated file is read
// past its end or silently short). Snapshot files come from other programs and other machines, so
// every one of those is checked here, and every failure is a fevo::error naming the file.
//
// What is accepted:
// - magic "\x93NUMPY", version 1.0 (2-byte header length), 2.0 or 3.0 (4-byte length; 3.0 means
//   the header is UTF-8 rather than latin-1); any other version is refused;
// - the header: a Python dict literal with exactly the keys 'descr', 'fortran_order' and 'shape',
//   in any order, each once; at most npy_max_header_size bytes; it must lie inside the file;
// - descr: '<f2' '<f4' '<f8' (analysed), plus the integer, bool and complex64 codes (listed, not
//   analysed); '>' (big-endian) data is byte-swapped to little-endian on read; '=' and no prefix
//   mean native (little-endian); '|' for one-byte types. A 2-byte void '<V2' / '|V2' is what
//   NumPy writes for ml_dtypes.bfloat16 arrays: read as BF16 only when
//   npy_options::void2_as_bfloat16 is set (write_npy writes BF16 as '<V2', as ml_dtypes does);
//   structured dtypes and every other type are refused;
// - shape: a tuple of at most 64 non-negative integers (a 1-tuple needs its comma: '(3,)'); the element count
//   times the item size must not overflow and must equal exactly the bytes after the header (a
//   short file and trailing bytes are both errors);
// - fortran_order: True or False. npy_array::bytes are always in C (row-major) order after a read:
//   Fortran-order data is transposed on read, and npy_array::fortran_order then only reports how
//   the file stored it. Views and writers always work on C order.
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../detail/npy_writer.hpp"
#include "../error.hpp"
#include "pickle.hpp"
#include "../view.hpp"
#include "atomic_write.hpp"
#include "dtype.hpp"

namespace fevo::io {

/// The largest .npy header accepted, in bytes (NumPy's own headers for plain dtypes are < 200).
inline constexpr std::uint64_t npy_max_header_size = 1u << 20;

/// The most dimensions accepted (NumPy 2's own limit).
inline constexpr std::size_t npy_max_rank = 64;

/// An array read from a .npy file (or written to one).
struct npy_array {
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  /// How the file stored the array. After read_npy / read_npz the bytes are ALWAYS in C order
  /// (Fortran-order files are transposed on read); this flag is informational only.
  bool fortran_order = false;
  /// The elements, little-endian, C order.
  std::vector<unsigned char> bytes;
  /// Where it was read from ("file.npy", "file.npz: member 'w.npy'"), for messages; may be empty.
  std::string source;

  std::uint64_t elements() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

struct npy_options {
  /// Read a 2-byte void descr ('<V2', '|V2': how NumPy saves ml_dtypes.bfloat16) as BF16.
  bool void2_as_bfloat16 = false;
};

/// A validated .npy header.
struct npy_header {
  int major = 1, minor = 0;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  bool fortran_order = false;
  bool big_endian = false;
  std::uint64_t data_offset = 0;  ///< where the data begins in the file
  std::uint64_t nbytes = 0;       ///< bytes of data the header declares
};

namespace detail {

/// The descr codes fevo knows, little-endian spelling without the byte-order character.
struct npy_code {
  const char* code;
  dtype type;
};
inline constexpr npy_code npy_codes[] = {
    {"f2", dtype::f16}, {"f4", dtype::f32}, {"f8", dtype::f64}, {"b1", dtype::boolean},
    {"u1", dtype::u8},  {"i1", dtype::i8},  {"i2", dtype::i16}, {"u2", dtype::u16},
    {"i4", dtype::i32}, {"u4", dtype::u32}, {"i8", dtype::i64}, {"u8", dtype::u64},
    {"c8", dtype::c64},
};

/// The descr fevo writes for a dtype ('<f4', ...); nullptr when .npy has no code for it.
inline const char* npy_descr(dtype t) {
  switch (t) {
    case dtype::f16: return "<f2";
    case dtype::f32: return "<f4";
    case dtype::f64: return "<f8";
    case dtype::bf16: return "<V2";  // as NumPy writes ml_dtypes.bfloat16
    case dtype::boolean: return "|b1";
    case dtype::u8: return "|u1";
    case dtype::i8: return "|i1";
    case dtype::i16: return "<i2";
    case dtype::u16: return "<u2";
    case dtype::i32: return "<i4";
    case dtype::u32: return "<u4";
    case dtype::i64: return "<i8";
    case dtype::u64: return "<u8";
    case dtype::c64: return "<c8";
    default: return nullptr;
  }
}

/// A tiny parser for the header's Python literal: {'key': value, ...} with string, True/False and
/// tuple-of-integers values. Anything else is an error.
class npy_header_parser {
 public:
  npy_header_parser(const char* p, std::size_t n, const std::string& name) : p_(p), n_(n), name_(name) {}

  std::string descr;
  std::vector<std::uint64_t> shape;
  bool fortran = false;

  void parse() {
    bool has_descr = false, has_fortran = false, has_shape = false;
    ws();
    expect('{');
    ws();
    while (peek() != '}') {
      const std::string key = string_literal("a key");
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        dup(has_descr, key);
        if (peek() == '[') err("'descr' is a list: structured dtypes are not supported");
        descr = string_literal("the value of 'descr'");
      } else if (key == "fortran_order") {
        dup(has_fortran, key);
        fortran = boolean();
      } else if (key == "shape") {
        dup(has_shape, key);
        tuple();
      } else {
        err("unexpected key '" + key + "' (a .npy header has exactly 'descr', 'fortran_order' "
            "and 'shape')");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != '}') {
        err("expected ',' or '}' after the value of '" + key + "'");
      }
    }
    ++i_;
    ws();
    if (i_ != n_) err("unexpected text after the header's closing '}'");
    if (!has_descr) err("the header has no 'descr' key");
    if (!has_fortran) err("the header has no 'fortran_order' key");
    if (!has_shape) err("the header has no 'shape' key");
  }

 private:
  const char* p_;
  std::size_t n_, i_ = 0;
  const std::string& name_;

  [[noreturn]] void err(const std::string& m) const {
    ::fevo::detail::fail(name_, ": invalid .npy header: ", m, " (at byte ", i_, " of the header)");
  }
  char peek() const {
    if (i_ >= n_) err("the header ends early");
    return p_[i_];
  }
  void ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) err(std::string("expected '") + c + "'");
    ++i_;
  }
  void dup(bool& seen, const std::string& key) {
    if (seen) err("key '" + key + "' appears twice");
    seen = true;
  }
  std::string string_literal(const char* what) {
    const char q = peek();
    if (q != '\'' && q != '"') err(std::string("expected a string for ") + what);
    ++i_;
    std::string s;
    while (peek() != q) {
      char c = p_[i_++];
      if (c == '\\') c = peek(), ++i_;
      if (c == '\n') err("newline inside a string");
      s += c;
    }
    ++i_;
    return s;
  }
  bool boolean() {
    if (n_ - i_ >= 4 && std::memcmp(p_ + i_, "True", 4) == 0) return i_ += 4, true;
    if (n_ - i_ >= 5 && std::memcmp(p_ + i_, "False", 5) == 0) return i_ += 5, false;
    err("'fortran_order' must be True or False");
  }
  void tuple() {
    if (peek() != '(') err("'shape' must be a tuple of integers, such as (2, 3)");
    ++i_;
    ws();
    bool comma_after_last = false;
    while (peek() != ')') {
      if (!(peek() >= '0' && peek() <= '9'))
        err("'shape' must hold non-negative integers");
      std::uint64_t v = 0;
      while (i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9') {
        if (__builtin_mul_overflow(v, std::uint64_t(10), &v) ||
            __builtin_add_overflow(v, std::uint64_t(p_[i_] - '0'), &v))
          err("a dimension of 'shape' does not fit in 64 bits");
        ++i_;
      }
      if (i_ < n_ && p_[i_] == 'L') ++i_;  // Python 2 long, as old NumPy wrote
      shape.push_back(v);
      if (shape.size() > npy_max_rank)
        err("'shape' has more than " + std::to_string(npy_max_rank) + " dimensions");
      ws();
      comma_after_last = false;
      if (peek() == ',') {
        ++i_;
        ws();
        comma_after_last = true;
      } else if (peek() != ')') {
        err("expected ',' or ')' in 'shape'");
      }
    }
    ++i_;
    if (shape.size() == 1 && !comma_after_last)
      err("'shape' is '(n)', which is an integer in Python, not a tuple; write '(n,)'");
  }
};

/// Reverses the bytes of every `item`-byte unit.
inline void byteswap_inplace(unsigned char* p, std::size_t nbytes, std::size_t item) {
  if (item <= 1) return;
  for (std::size_t i = 0; i + item <= nbytes; i += item) std::reverse(p + i, p + i + item);
}

/// Rearranges `n`-byte items from Fortran to C order for `shape`.
inline std::vector<unsigned char> fortran_to_c(const unsigned char* src, const std::vector<std::uint64_t>& shape,
                                               std::size_t item, std::size_t nbytes) {
  std::vector<unsigned char> dst(nbytes);
  const std::size_t rank = shape.size();
  const std::uint64_t count = nbytes / (item ? item : 1);
  if (count == 0) return dst;
  if (rank <= 1) {
    std::memcpy(dst.data(), src, nbytes);
    return dst;
  }
  // Walk the C-order destination sequentially, tracking the Fortran-order source offset.
  std::vector<std::uint64_t> idx(rank, 0), fstride(rank);
  std::uint64_t s = 1;
  for (std::size_t r = 0; r < rank; ++r) fstride[r] = s, s *= shape[r];
  std::uint64_t off = 0;
  for (std::uint64_t k = 0; k < count; ++k) {
    std::memcpy(dst.data() + k * item, src + off * item, item);
    for (std::size_t r = rank; r-- > 0;) {
      if (++idx[r] < shape[r]) {
        off += fstride[r];
        break;
      }
      off -= (shape[r] - 1) * fstride[r];
      idx[r] = 0;
    }
  }
  return dst;
}

}  // namespace detail

/// Parses and validates a .npy header from the first `n` bytes of a file of `file_size` bytes
/// (pass n == file_size when the whole file is in memory). Throws fevo::error naming `name`.
inline npy_header parse_npy_header(const unsigned char* p, std::size_t n, std::uint64_t file_size,
                                   const std::string& name, const npy_options& opt = {}) {
  using ::fevo::detail::fail;
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (n < 6 || std::memcmp(p, magic, 6) != 0) {
    if (starts_like_pickle(p, n)) throw open_error_for_pickle(name);
    fail(name, ": not a .npy file (it does not start with the magic string \\x93NUMPY)");
  }
  if (n < 10) fail(name, ": file ends inside the .npy preamble (", n, " bytes)");
  npy_header h;
  h.major = p[6];
  h.minor = p[7];
  if (!((h.major == 1 || h.major == 2 || h.major == 3) && h.minor == 0))
    fail(name, ": unsupported .npy format version ", h.major, ".", h.minor,
         " (supported: 1.0, 2.0, 3.0)");
  std::uint64_t hlen = 0, pre = 0;
  if (h.major == 1) {
    hlen = std::uint64_t(p[8]) | std::uint64_t(p[9]) << 8;
    pre = 10;
  } else {
    if (n < 12) fail(name, ": file ends inside the .npy preamble (", n, " bytes)");
    hlen = std::uint64_t(p[8]) | std::uint64_t(p[9]) << 8 | std::uint64_t(p[10]) << 16 |
           std::uint64_t(p[11]) << 24;
    pre = 12;
  }
  if (hlen > npy_max_header_size)
    fail(name, ": .npy header length ", hlen, " exceeds the limit of ", npy_max_header_size, " bytes");
  if (pre + hlen > file_size || pre + hlen > n)
    fail(name, ": .npy header length ", hlen, " is larger than the ", file_size - pre,
         " bytes that follow it in the file (truncated file?)");
  const char* text = reinterpret_cast<const char*>(p + pre);
  if (h.major == 3) {
    const std::size_t bad = detail::utf8_invalid_at(p + pre, std::size_t(hlen));
    if (bad != hlen) fail(name, ": .npy 3.0 header is not valid UTF-8 (byte ", bad, ")");
  }
  detail::npy_header_parser hp(text, std::size_t(hlen), name);
  hp.parse();

  // descr: byte-order character, then a type code.
  std::string code = hp.descr;
  char order = '=';
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '=' || code[0] == '|'))
    order = code[0], code = code.substr(1);
  bool found = false;
  for (const auto& c : detail::npy_codes)
    if (code == c.code) h.type = c.type, found = true;
  if (!found && code == "V2") {
    if (!opt.void2_as_bfloat16)
      fail(name, ": descr '", hp.descr, "' is a 2-byte void type, which is how NumPy saves "
           "ml_dtypes.bfloat16 arrays; read it with npy_options::void2_as_bfloat16 (BF16), or "
           "save the array as float32");
    h.type = dtype::bf16, found = true;
  }
  if (!found)
    fail(name, ": unsupported descr '", hp.descr, "' (supported: '<f2', '<f4', '<f8' for "
         "analysis; integer, bool and complex64 codes are listed only; '>' is byte-swapped)");
  const std::size_t item = dtype_size(h.type);
  if (order == '|' && item != 1 && !(h.type == dtype::bf16))
    fail(name, ": descr '", hp.descr, "' gives no byte order for a multi-byte type");
  h.big_endian = order == '>' && item > 1;
  h.fortran_order = hp.fortran;
  h.shape = std::move(hp.shape);
  std::uint64_t elements = 0;
  if (!detail::shape_bytes(h.shape, h.type, elements, h.nbytes))
    fail(name, ": shape ", shape_string(h.shape), " overflows: its size in bytes (elements x ",
         item, ") does not fit in 64 bits");
  h.data_offset = pre + hlen;
  const std::uint64_t have = file_size - h.data_offset;
  if (have < h.nbytes)
    fail(name, ": truncated: the header needs ", h.nbytes, " bytes of data (shape ", shape_string(h.shape),
         " of ", hp.descr, "), the file holds ", have);
  if (have > h.nbytes)
    fail(name, ": ", have - h.nbytes, " trailing bytes after the data (shape ",
         shape_string(h.shape), " of ", hp.descr, " needs ", h.nbytes, " bytes)");
  return h;
}

namespace detail {
/// Turns a buffer holding a whole .npy file into an npy_array in place (no second copy unless
/// the data is Fortran order).
inline npy_array npy_from_buffer(std::vector<unsigned char>&& buf, const std::string& name,
                                 const npy_options& opt) {
  const npy_header h = parse_npy_header(buf.data(), buf.size(), buf.size(), name, opt);
  npy_array a;
  a.source = name;
  a.type = h.type;
  a.shape = h.shape;
  a.fortran_order = h.fortran_order;
  buf.erase(buf.begin(), buf.begin() + std::ptrdiff_t(h.data_offset));
  const std::size_t item = dtype_size(h.type);
  if (h.big_endian) {
    // complex64 is two f32: swap each half.
    detail::byteswap_inplace(buf.data(), buf.size(), h.type == dtype::c64 ? 4 : item);
  }
  if (h.fortran_order && h.shape.size() > 1)
    a.bytes = detail::fortran_to_c(buf.data(), h.shape, item, buf.size());
  else
    a.bytes = std::move(buf);
  return a;
}

/// Reads a regular file, its first `limit` bytes at most (the whole file by default), and gives its
/// size in *file_size when asked; fevo::error naming it on any failure.
inline std::vector<unsigned char> read_file(const std::string& path,
                                            std::uint64_t limit = ~std::uint64_t(0),
                                            std::uint64_t* file_size = nullptr) {
  using ::fevo::detail::fail;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", errno_text(errno));
  struct ::stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (a directory)" : "");
  }
  if (file_size) *file_size = std::uint64_t(st.st_size);
  std::vector<unsigned char> buf;
  try {
    buf.resize(std::size_t(std::min<std::uint64_t>(std::uint64_t(st.st_size), limit)));
  } catch (...) {
    ::close(fd);
    throw;
  }
  std::size_t got = 0;
  while (got < buf.size()) {
    const ::ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      if (r == 0) fail(path, ": file shrank while being read (", got, " of ", buf.size(), " bytes)");
      fail(path, ": read failed: ", errno_text(e));
    }
    got += std::size_t(r);
  }
  ::close(fd);
  return buf;
}
}  // namespace detail

/// Parses a whole .npy file held in memory. Throws fevo::error naming `name`.
inline npy_array parse_npy(const unsigned char* p, std::size_t n, const std::string& name,
                           const npy_options& opt = {}) {
  parse_npy_header(p, n, n, name, opt);  // validate before copying anything
  return detail::npy_from_buffer(std::vector<unsigned char>(p, p + n), name, opt);
}

/// Reads and validates a .npy file. Throws fevo::error naming the file and the problem.
inline npy_array read_npy(const std::string& path, const npy_options& opt = {}) {
  return detail::npy_from_buffer(detail::read_file(path), path, opt);
}

/// Reads and validates a .npy file's header alone (dtype, shape, and that the file holds exactly
/// the data it declares), reading no more than the header's bytes.
inline npy_header read_npy_header(const std::string& path, const npy_options& opt = {}) {
  std::uint64_t size = 0;
  const std::vector<unsigned char> head = detail::read_file(path, 12 + npy_max_header_size, &size);
  return parse_npy_header(head.data(), head.size(), size, path, opt);
}

/// The header NumPy would write for this array: version 1.0 (2.0 when the header needs more
/// than 65535 bytes), padded with spaces and a newline so that the data starts at a multiple of 64.
inline std::string npy_header_bytes(dtype type, const std::vector<std::uint64_t>& shape) {
  const char* descr = detail::npy_descr(type);
  if (!descr) ::fevo::detail::fail(".npy has no type code for dtype ", dtype_name(type));
  return ::fevo::detail::npy_header(descr, shape);
}

/// Writes a .npy file atomically (see atomic_write): `data` holds the product of `shape`
/// elements of `type`, little-endian, C order. BF16 is written as '<V2', as NumPy does for
/// ml_dtypes.bfloat16 (read it back with npy_options::void2_as_bfloat16, or in Python with
/// np.load(p).view(ml_dtypes.bfloat16)).
inline void write_npy(const std::string& path, dtype type, const std::vector<std::uint64_t>& shape,
                      const void* data) {
  using ::fevo::detail::fail;
  const char* descr = detail::npy_descr(type);
  if (!descr) fail(path, ": .npy has no type code for dtype ", dtype_name(type));
  std::uint64_t elements = 0, nbytes = 0;
  if (!detail::shape_bytes(shape, type, elements, nbytes))
    fail(path, ": shape ", shape_string(shape), " overflows");
  if (nbytes > 0 && data == nullptr) fail(path, ": data is a null pointer");
  ::fevo::detail::npy_writer w(path, descr, shape);
  w.write(data, std::size_t(nbytes));
  w.commit();
}

/// Writes an npy_array (its bytes must be C order, as after a read).
inline void write_npy(const std::string& path, const npy_array& a) {
  std::uint64_t elements = 0, nbytes = 0;
  FEVO_EXPECTS(detail::shape_bytes(a.shape, a.type, elements, nbytes) && nbytes == a.bytes.size(),
               path, ": npy_array of shape ", shape_string(a.shape), " holds ", a.bytes.size(),
               " bytes, not ", nbytes);
  write_npy(path, a.type, a.shape, a.bytes.data());
}

/// An array as a fevo view of T; same rules as the safetensors view_of (rank 4 in `lay`, rank 2
/// with allow_2d, T matching the dtype). Messages name `name`, or else the array's source.
template <class T>
filter_view<const T> view_of(const npy_array& a, layout lay, std::vector<T>& scratch,
                             bool allow_2d = false, const std::string& name = "") {
  return detail::layer_view<T>(a.bytes.data(), a.type, a.shape, a.bytes.size(), lay, scratch,
                               allow_2d, name.empty() ? a.source : name, "");
}

}  // namespace fevo::io

#if !defined(FEVO_IO_NO_NPZ) && defined(__has_include)
#if __has_include(<zip.h>)
#include "npz.hpp"
#endif
#endif
