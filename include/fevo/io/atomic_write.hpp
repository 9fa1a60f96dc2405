// fevo::io::atomic_write: a file appears under its final name complete, or not at all.
//
//   fevo::io::atomic_write("out/summary.csv", [&](std::FILE* f) {
//     fevo::io::write_text(f, "layer,D\n", "out/summary.csv");   // or fprintf/fwrite: checked at the end
//   });
//
// A stream over fevo's one atomic writer (<fevo/detail/atomic_file.hpp>): the writer fills a
// temporary file in the same directory through a std::FILE*, which is then flushed, fsynced,
// closed and renamed over the final name, and the directory is fsynced so that the rename itself
// survives a power loss. Any failure (no such directory, permission denied, disk full, file size
// limit, fsync or close errors, a writer that throws) removes the temporary file and raises an
// error naming the path and the system's reason: a fevo::error for I/O failures, the writer's own
// exception otherwise. A file already under the final name is left untouched unless the rename
// succeeds. POSIX only.
#pragma once

#include "../config.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <string>

#include "../detail/atomic_file.hpp"
#include "../error.hpp"

namespace fevo::io {

namespace detail {
using ::fevo::detail::errno_text;
using ::fevo::detail::inject_failure_at;  // fault injection for tests: see atomic_file.hpp
using ::fevo::detail::injected;
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
  ::fevo::detail::atomic_file out(path);
  // The stream writes through its own descriptor of the temporary file; commit() syncs the file.
  const int fd = ::dup(out.fd());
  std::FILE* f = fd >= 0 ? ::fdopen(fd, "wb") : nullptr;
  if (!f) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    out.abandon("fdopen failed", e);
  }
  try {
    write(f);
  } catch (...) {  // the writer's exception; `out` removes the temporary file
    std::fclose(f);
    throw;
  }
  // A write the caller did not check leaves the stream's error flag set, and errno holds the
  // failed write's reason.
  if (detail::injected("flush") || std::fflush(f) != 0 || std::ferror(f)) {
    const int e = errno ? errno : EIO;
    std::fclose(f);
    out.abandon("write failed", e);
  }
  if (std::fclose(f) != 0) out.abandon("close failed", errno);
  out.commit();
}

}  // namespace fevo::io
