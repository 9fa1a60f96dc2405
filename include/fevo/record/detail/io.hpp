// Private file helpers of the recorder (POSIX): a file descriptor that raises fevo::error naming
// the path on every failure, an atomic whole-file writer (temporary file in the same directory,
// write, fsync, rename, fsync the directory), directory creation and listing, little-endian
// encoding. Kept in fevo::record::detail so that they do not clash with <fevo/io/...>.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../../error.hpp"

namespace fevo::record::detail {

/// Throws fevo::error "fevo: <what> '<path>': <strerror(err)>".
[[noreturn]] inline void io_fail(const char* what, const std::string& path, int err) {
  ::fevo::detail::fail(what, " '", path, "': ", std::error_code(err, std::generic_category()).message());
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

inline std::string parent_dir(const std::string& path) {
  const auto p = path.find_last_of('/');
  if (p == std::string::npos) return ".";
  if (p == 0) return "/";
  return path.substr(0, p);
}

inline std::string base_name(const std::string& path) {
  const auto p = path.find_last_of('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}

/// True when `path` exists (any type). Errors other than "does not exist" are raised.
inline bool path_exists(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  io_fail("cannot stat", path, errno);
}

/// mkdir -p.
inline void make_dirs(const std::string& dir) {
  if (dir.empty()) return;
  std::string cur;
  std::size_t pos = 0;
  while (pos <= dir.size()) {
    const std::size_t next = dir.find('/', pos);
    cur = dir.substr(0, next == std::string::npos ? dir.size() : next);
    pos = next == std::string::npos ? dir.size() + 1 : next + 1;
    if (cur.empty() || cur == "." || cur == "..") continue;
    if (::mkdir(cur.c_str(), 0777) != 0 && errno != EEXIST) io_fail("cannot create directory", cur, errno);
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) io_fail("cannot stat", dir, errno);
  if (!S_ISDIR(st.st_mode)) ::fevo::detail::fail("'", dir, "' exists and is not a directory");
}

/// Names of the entries of a directory (without "." and "..").
inline std::vector<std::string> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) io_fail("cannot open directory", dir, errno);
  std::vector<std::string> out;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err) io_fail("cannot read directory", dir, err);
  return out;
}

inline void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) io_fail("cannot remove", path, errno);
}

/// fsync of a directory, so that a rename or a new entry in it is durable.
inline void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) io_fail("cannot open directory", dir, errno);
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {  // EINVAL: fs without dir fsync
    const int err = errno;
    ::close(fd);
    io_fail("cannot fsync directory", dir, err);
  }
  ::close(fd);
}

/// A file descriptor with the path it was opened from; every failure throws fevo::error naming it.
class file {
 public:
  file() = default;
  file(const std::string& path, int flags, mode_t mode = 0666) { open(path, flags, mode); }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  file(file&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      close_quietly();
      fd_ = std::exchange(o.fd_, -1);
      path_ = std::move(o.path_);
    }
    return *this;
  }
  ~file() { close_quietly(); }

  void open(const std::string& path, int flags, mode_t mode = 0666) {
    close_quietly();
    path_ = path;
    do fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) io_fail("cannot open", path, errno);
  }
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  std::uint64_t size() const {
    struct stat st;
    if (::fstat(fd_, &st) != 0) io_fail("cannot stat", path_, errno);
    return static_cast<std::uint64_t>(st.st_size);
  }
  /// Writes all of [data, data + n) at `offset` (a short write is retried, never left silent).
  void pwrite_all(const void* data, std::size_t n, std::uint64_t offset) {
    write_fully(data, n, [&](const char* p, std::size_t k) {
      const ssize_t w = ::pwrite(fd_, p, k, static_cast<off_t>(offset));
      if (w > 0) offset += static_cast<std::uint64_t>(w);
      return w;
    });
  }
  /// Writes all of [data, data + n) at the current position.
  void write_all(const void* data, std::size_t n) {
    write_fully(data, n, [&](const char* p, std::size_t k) { return ::write(fd_, p, k); });
  }
  /// Reads up to n bytes at `offset`; returns how many were read (less only at end of file).
  std::size_t pread_some(void* data, std::size_t n, std::uint64_t offset) const {
    char* p = static_cast<char*>(data);
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_, p + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        io_fail("cannot read", path_, errno);
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }
  void truncate(std::uint64_t size) {
    int rc;
    do rc = ::ftruncate(fd_, static_cast<off_t>(size));
    while (rc != 0 && errno == EINTR);
    if (rc != 0) io_fail("cannot truncate", path_, errno);
  }
  /// Starts writing the file's dirty pages back without waiting (Linux sync_file_range), so that a
  /// later sync() has less left to wait for. A hint: never an error, a no-op elsewhere.
  void start_writeback() noexcept {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    if (fd_ >= 0) (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
  }
  void sync() {
    if (fd_ < 0) return;  // closed: nothing left to sync
    if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) io_fail("cannot fsync", path_, errno);
  }
  /// Closes and reports the error of close() (NFS reports delayed write errors there).
  void close() {
    if (fd_ < 0) return;
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0 && errno != EINTR) io_fail("cannot close", path_, errno);
  }

 private:
  /// Calls write(p, k) (a write(2)-like call: bytes written, or -1 with errno) until all of
  /// [data, data + n) is written; EINTR is retried, an error or a write of 0 bytes throws.
  template <class Write>
  void write_fully(const void* data, std::size_t n, Write write) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = write(p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        io_fail("cannot write", path_, errno);
      }
      if (w == 0) io_fail("cannot write", path_, ENOSPC);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  void close_quietly() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  std::string path_;
};

/// Marker in the names of the recorder's temporary files; start() removes leftovers of a crash.
inline constexpr const char* temp_marker = ".fevo-tmp.";

/// A whole file written atomically: the bytes go to a temporary file in the same directory,
/// which commit() fsyncs and renames over `path` before fsyncing the directory. Readers see the
/// old file or the new one, never a short one. Without commit() the temporary file is removed.
class atomic_file {
 public:
  explicit atomic_file(std::string path) : path_(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    tmp_ = join_path(parent_dir(path_), "." + base_name(path_) + temp_marker +
                                            std::to_string(::getpid()) + "." +
                                            std::to_string(counter.fetch_add(1)));
    f_.open(tmp_, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  }
  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  ~atomic_file() {
    if (!committed_) {
      f_ = file();
      ::unlink(tmp_.c_str());
    }
  }
  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    f_.write_all(data, n);
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  const std::string& path() const { return path_; }
  void commit() {
    f_.sync();
    f_.close();
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) io_fail("cannot rename a temporary file onto", path_, errno);
    committed_ = true;
    fsync_dir(parent_dir(path_));
  }

 private:
  std::string path_, tmp_;
  file f_;
  bool committed_ = false;
};

inline void write_file_atomic(const std::string& path, const std::string& content) {
  atomic_file f(path);
  f.write(content);
  f.commit();
}

/// The whole content of a file.
inline std::string read_file(const std::string& path) {
  file f(path, O_RDONLY);
  std::string out(static_cast<std::size_t>(f.size()), '\0');
  out.resize(f.pread_some(out.data(), out.size(), 0));
  return out;
}

// ---- little-endian encoding ---------------------------------------------------------------------

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

}  // namespace fevo::record::detail
