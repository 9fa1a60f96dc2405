// A file's data made durable on a thread of its own while its writer goes on: request() asks for
// an fdatasync of what was written so far, finish() waits for the thread and says whether every
// one succeeded. A disk's cache flush costs time in proportion to what was written since the last
// one, so a file written in parts and flushed behind its writer leaves its final fsync little to
// wait for (filter_summary.csv while fevo analyze computes its last pairs: docs/benchmarks-log.md).
// POSIX only.
#pragma once

#include "../config.hpp"

#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

namespace fevo::detail {

class background_sync {
 public:
  /// For the open descriptor fd, which must stay open until finish() (or destruction).
  explicit background_sync(int fd) noexcept : fd_(fd) {}
  background_sync(const background_sync&) = delete;
  background_sync& operator=(const background_sync&) = delete;
  ~background_sync() { (void)finish(); }

  /// Asks for an fdatasync of what was written before the call (one runs at a time; requests made
  /// while one runs are served by the next). Where no thread can be started it does nothing: the
  /// writer's own fsync then has it all to do.
  void request() noexcept {
    std::lock_guard<std::mutex> lock(m_);
    if (stop_) return;
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { run(); });
      } catch (const std::system_error&) {
        return;
      }
    }
    pending_ = true;
    cv_.notify_one();
  }

  /// Waits for the fdatasync in progress (a request not yet started is dropped) and stops the
  /// thread; 0, or the errno of the first that failed (file systems that cannot sync, EINVAL and
  /// EROFS, are not a failure). A writeback error is reported once per open file, so the writer's
  /// fsync after this may not see one reported here: it must check this result.
  int finish() noexcept {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    return err_;
  }

 private:
  void run() noexcept {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      cv_.wait(lock, [this] { return pending_ || stop_; });
      if (stop_) return;
      pending_ = false;
      lock.unlock();
#if defined(__linux__)
      const int e = ::fdatasync(fd_) != 0 ? errno : 0;
#else
      const int e = ::fsync(fd_) != 0 ? errno : 0;
#endif
      lock.lock();
      if (e != 0 && e != EINVAL && e != EROFS && err_ == 0) err_ = e;
    }
  }

  const int fd_;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread thread_;
  bool pending_ = false, stop_ = false;
  int err_ = 0;  // written by the thread under m_, read after join
};

}  // namespace fevo::detail
