// Files and directories through POSIX calls, every failure a fevo::error that names the path and
// the system's reason: a file descriptor (positioned reads and writes, truncate, fsync), directory
// creation, listing and fsync, path helpers. Shared by fevo::io and fevo::record; POSIX only.
#pragma once

#include "../config.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../error.hpp"

namespace fevo::detail {

/// The system's text for an errno value ("No such file or directory").
inline std::string errno_text(int e) { return std::generic_category().message(e); }

/// Throws fevo::error "fevo: <what> '<path>': <errno_text(err)>".
[[noreturn]] inline void io_fail(const char* what, const std::string& path, int err) {
  fail(what, " '", path, "': ", errno_text(err));
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

/// The directory part of a path ("." when there is none).
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
  if (!S_ISDIR(st.st_mode)) fail("'", dir, "' exists and is not a directory");
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

/// fsync of a directory (so that a rename or a new entry in it is durable); 0 or the errno of
/// the failure. File systems that cannot fsync a directory (EINVAL, EROFS) are not a failure.
inline int try_fsync_dir(const std::string& dir) noexcept {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = 0;
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  ::close(fd);
  return err;
}

/// fsync of a directory; fevo::error naming it on failure.
inline void fsync_dir(const std::string& dir) {
  if (const int err = try_fsync_dir(dir)) io_fail("cannot fsync directory", dir, err);
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
    if (!try_open(path, flags, mode)) io_fail("cannot open", path, errno);
  }
  /// open() that reports a failure by returning false, with errno set.
  bool try_open(const std::string& path, int flags, mode_t mode = 0666) {
    close_quietly();
    path_ = path;
    do fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    while (fd_ < 0 && errno == EINTR);
    return fd_ >= 0;
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
    const int err = write_fully(data, n, [&](const char* p, std::size_t k) {
      const ssize_t w = ::pwrite(fd_, p, k, static_cast<off_t>(offset));
      if (w > 0) offset += static_cast<std::uint64_t>(w);
      return w;
    });
    if (err) io_fail("cannot write", path_, err);
  }
  /// Writes all of [data, data + n) at the current position.
  void write_all(const void* data, std::size_t n) {
    if (const int err = try_write_all(data, n)) io_fail("cannot write", path_, err);
  }
  /// write_all() that reports a failure by its errno (0: all written; a write of 0 bytes counts
  /// as ENOSPC). `written` counts the bytes that were written.
  int try_write_all(const void* data, std::size_t n, std::uint64_t* written = nullptr) noexcept {
    return write_fully(
        data, n, [&](const char* p, std::size_t k) { return ::write(fd_, p, k); }, written);
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
    if (const int err = try_sync()) io_fail("cannot fsync", path_, err);
  }
  /// sync() that reports a failure by its errno (0: synced, or closed: nothing left to sync).
  /// File systems without fsync (EINVAL, EROFS) are not a failure.
  int try_sync() noexcept {
    if (fd_ < 0) return 0;
    return ::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS ? errno : 0;
  }
  /// Closes and reports the error of close() (NFS reports delayed write errors there).
  void close() {
    if (const int err = try_close()) io_fail("cannot close", path_, err);
  }
  /// close() that reports a failure by its errno (0: closed, or was not open).
  int try_close() noexcept {
    if (fd_ < 0) return 0;
    const int fd = std::exchange(fd_, -1);
    return ::close(fd) != 0 && errno != EINTR ? errno : 0;
  }

 private:
  /// Calls write(p, k) (a write(2)-like call: bytes written, or -1 with errno) until all of
  /// [data, data + n) is written; EINTR is retried. Returns 0, or the errno of the failure (a
  /// write of 0 bytes: ENOSPC).
  template <class Write>
  static int write_fully(const void* data, std::size_t n, Write write, std::uint64_t* written = nullptr) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = write(p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (w == 0) return ENOSPC;
      p += w;
      n -= static_cast<std::size_t>(w);
      if (written) *written += static_cast<std::uint64_t>(w);
    }
    return 0;
  }
  void close_quietly() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  std::string path_;
};

/// The whole content of a file.
inline std::string read_file(const std::string& path) {
  file f(path, O_RDONLY);
  std::string out(static_cast<std::size_t>(f.size()), '\0');
  out.resize(f.pread_some(out.data(), out.size(), 0));
  return out;
}

}  // namespace fevo::detail
