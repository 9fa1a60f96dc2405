// The one atomic whole-file writer of fevo (fevo::io's writers, the recorder's summaries, series
// and checkpoints): a file appears under its final name complete, or not at all.
//
//   fevo::detail::atomic_file f(path);   // a new temporary file in path's directory
//   f.write(data, n);                    // any number of times
//   f.commit();                          // fsync, close, rename over path, fsync the directory
//
// The temporary file is ".NAME" + temp_marker + "PID.N.RAND" (created with O_EXCL, mode 0666 minus
// the umask), so that it never reuses or follows another file and a run directory's leftovers can
// be recognised. commit() flushes it to disk, renames it over the final name (atomic on POSIX file
// systems) and fsyncs the directory so that the rename itself survives a power loss. Any failure
// (no such directory, permission denied, disk full, file size limit, fsync or close errors)
// removes the temporary file and raises a fevo::error naming the final path and the system's
// reason; so does destroying an atomic_file without commit(). A file already under the final name
// is left untouched unless the rename succeeds. POSIX only.
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "../error.hpp"
#include "background_sync.hpp"
#include "posix_file.hpp"

namespace fevo::detail {

/// Marker in the names of temporary files; a recorder removes the leftovers of a crash by it.
inline constexpr const char* temp_marker = ".fevo-tmp.";

/// Fault injection for tests: when set to a stage name ("create", "write", "flush", "fdatasync",
/// "fsync", "close", "rename", "dirsync"), that stage of the next atomic writes on this thread
/// fails with EIO, as a full or failing disk would. ("flush" is the stage of fevo::io::atomic_write's
/// stream; "fdatasync" that of sync_in_background, seen by commit().)
inline thread_local std::string inject_failure_at;

/// True (with errno = EIO) when a failure is injected at `stage`.
inline bool injected(const char* stage) {
  if (!inject_failure_at.empty() && inject_failure_at == stage) {
    errno = EIO;
    return true;
  }
  return false;
}

/// A whole file written atomically (see the file comment).
class atomic_file {
 public:
  explicit atomic_file(std::string path) : path_(std::move(path)) {
    if (path_.empty() || path_.back() == '/') fail("cannot write '", path_, "': not a file name");
    static std::atomic<std::uint64_t> counter{0};
    const std::string dir = parent_dir(path_);
    int err = EEXIST;
    for (int attempt = 0; attempt < 100 && err == EEXIST; ++attempt) {
      const auto t = std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
      tmp_ = join_path(dir, "." + base_name(path_) + temp_marker + std::to_string(::getpid()) + "." +
                                std::to_string(counter.fetch_add(1)) + "." +
                                std::to_string((t ^ (t >> 29)) % 1000000007u));
      if (injected("create")) err = EIO;
      else err = f_.try_open(tmp_, O_WRONLY | O_CREAT | O_EXCL, 0666) ? 0 : errno;
    }
    if (err != 0)
      fail("cannot write '", path_, "': cannot create a temporary file in directory '", dir, "': ",
           errno_text(err));
  }
  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  /// Without commit(): removes the temporary file. Never throws.
  ~atomic_file() {
    if (!committed_) discard();
  }

  /// The final path.
  const std::string& path() const { return path_; }
  /// The temporary file's descriptor, for writers that need one (fevo::io::atomic_write).
  int fd() const { return f_.fd(); }

  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    const int err = injected("write") ? EIO : f_.try_write_all(data, n, &written_);
    if (err) abandon(("write failed after " + std::to_string(written_) + " bytes").c_str(), err);
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  /// Starts writing what was written so far to disk without waiting, so that commit() has less
  /// left to wait for (posix_file's start_writeback: a hint, never an error).
  void start_writeback() noexcept { f_.start_writeback(); }
  /// Makes what was written so far durable on a thread of its own (background_sync.hpp), so that
  /// commit() has little left to wait for.
  void sync_in_background() {
    if (!bg_) bg_ = std::make_unique<background_sync>(f_.fd());
    bg_->request();
  }

  /// Puts the file under its final name, durably (see the file comment).
  void commit() {
    if (bg_) {
      const int err = bg_->finish();
      if (injected("fdatasync") || err) abandon("fdatasync failed", err ? err : EIO);
    }
    if (int err = injected("fsync") ? EIO : f_.try_sync()) abandon("fsync failed", err);
    if (int err = injected("close") ? EIO : f_.try_close()) abandon("close failed", err);
    if (injected("rename") || ::rename(tmp_.c_str(), path_.c_str()) != 0)
      abandon(("rename of the temporary file '" + tmp_ + "' failed").c_str(), errno);
    committed_ = true;
    const std::string dir = parent_dir(path_);
    if (const int err = injected("dirsync") ? EIO : try_fsync_dir(dir))
      fail("'", path_, "' was written completely, but syncing its directory '", dir, "' failed: ",
           errno_text(err), " (the new name may not survive a power loss)");
  }

  /// Removes the temporary file and throws fevo::error: "cannot write '<path>': <what>: <err>".
  [[noreturn]] void abandon(const char* what, int err) {
    discard();
    fail("cannot write '", path_, "': ", what, ": ", errno_text(err), " (nothing was written under that name)");
  }

 private:
  void discard() noexcept {
    if (bg_) (void)bg_->finish();  // before the descriptor it syncs is closed
    f_ = file();
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

  std::string path_, tmp_;
  file f_;
  std::uint64_t written_ = 0;
  bool committed_ = false;
  std::unique_ptr<background_sync> bg_;
};

/// Writes `content` to `path` atomically.
inline void write_file_atomic(const std::string& path, const std::string& content) {
  atomic_file f(path);
  f.write(content);
  f.commit();
}

}  // namespace fevo::detail
