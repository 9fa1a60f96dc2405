// Reading NumPy .npz archives (np.savez, np.savez_compressed): a zip file of .npy members.
// Needs libzip (Debian: libzip-dev; link -lzip, or the CMake target fevo::io).
//
//   auto arrays = fevo::io::read_npz("weights.npz");          // {"conv1": npy_array, ...}
//   fevo::io::npz_archive z("weights.npz");                     // lazy: members, then read one
//   for (const auto& m : z.members()) { auto h = z.header(m.key); ... }
//
// An archive from elsewhere may be a zip bomb. Before any member is decompressed:
// - the archive is opened with libzip's stricter consistency checks (ZIP_CHECKCONS);
// - at most npz_limits::max_members members;
// - each member declares at most max_member_bytes uncompressed bytes and all of them together at
//   most max_total_bytes;
// - a member declaring more than ratio_floor_bytes may not declare more than max_ratio times its
//   compressed size (real weights barely compress; a huge run of zeros does);
// - the members' compressed sizes together fit in the archive (overlapping members, the trick of
//   non-recursive zip bombs, are refused);
// - encrypted members, directories, names that do not end in ".npy" and duplicate names are
//   refused.
// Reading a member then decompresses exactly its declared size and one byte more: a member whose
// data is longer or shorter than declared is an error, and reading to the end makes libzip check
// the CRC-32 (a mismatch is an error). Each member is then validated as a .npy file (npy.hpp).
// An npz_archive is not thread-safe (libzip's archive handle is not).
#pragma once

#include "../config.hpp"

#include <zip.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "npy.hpp"
#include "pickle.hpp"

namespace fevo::io {

/// Caps against zip bombs (see the file comment). Defaults suit weights of large models.
struct npz_limits {
  std::uint64_t max_members = 100000;
  std::uint64_t max_member_bytes = std::uint64_t(8) << 30;  ///< 8 GiB per array
  std::uint64_t max_total_bytes = std::uint64_t(32) << 30;  ///< 32 GiB per archive
  double max_ratio = 256;                                   ///< uncompressed / compressed
  std::uint64_t ratio_floor_bytes = std::uint64_t(64) << 20;  ///< members below 64 MiB: no ratio check
};

/// One member of an archive, as its central directory declares it.
struct npz_member {
  std::string key;     ///< the name without ".npy": the keyword given to np.savez
  std::string name;    ///< the member's file name in the archive
  std::uint64_t index = 0;
  std::uint64_t size = 0;       ///< declared uncompressed bytes
  std::uint64_t comp_size = 0;  ///< compressed bytes
};

/// An .npz archive, opened and checked against the limits; members are decompressed on demand.
class npz_archive {
 public:
  /// Opens `path`; throws fevo::error naming it and the problem.
  explicit npz_archive(const std::string& path, const npz_limits& limits = {},
                       const npy_options& opt = {})
      : name_(path), opt_(opt) {
    struct ::stat st;
    if (::stat(path.c_str(), &st) != 0)
      ::fevo::detail::fail(path, ": cannot open: ", detail::errno_text(errno));
    if (!S_ISREG(st.st_mode))
      ::fevo::detail::fail(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (a directory)" : "");
    int err = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!z) {
      zip_error_t ze;
      zip_error_init_with_code(&ze, err);
      const std::string m = zip_error_strerror(&ze);
      zip_error_fini(&ze);
      ::fevo::detail::fail(path, ": not a valid .npz (zip) archive: ", m, hint(err));
    }
    zip_.reset(z);
    scan(std::uint64_t(st.st_size), limits);
  }

  /// An archive held in memory (not copied: `p` must outlive the object).
  static npz_archive from_memory(const void* p, std::size_t n, std::string name,
                                 const npz_limits& limits = {}, const npy_options& opt = {}) {
    npz_archive a;
    a.name_ = std::move(name);
    a.opt_ = opt;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t* src = zip_source_buffer_create(p, n, 0, &ze);
    zip_t* z = src ? zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze) : nullptr;
    if (!z) {
      if (src) zip_source_free(src);
      const std::string m = zip_error_strerror(&ze);
      const int code = zip_error_code_zip(&ze);
      zip_error_fini(&ze);
      ::fevo::detail::fail(a.name_, ": not a valid .npz (zip) archive: ", m, hint(code));
    }
    zip_error_fini(&ze);
    a.zip_.reset(z);
    a.scan(n, limits);
    return a;
  }

  const std::vector<npz_member>& members() const { return members_; }
  const std::string& path() const { return name_; }
  /// The member stored under `key` (without ".npy"), or nullptr.
  const npz_member* find(const std::string& key) const {
    for (const auto& m : members_)
      if (m.key == key) return &m;
    return nullptr;
  }

  /// Decompresses and validates one array.
  npy_array read(const npz_member& m) const {
    std::vector<unsigned char> buf = extract(m, m.size, true);
    return detail::npy_from_buffer(std::move(buf), where(m), opt_);
  }
  npy_array read(const std::string& key) const { return read(must_find(key)); }

  /// The .npy header of one array (dtype, shape), decompressing only its first bytes.
  npy_header header(const std::string& key) const {
    const npz_member& m = must_find(key);
    const std::uint64_t want = std::min<std::uint64_t>(m.size, 12 + npy_max_header_size);
    const std::vector<unsigned char> buf = extract(m, want, false);
    return parse_npy_header(buf.data(), buf.size(), m.size, where(m), opt_);
  }

  /// Every array, by key.
  std::map<std::string, npy_array> read_all() const {
    std::map<std::string, npy_array> out;
    for (const auto& m : members_) out.emplace(m.key, read(m));
    return out;
  }

 private:
  struct closer {
    void operator()(zip_t* z) const { zip_discard(z); }
  };
  std::string name_;
  npy_options opt_;
  std::unique_ptr<zip_t, closer> zip_;
  std::vector<npz_member> members_;

  npz_archive() = default;

  static const char* hint(int zip_error) {
    return zip_error == ZIP_ER_EXISTS ? " (two members have the same name)" : "";
  }

  std::string where(const npz_member& m) const { return name_ + ": member '" + m.name + "'"; }

  const npz_member& must_find(const std::string& key) const {
    const npz_member* m = find(key);
    if (!m) ::fevo::detail::fail(name_, ": no array '", key, "' in the archive");
    return *m;
  }

  void scan(std::uint64_t archive_size, const npz_limits& lim) {
    using ::fevo::detail::fail;
    zip_t* z = zip_.get();
    const zip_int64_t n = zip_get_num_entries(z, 0);
    if (n < 0) fail(name_, ": cannot list the archive's members");
    if (std::uint64_t(n) > lim.max_members)
      fail(name_, ": archive has ", n, " members, more than the limit of ", lim.max_members);
    std::uint64_t total = 0, comp_total = 0;
    for (zip_int64_t i = 0; i < n; ++i) {
      zip_stat_t st;
      zip_stat_init(&st);
      if (zip_stat_index(z, zip_uint64_t(i), 0, &st) != 0)
        fail(name_, ": cannot read member ", i, ": ", zip_strerror(z));
      const unsigned need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE;
      if ((st.valid & need) != need) fail(name_, ": member ", i, " has no name or size");
      if (is_torch_zip_member(st.name)) throw open_error_for_pickle(name_);  // torch.save's zip format
      npz_member m;
      m.name = st.name;
      m.index = zip_uint64_t(i);
      m.size = st.size;
      m.comp_size = st.comp_size;
      const std::string at = where(m);
      if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE)
        fail(at, ": encrypted members are not supported");
      if ((st.valid & ZIP_STAT_COMP_METHOD) && !zip_compression_method_supported(st.comp_method, 0))
        fail(at, ": unsupported compression method ", st.comp_method);
      if (m.name.size() < 5 || m.name.compare(m.name.size() - 4, 4, ".npy") != 0)
        fail(at, ": not a .npy array (an .npz holds only NAME.npy members)");
      m.key = m.name.substr(0, m.name.size() - 4);
      if (m.size > lim.max_member_bytes)
        fail(at, ": declares ", m.size, " uncompressed bytes, more than the limit of ",
             lim.max_member_bytes, " (zip bomb?)");
      if (__builtin_add_overflow(total, m.size, &total) || total > lim.max_total_bytes)
        fail(at, ": the members declare more than the limit of ", lim.max_total_bytes,
             " uncompressed bytes in all (zip bomb?)");
      if (m.size > lim.ratio_floor_bytes && double(m.size) > lim.max_ratio * double(m.comp_size))
        fail(at, ": declares ", m.size, " uncompressed bytes from ", m.comp_size,
             " compressed, a ratio above the limit of ", lim.max_ratio, " (zip bomb?)");
      if (__builtin_add_overflow(comp_total, m.comp_size, &comp_total) || comp_total > archive_size)
        fail(at, ": the members' compressed data add up to more than the archive's ", archive_size,
             " bytes: members overlap (zip bomb?)");
      for (const auto& o : members_)
        if (o.key == m.key) fail(at, ": the name appears more than once in the archive");
      members_.push_back(std::move(m));
    }
  }

  /// Decompresses the first `want` bytes of a member; with `whole`, checks that the member holds
  /// exactly its declared size (which also makes libzip verify the CRC).
  std::vector<unsigned char> extract(const npz_member& m, std::uint64_t want, bool whole) const {
    using ::fevo::detail::fail;
    const std::string at = where(m);
    zip_file_t* f = zip_fopen_index(zip_.get(), m.index, 0);
    if (!f) fail(at, ": cannot open: ", zip_strerror(zip_.get()));
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> guard(f, &zip_fclose);
    std::vector<unsigned char> buf(static_cast<std::size_t>(want));
    std::uint64_t got = 0;
    while (got < want) {
      const zip_int64_t r = zip_fread(f, buf.data() + got, want - got);
      if (r < 0) fail(at, ": decompression failed: ", zip_error_strerror(zip_file_get_error(f)));
      if (r == 0) break;
      got += std::uint64_t(r);
    }
    if (got < want)
      fail(at, ": data is shorter than declared (", got, " of ", m.size, " bytes)");
    if (whole) {
      unsigned char extra;
      const zip_int64_t r = zip_fread(f, &extra, 1);  // end of data: libzip checks the CRC here
      if (r < 0) {
        const std::string e = zip_error_strerror(zip_file_get_error(f));
        fail(at, ": ", e, e.find("CRC") != std::string::npos ? " (corrupt member)" : "");
      }
      if (r > 0) fail(at, ": decompresses to more than its declared ", m.size, " bytes (zip bomb?)");
      zip_file_t* raw = guard.release();
      if (zip_fclose(raw) != 0) fail(at, ": error closing the member");
    }
    return buf;
  }
};

/// Every array of an .npz archive, by key (the member's name without ".npy").
inline std::map<std::string, npy_array> read_npz(const std::string& path,
                                                 const npz_limits& limits = {},
                                                 const npy_options& opt = {}) {
  return npz_archive(path, limits, opt).read_all();
}

}  // namespace fevo::io
