// Helpers of the fevo::io tests: a temporary directory, raw file I/O, error-message checks,
// hand-built safetensors / .npy files (to reach every malformation), and a minimal zip writer
// (stored or deflated members, every header field under the test's control) for .npz files.
#pragma once

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include <fevo/error.hpp>
#include <fevo/io/dtype.hpp>

namespace fevo_io_test {

using bytes = std::vector<unsigned char>;
namespace fs = std::filesystem;

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/fevo-io-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(::mkdtemp(buf.data()) != nullptr);
    path = buf.data();
  }
  ~temp_dir() {
    std::error_code ec;
    for (auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_directory(ec)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

inline void write_raw(const std::string& path, const bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}
inline void write_raw(const std::string& path, const std::string& s) {
  write_raw(path, bytes(s.begin(), s.end()));
}
inline bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return bytes(std::istreambuf_iterator<char>(f), {});
}
inline bytes to_bytes(const std::string& s) { return bytes(s.begin(), s.end()); }
inline void append(bytes& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
inline void append(bytes& b, const bytes& s) { b.insert(b.end(), s.begin(), s.end()); }
inline void put_le(bytes& b, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xff));
}

/// Runs f; returns the message of the fevo::error it throws. Anything else fails the test.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const fevo::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw a " << typeid(e).name() << ", not a fevo::error: " << e.what());
    return "<wrong exception>";
  }
  FAIL_CHECK("no fevo::error was thrown");
  return "<no error>";
}

/// Every part must appear in the message.
inline void check_message(const std::string& msg, std::initializer_list<std::string> parts) {
  for (const auto& p : parts) {
    INFO("message: " << msg);
    INFO("expected to contain: " << p);
    CHECK(msg.find(p) != std::string::npos);
  }
}

// ---- hand-built files -----------------------------------------------------------------------------

/// A safetensors file: 8-byte length (or `len` when given), the header text, then `data` bytes
/// of a recognisable pattern.
inline bytes safetensors_bytes(const std::string& header, std::size_t data,
                               const std::uint64_t* len = nullptr) {
  bytes b;
  put_le(b, len ? *len : header.size(), 8);
  append(b, header);
  for (std::size_t i = 0; i < data; ++i) b.push_back(static_cast<unsigned char>(i * 7 + 1));
  return b;
}

/// A .npy file: magic, version, header length (2 or 4 bytes by version, or `len` when given),
/// the header text exactly as given, then `data` pattern bytes.
inline bytes npy_bytes(int major, int minor, const std::string& header, std::size_t data,
                       const std::uint64_t* len = nullptr) {
  bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major),
             static_cast<unsigned char>(minor)};
  put_le(b, len ? *len : header.size(), major == 1 ? 2 : 4);
  append(b, header);
  for (std::size_t i = 0; i < data; ++i) b.push_back(static_cast<unsigned char>(i * 5 + 3));
  return b;
}

// ---- a minimal zip writer ---------------------------------------------------------------------------

struct zip_entry {
  std::string name;
  bytes data;                 ///< the uncompressed content
  bool deflate = false;
  // Overrides of what the headers declare (to build broken archives); -1 = the true value.
  long long declared_size = -1;
  long long declared_crc = -1;
  long long local_offset = -1;  ///< central directory's pointer to the local header
};

inline bytes raw_deflate(const unsigned char* p, std::size_t n, int level = 9) {
  z_stream s{};
  REQUIRE(deflateInit2(&s, level, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  bytes out(deflateBound(&s, uLong(n)) + 64);
  s.next_in = const_cast<unsigned char*>(p);
  s.avail_in = uInt(n);
  s.next_out = out.data();
  s.avail_out = uInt(out.size());
  REQUIRE(deflate(&s, Z_FINISH) == Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

/// Deflates `n` zero bytes without holding them in memory; returns the stream and its CRC.
inline bytes deflate_zeros(std::uint64_t n, std::uint32_t& crc) {
  z_stream s{};
  REQUIRE(deflateInit2(&s, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  static const bytes zeros(1 << 20, 0);
  bytes out;
  unsigned char buf[1 << 16];
  crc = std::uint32_t(crc32(0, nullptr, 0));
  std::uint64_t left = n;
  int flush = Z_NO_FLUSH;
  do {
    const std::size_t chunk = left < zeros.size() ? std::size_t(left) : zeros.size();
    crc = std::uint32_t(crc32(crc, zeros.data(), uInt(chunk)));
    left -= chunk;
    flush = left == 0 ? Z_FINISH : Z_NO_FLUSH;
    s.next_in = const_cast<unsigned char*>(zeros.data());
    s.avail_in = uInt(chunk);
    do {
      s.next_out = buf;
      s.avail_out = sizeof buf;
      deflate(&s, flush);
      out.insert(out.end(), buf, buf + (sizeof buf - s.avail_out));
    } while (s.avail_out == 0);
  } while (flush != Z_FINISH);
  deflateEnd(&s);
  return out;
}

/// A zip archive of `entries` (no zip64: every size must be below 4 GiB). `precompressed`, when
/// an entry's data is empty and `streams` holds a stream for it, lets a test supply deflated data
/// directly (zip bombs without the bomb in memory).
struct zip_stream {
  bytes compressed;
  std::uint32_t crc = 0;
  std::uint64_t size = 0;
};
inline bytes zip_bytes(const std::vector<zip_entry>& entries,
                       const std::vector<const zip_stream*>& streams = {}) {
  bytes out, central;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const zip_entry& e = entries[i];
    const zip_stream* st = i < streams.size() ? streams[i] : nullptr;
    bytes comp;
    std::uint32_t crc;
    std::uint64_t size;
    bool deflate = e.deflate;
    if (st) {
      comp = st->compressed, crc = st->crc, size = st->size, deflate = true;
    } else {
      comp = e.deflate ? raw_deflate(e.data.data(), e.data.size()) : e.data;
      crc = std::uint32_t(crc32(crc32(0, nullptr, 0), e.data.data(), uInt(e.data.size())));
      size = e.data.size();
    }
    if (e.declared_size >= 0) size = std::uint64_t(e.declared_size);
    if (e.declared_crc >= 0) crc = std::uint32_t(e.declared_crc);
    const std::uint64_t offset = out.size();
    const auto header = [&](bytes& b, bool local) {
      put_le(b, local ? 0x04034b50 : 0x02014b50, 4);
      if (!local) put_le(b, 20, 2);  // version made by
      put_le(b, 20, 2);              // version needed
      put_le(b, 0, 2);               // flags
      put_le(b, deflate ? 8 : 0, 2);
      put_le(b, 0, 2);       // time
      put_le(b, 0x21, 2);    // date: 1980-01-01
      put_le(b, crc, 4);
      put_le(b, comp.size(), 4);
      put_le(b, size, 4);
      put_le(b, e.name.size(), 2);
      put_le(b, 0, 2);  // extra
      if (!local) {
        put_le(b, 0, 2);  // comment
        put_le(b, 0, 2);  // disk
        put_le(b, 0, 2);  // internal attributes
        put_le(b, 0, 4);  // external attributes
        put_le(b, e.local_offset >= 0 ? std::uint64_t(e.local_offset) : offset, 4);
      }
      append(b, e.name);
    };
    header(out, true);
    append(out, comp);
    header(central, false);
  }
  const std::uint64_t cd_offset = out.size();
  append(out, central);
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, central.size(), 4);
  put_le(out, cd_offset, 4);
  put_le(out, 0, 2);
  return out;
}

/// An archive of stored members whose data overlap: member i's data is member i+1's local header
/// and data, the last one's is `payload`. Every header is consistent; only the overlap is wrong.
inline bytes overlapping_zip(const std::vector<std::string>& names, const bytes& payload) {
  const auto crc_of = [](const bytes& b) {
    return std::uint32_t(crc32(crc32(0, nullptr, 0), b.data(), uInt(b.size())));
  };
  const auto header = [](bytes& b, const std::string& name, std::uint32_t crc, std::size_t size,
                         bool local, std::uint64_t offset) {
    put_le(b, local ? 0x04034b50 : 0x02014b50, 4);
    if (!local) put_le(b, 20, 2);
    put_le(b, 20, 2);
    put_le(b, 0, 2);
    put_le(b, 0, 2);  // stored
    put_le(b, 0, 2);
    put_le(b, 0x21, 2);
    put_le(b, crc, 4);
    put_le(b, size, 4);
    put_le(b, size, 4);
    put_le(b, name.size(), 2);
    put_le(b, 0, 2);
    if (!local) {
      put_le(b, 0, 2);
      put_le(b, 0, 2);
      put_le(b, 0, 2);
      put_le(b, 0, 4);
      put_le(b, offset, 4);
    }
    append(b, name);
  };
  // blobs[i] = the data of member i
  std::vector<bytes> blobs(names.size());
  blobs.back() = payload;
  for (std::size_t i = names.size() - 1; i-- > 0;) {
    bytes b;
    header(b, names[i + 1], crc_of(blobs[i + 1]), blobs[i + 1].size(), true, 0);
    append(b, blobs[i + 1]);
    blobs[i] = b;
  }
  bytes out;
  header(out, names[0], crc_of(blobs[0]), blobs[0].size(), true, 0);
  append(out, blobs[0]);
  bytes central;
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    header(central, names[i], crc_of(blobs[i]), blobs[i].size(), false, offset);
    offset += 30 + names[i].size();
  }
  const std::uint64_t cd = out.size();
  append(out, central);
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, names.size(), 2);
  put_le(out, names.size(), 2);
  put_le(out, central.size(), 4);
  put_le(out, cd, 4);
  put_le(out, 0, 2);
  return out;
}

/// `n` little-endian elements of `t` with random values and, when n allows, the special ones
/// (NaN, +-Inf, -0, a subnormal, the largest finite value).
template <class Rng>
bytes random_elements(fevo::io::dtype t, std::size_t n, Rng& r) {
  using fevo::io::dtype;
  const std::size_t sz = fevo::io::dtype_size(t);
  bytes b(n * sz);
  for (std::size_t i = 0; i < n; ++i) {
    double v = r.normal() * (i % 3 == 0 ? 1e-3 : 10.0);
    switch (i % 37) {
      case 5: v = std::nan(""); break;
      case 11: v = HUGE_VAL; break;
      case 17: v = -HUGE_VAL; break;
      case 23: v = -0.0; break;
      case 29: v = t == dtype::f64 ? 4.9e-324 : t == dtype::f32 ? 1.4e-45 : t == dtype::f16 ? 6e-8 : 9.2e-41; break;
      default: break;
    }
    unsigned char* p = b.data() + i * sz;
    if (t == dtype::f64) std::memcpy(p, &v, 8);
    else if (t == dtype::f32) {
      const float f = float(v);
      std::memcpy(p, &f, 4);
    } else if (t == dtype::f16) {
      const fevo::half h = fevo::half::from_float(float(v));
      std::memcpy(p, &h.bits, 2);
    } else {
      const fevo::bfloat16 h = fevo::bfloat16::from_float(float(v));
      std::memcpy(p, &h.bits, 2);
    }
  }
  return b;
}

/// Bit-level equality of element i of two buffers of dtype t.
inline bool same_element(fevo::io::dtype t, const unsigned char* a, const unsigned char* b, std::size_t i) {
  const std::size_t sz = fevo::io::dtype_size(t);
  return std::memcmp(a + i * sz, b + i * sz, sz) == 0;
}

/// The bits of a stored element, for comparisons through views.
template <class T>
std::uint64_t bits_of(const T& v) {
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}

}  // namespace fevo_io_test
