// fevo::io::atomic_write: a file appears under its final name complete, or not at all.
//
//   fevo::io::atomic_write("out/summary.csv", [&](std::FILE* f) {
//     fevo::io::write_text(f, "layer,D\n", "out/summary.csv");   // or fprintf/fwrite: checked at the end
//   });
//
// Steps: create a temporary file in the same directory (".NAME.tmp.PID.N.RAND", mode 0666 minus
// the umask), call the writer, flush, fsync the file, close it, rename it over the final name
// (atomic on POSIX file systems), then fsync the directory so that the rename itself survives a
// power loss. Any failure (no such directory, permission denied, disk full, file size limit,
// fsync or close errors, a writer that throws) removes the temporary file and raises an error
// naming the path and the system's reason: a fevo::error for I/O failures, the writer's own
// exception otherwise. A file already under the final name is left untouched unless the rename
// succeeds. POSIX only.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <system_error>

#include "../error.hpp"

namespace fevo::io {

namespace detail {

/// Fault injection for tests: when set to a stage name ("create", "write", "flush", "fsync",
/// "close", "rename", "dirsync"), that stage of the next atomic writes on this thread fails with
/// EIO, as a full or failing disk would.
inline thread_local std::string inject_failure_at;

inline bool injected(const char* stage) {
  if (!inject_failure_at.empty() && inject_failure_at == stage) {
    errno = EIO;
    return true;
  }
  return false;
}

inline std::string errno_text(int e) { return std::generic_category().message(e); }

/// The directory part of a path ("." when there is none).
inline std::string dir_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
inline std::string base_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace detail

/// fwrite of n bytes that raises fevo::error naming `path` on a short write (disk full, EFBIG...).
inline void write_bytes(std::FILE* f, const void* data, std::size_t n, const std::string& path) {
  if (n == 0) return;
  if (detail::injected("write") || std::fwrite(data, 1, n, f) != n)
    ::fevo::detail::fail(path, ": write failed after at most ", std::ftell(f), " bytes: ",
                         detail::errno_text(errno));
}
inline void write_text(std::FILE* f, const std::string& s, const std::string& path) {
  write_bytes(f, s.data(), s.size(), path);
}

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is
/// flushed, fsynced and renamed over `path`; the directory is fsynced last. See the file comment.
inline void atomic_write(const std::string& path, const std::function<void(std::FILE*)>& write) {
  using ::fevo::detail::fail;
  if (path.empty() || path.back() == '/') fail("cannot write '", path, "': not a file name");
  const std::string dir = detail::dir_of(path);

  // 1. A fresh temporary file next to the target (O_EXCL: never reuse or follow another file).
  static thread_local std::uint64_t counter = 0;
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    const auto t = std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    tmp = dir + "/." + detail::base_of(path) + ".tmp." + std::to_string(::getpid()) + "." +
          std::to_string(++counter) + "." + std::to_string((t ^ (t >> 29)) % 1000000007u);
    if (detail::injected("create")) break;
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0)
    fail("cannot write '", path, "': cannot create a temporary file in directory '", dir,
         "': ", detail::errno_text(errno));

  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': fdopen: ", detail::errno_text(e));
  }
  const auto abandon = [&](const char* what, int e) {
    if (f) std::fclose(f);
    ::unlink(tmp.c_str());
    fail("cannot write '", path, "': ", what, ": ", detail::errno_text(e),
         " (nothing was written under that name)");
  };

  // 2. The caller's content. Anything it throws removes the temporary file.
  try {
    write(f);
  } catch (...) {
    std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }

  // 3. Flush, check the stream's error flag (a write the caller did not check: errno still holds
  //    the failed write's reason), fsync, close.
  if (detail::injected("flush") || std::fflush(f) != 0 || std::ferror(f))
    abandon("write failed", errno ? errno : EIO);
  if (detail::injected("fsync") || ::fsync(::fileno(f)) != 0) abandon("fsync failed", errno);
  const int closed = std::fclose(f);
  f = nullptr;
  if (detail::injected("close") || closed != 0) abandon("close failed", errno);

  // 4. Publish under the final name.
  if (detail::injected("rename") || std::rename(tmp.c_str(), path.c_str()) != 0)
    abandon(("rename of the temporary file '" + tmp + "' failed").c_str(), errno);

  // 5. Make the rename durable. Some file systems refuse fsync on a directory (EINVAL): that is
  //    not an error of the write.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = 0;
  if (detail::injected("dirsync")) e = EIO;
  else if (dfd < 0) e = errno;
  else if (::fsync(dfd) != 0 && errno != EINVAL) e = errno;
  if (dfd >= 0) ::close(dfd);
  if (e != 0)
    fail("'", path, "' was written completely, but syncing its directory '", dir,
         "' failed: ", detail::errno_text(e), " (the new name may not survive a power loss)");
}

}  // namespace fevo::io
