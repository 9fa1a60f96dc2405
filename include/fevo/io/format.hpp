// Which reader a snapshot file needs, and the refusal of Python pickles.
//
//   switch (fevo::io::detect_format(path)) {    // throws for pickles and unknown files
//     case fevo::io::file_format::safetensors: ...
//     case fevo::io::file_format::npy: ...
//     case fevo::io::file_format::npz: ...
//   }
//
// PyTorch checkpoints (.pt, .pth, .ckpt, .bin from torch.save, .pkl) are Python pickles: loading
// one runs whatever code it names. fevo never unpickles; it refuses them with a message that says
// how to convert them to safetensors. A file is taken for a pickle when its name ends in .pt,
// .pth, .ckpt, .pkl or .pickle, when it starts with a pickle protocol 2-5 opcode, or when it is a
// zip archive holding a "data.pkl" (torch.save's zip format, whatever its extension).
// Needs libzip (it includes npz.hpp).
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "../error.hpp"
#include "npy.hpp"
#include "pickle.hpp"
#include "npz.hpp"
#include "safetensors.hpp"

namespace fevo::io {

enum class file_format { safetensors, npy, npz };

inline const char* format_name(file_format f) {
  switch (f) {
    case file_format::safetensors: return "safetensors";
    case file_format::npy: return "npy";
    case file_format::npz: return "npz";
  }
  return "?";
}

namespace detail {
inline bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    char c = s[s.size() - n + i];
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    if (c != suffix[i]) return false;
  }
  return true;
}
}  // namespace detail

/// The format of `path`, from its first bytes (and, for zip files, its member names). Throws
/// fevo::error for a pickle (open_error_for_pickle), an unreadable file or an unknown format.
/// Detection only: the reader then validates the whole file.
inline file_format detect_format(const std::string& path) {
  using ::fevo::detail::fail;
  for (const char* ext : {".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
    if (detail::ends_with(path, ext)) throw open_error_for_pickle(path);

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", detail::errno_text(errno));
  struct ::stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  unsigned char b[64] = {};
  std::size_t got = 0;
  while (got < sizeof b) {
    const ::ssize_t r = ::read(fd, b + got, sizeof b - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += std::size_t(r);
  }
  ::close(fd);
  const std::uint64_t size = std::uint64_t(st.st_size);

  if (got >= 6 && b[0] == 0x93 && std::memcmp(b + 1, "NUMPY", 5) == 0) return file_format::npy;
  // safetensors: a plausible header length, then (after JSON whitespace) '{'.
  if (got >= 9) {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
    if (n >= 2 && n <= safetensors_max_header_size && n <= size - 8) {
      std::size_t i = 8;
      while (i < got && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) ++i;
      if (i < got && b[i] == '{') return file_format::safetensors;
    }
  }
  if (got >= 4 && b[0] == 'P' && b[1] == 'K' &&
      ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6))) {
    // A zip: .npz, or torch.save's zip format (ARCHIVE/data.pkl plus tensor blobs).
    int err = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
    if (!z) fail(path, ": a zip file that libzip cannot open (error ", err, ")");
    const zip_int64_t n = zip_get_num_entries(z, 0);
    bool pickle = false;
    for (zip_int64_t i = 0; i < n && !pickle; ++i) {
      const char* name = zip_get_name(z, zip_uint64_t(i), 0);
      if (name && is_torch_zip_member(name)) pickle = true;
    }
    zip_discard(z);
    if (pickle) throw open_error_for_pickle(path);
    return file_format::npz;
  }
  if (starts_like_pickle(b, got)) throw open_error_for_pickle(path);
  if (detail::ends_with(path, ".bin") && got >= 2 && b[0] == 0x80)
    throw open_error_for_pickle(path);
  fail(path, ": unknown file format: not safetensors, .npy or .npz (fevo reads those; ",
       got < 8 ? "the file is only " + std::to_string(got) + " bytes" : std::string("its first bytes match none of them"), ")");
}

}  // namespace fevo::io
