// The append-only file of a run's rows (metrics.csv, the TensorBoard event file): each record is
// one positioned write at the end, fsync'd when asked, and the size only moves on once the whole
// record is written everywhere (appended()), so that a failed record is cut back (rollback()).
#pragma once

#include "../../config.hpp"

#include <cstdint>
#include <string>

#include "../../detail/posix_file.hpp"

namespace fevo::record::detail {

class append_log {
 public:
  /// Bytes of the file (the end of the last record).
  std::uint64_t size() const { return size_; }
  /// Writes a record's bytes at the end of the file (one positioned write; fsync when asked). The
  /// size is unchanged until appended(); rollback() removes what was written.
  void append(const std::string& bytes, bool fsync) {
    f_.pwrite_all(bytes.data(), bytes.size(), size_);
    if (fsync) f_.sync();
  }
  void appended(std::uint64_t n) { size_ += n; }
  /// Cuts the file back to `size` bytes (its size before a failed record).
  void rollback(std::uint64_t size) { f_.truncate(size); }

  void start_writeback() noexcept { f_.start_writeback(); }
  void sync() { f_.sync(); }
  void close() { f_.close(); }
  /// Closes without reporting errors (after a failed open).
  void reset() noexcept { f_ = ::fevo::detail::file(); }

 protected:
  ::fevo::detail::file f_;
  std::uint64_t size_ = 0;
};

}  // namespace fevo::record::detail
