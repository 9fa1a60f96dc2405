// TensorBoard event files written by hand, with no protobuf dependency.
//
// An event file is a sequence of TFRecords:
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// and each record's data is a serialised tensorflow.Event:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record of a file is an Event with file_version "brain.Event:2". The recorder writes one
// Event per record() holding every scalar of that step (fevo/<layer>/D, /S, /Z).
#pragma once

#include "../../config.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../../detail/little_endian.hpp"
#include "../../detail/posix_file.hpp"
#include "crc32c.hpp"

namespace fevo::record::detail {
using ::fevo::detail::file;
using ::fevo::detail::get_f64;
using ::fevo::detail::get_u32;
using ::fevo::detail::get_u64;
using ::fevo::detail::put_u64;
}  // namespace fevo::record::detail

namespace fevo::record::detail::tb {

inline void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
inline void put_key(std::string& out, unsigned field, unsigned wire) { put_varint(out, (field << 3) | wire); }
inline void put_fixed64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void put_fixed32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void put_bytes(std::string& out, unsigned field, const std::string& s) {
  put_key(out, field, 2);
  put_varint(out, s.size());
  out += s;
}

inline std::string event_header(double wall_time, std::int64_t step) {
  std::string e;
  std::uint64_t bits;
  std::memcpy(&bits, &wall_time, 8);
  put_key(e, 1, 1);  // wall_time, fixed64
  put_fixed64(e, bits);
  put_key(e, 2, 0);  // step, varint (int64: negative steps take ten bytes, as protobuf writes them)
  put_varint(e, static_cast<std::uint64_t>(step));
  return e;
}

/// The Event that opens every event file.
inline std::string file_version_event(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

/// One Event with a Summary of scalar values.
inline std::string scalars_event(double wall_time, std::int64_t step,
                                 const std::vector<std::pair<std::string, float>>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put_key(value, 2, 5);  // simple_value, fixed32
    put_fixed32(value, bits);
    put_bytes(summary, 1, value);
  }
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

/// TFRecord framing of one record's data.
inline std::string frame(const std::string& data) {
  unsigned char len[8];
  put_u64(len, data.size());
  std::string out(reinterpret_cast<const char*>(len), 8);
  std::uint32_t c = masked_crc32c(len, 8);
  put_fixed32(out, c);
  out += data;
  put_fixed32(out, masked_crc32c(data.data(), data.size()));
  return out;
}

// ---- reading back (recovery after a crash, and tests) -------------------------------------------

inline bool get_varint(const unsigned char*& p, const unsigned char* end, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const unsigned char b = *p++;
    v |= std::uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/// What the recorder needs to know of a decoded Event.
struct event {
  double wall_time = 0;
  std::int64_t step = 0;
  std::string file_version;
  bool has_summary = false;
  std::vector<std::pair<std::string, float>> scalars;  ///< simple_value entries of the summary
};

inline bool skip_field(const unsigned char*& p, const unsigned char* end, unsigned wire) {
  std::uint64_t n;
  switch (wire) {
    case 0: return get_varint(p, end, n);
    case 1: if (end - p < 8) return false; p += 8; return true;
    case 5: if (end - p < 4) return false; p += 4; return true;
    case 2:
      if (!get_varint(p, end, n) || std::uint64_t(end - p) < n) return false;
      p += n;
      return true;
    default: return false;
  }
}

/// Decodes an Event; false when the bytes are not a well-formed message.
inline bool parse_event(const unsigned char* p, std::size_t n, event& ev) {
  const unsigned char* end = p + n;
  ev = event();
  while (p < end) {
    std::uint64_t key;
    if (!get_varint(p, end, key)) return false;
    const unsigned field = unsigned(key >> 3), wire = unsigned(key & 7);
    if (field == 1 && wire == 1) {
      if (end - p < 8) return false;
      ev.wall_time = get_f64(p);
      p += 8;
    } else if (field == 2 && wire == 0) {
      std::uint64_t v;
      if (!get_varint(p, end, v)) return false;
      ev.step = static_cast<std::int64_t>(v);
    } else if (field == 3 && wire == 2) {
      std::uint64_t len;
      if (!get_varint(p, end, len) || std::uint64_t(end - p) < len) return false;
      ev.file_version.assign(reinterpret_cast<const char*>(p), len);
      p += len;
    } else if (field == 5 && wire == 2) {
      std::uint64_t len;
      if (!get_varint(p, end, len) || std::uint64_t(end - p) < len) return false;
      ev.has_summary = true;
      const unsigned char* s = p;
      const unsigned char* send = p + len;
      p = send;
      while (s < send) {  // Summary
        std::uint64_t k;
        if (!get_varint(s, send, k)) return false;
        if ((k >> 3) != 1 || (k & 7) != 2) {
          if (!skip_field(s, send, unsigned(k & 7))) return false;
          continue;
        }
        std::uint64_t vlen;
        if (!get_varint(s, send, vlen) || std::uint64_t(send - s) < vlen) return false;
        const unsigned char* v = s;
        const unsigned char* vend = s + vlen;
        s = vend;
        std::string tag;
        float value = 0;
        bool has_value = false;
        while (v < vend) {  // Value
          std::uint64_t vk;
          if (!get_varint(v, vend, vk)) return false;
          if ((vk >> 3) == 1 && (vk & 7) == 2) {
            std::uint64_t tl;
            if (!get_varint(v, vend, tl) || std::uint64_t(vend - v) < tl) return false;
            tag.assign(reinterpret_cast<const char*>(v), tl);
            v += tl;
          } else if ((vk >> 3) == 2 && (vk & 7) == 5) {
            if (vend - v < 4) return false;
            const std::uint32_t bits = get_u32(v);
            std::memcpy(&value, &bits, 4);
            has_value = true;
            v += 4;
          } else if (!skip_field(v, vend, unsigned(vk & 7))) {
            return false;
          }
        }
        if (has_value) ev.scalars.emplace_back(std::move(tag), value);
      }
    } else if (!skip_field(p, end, wire)) {
      return false;
    }
  }
  return true;
}

/// One complete, checksummed record of an event file.
struct record_info {
  std::uint64_t end;  ///< offset just past the record
  event ev;
};

/// Reads the records of an event file up to the first incomplete or corrupt one. `valid_end` is
/// the offset just past the last good record (where a torn tail starts).
inline std::vector<record_info> scan(const file& f, std::uint64_t& valid_end, bool keep_scalars = false) {
  std::vector<record_info> out;
  const std::uint64_t size = f.size();
  std::uint64_t off = 0;
  std::vector<unsigned char> data;
  valid_end = 0;
  while (size - off >= 12) {
    unsigned char head[12];
    if (f.pread_some(head, 12, off) != 12) break;
    const std::uint64_t len = get_u64(head);
    if (masked_crc32c(head, 8) != get_u32(head + 8)) break;
    if (len > size - off - 12 || size - off - 12 - len < 4) break;
    data.resize(static_cast<std::size_t>(len) + 4);
    if (f.pread_some(data.data(), data.size(), off + 12) != data.size()) break;
    if (masked_crc32c(data.data(), static_cast<std::size_t>(len)) != get_u32(data.data() + len)) break;
    record_info r;
    r.end = off + 12 + len + 4;
    if (!parse_event(data.data(), static_cast<std::size_t>(len), r.ev)) break;
    if (!keep_scalars) r.ev.scalars.clear();
    out.push_back(std::move(r));
    off = out.back().end;
    valid_end = off;
  }
  return out;
}

}  // namespace fevo::record::detail::tb
