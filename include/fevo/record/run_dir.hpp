// The directory of a recording run: its paths, its lock and the temporary files that interrupted
// atomic writes leave in it.
//
// out_dir/          created with its parents when the run is opened
//   metrics.csv     csv_sink.hpp
//   filter_summary.csv, series/
//                   series_sink.hpp
//   events.out.tfevents.<unix time>.<host>.fevo
//                   tensorboard_sink.hpp
//   fevo-state/     journal.hpp: the recorder's own journal and checkpoint
//
// A run directory is locked (flock on out_dir) while a run_writer has it open: a second writer is
// refused. Whole files are written atomically (a temporary file in the same directory whose name
// holds detail::temp_marker, renamed over the final name); opening a run removes the temporaries
// that an interrupted write left in out_dir, fevo-state/ and series/.
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <string>
#include <utility>

#include "../detail/atomic_file.hpp"
#include "../detail/posix_file.hpp"
#include "../error.hpp"

namespace fevo::record::detail {

using ::fevo::detail::file;
using ::fevo::detail::io_fail;
using ::fevo::detail::join_path;
using ::fevo::detail::list_dir;
using ::fevo::detail::make_dirs;
using ::fevo::detail::path_exists;
using ::fevo::detail::remove_file;
using ::fevo::detail::temp_marker;

class run_dir {
 public:
  explicit run_dir(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  /// The path of `name` in the run directory.
  std::string path_of(const std::string& name) const { return join_path(path_, name); }
  std::string state_dir() const { return path_of("fevo-state"); }
  std::string series_dir() const { return path_of("series"); }

  /// Creates the directory (and its parents) if missing and takes its lock; fevo::error when
  /// another writer holds it.
  void lock() {
    make_dirs(path_);
    lock_.open(path_, O_RDONLY | O_DIRECTORY);
    if (::flock(lock_.fd(), LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      lock_ = file();
      if (err == EWOULDBLOCK)
        ::fevo::detail::fail("recorder: '", path_,
                             "' is in use by another recorder (it holds the directory's lock)");
      io_fail("cannot lock", path_, err);
    }
  }
  /// Releases the lock. Never throws.
  void unlock() noexcept { lock_ = file(); }

  /// Removes the leftovers of interrupted atomic writes in the run's directories.
  void remove_temporaries() const {
    remove_temporaries_in(path_);
    if (path_exists(state_dir())) remove_temporaries_in(state_dir());
    if (path_exists(series_dir())) remove_temporaries_in(series_dir());
  }

 private:
  static void remove_temporaries_in(const std::string& dir) {
    for (const auto& n : list_dir(dir))
      if (n.find(temp_marker) != std::string::npos) remove_file(join_path(dir, n));
  }

  std::string path_;
  file lock_;
};

}  // namespace fevo::record::detail
