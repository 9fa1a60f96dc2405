// The TensorBoard event file of a recording run (with recorder_options::tensorboard).
//
// events.out.tfevents.<unix time>.<host>.fevo
//                        TensorBoard scalars fevo/<layer>/D, /S, /Z (float32), one Event per
//                        record at its `step`, written before record() returns. A resumed run
//                        appends to the newest such file of out_dir; a run that turns tensorboard
//                        on later starts a file with the records from then on.
//
// The encoding (TFRecord framing, the Event protobuf) is detail/tfevents.hpp. After a crash, the
// file is truncated after the last record the run keeps, and the scalars of kept records it lacks
// are written again from metrics.csv (at most the last csv_sink::keep_records).
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../detail/posix_file.hpp"
#include "../layer_info.hpp"
#include "../results.hpp"
#include "csv_sink.hpp"
#include "detail/tfevents.hpp"

namespace fevo::record::detail {

using ::fevo::detail::file;
using ::fevo::detail::fsync_dir;
using ::fevo::detail::join_path;
using ::fevo::detail::list_dir;
using ::fevo::detail::path_exists;

/// Seconds since the Unix epoch: the wall time of an Event.
inline double wall_clock() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

/// The event file of one run (see the file comment).
class tensorboard_sink : public detail::append_log {
 public:
  /// The event file of a run in `out_dir` with these layers; touches no file.
  tensorboard_sink(std::string out_dir, const std::vector<layer_info>& layers) : dir_(std::move(out_dir)) {
    for (const auto& l : layers) tags_.push_back("fevo/" + l.name + "/");
  }

  bool is_open() const { return f_.is_open(); }
  /// The event file in use (empty before create() or resume()).
  const std::string& path() const { return f_.path(); }

  /// Starts a new event file: events.out.tfevents.<unix time>.<host>.fevo (with "-<n>" before
  /// the extension when that name exists), holding the file_version Event.
  void create() {
    char host[256] = {0};
    if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
    std::string h;
    for (const char* c = host; *c; ++c) h += (*c == '/' || *c == ' ') ? '_' : *c;
    const std::string stem = "events.out.tfevents." + std::to_string(static_cast<long long>(wall_clock())) + "." + h;
    std::string path = join_path(dir_, stem + ".fevo");
    for (int n = 1; path_exists(path); ++n) path = join_path(dir_, stem + "-" + std::to_string(n) + ".fevo");
    f_.open(path, O_RDWR | O_CREAT | O_EXCL, 0666);
    const std::string v = tb::frame(tb::file_version_event(wall_clock()));
    f_.pwrite_all(v.data(), v.size(), 0);
    size_ = v.size();
    fsync_dir(dir_);
  }

  /// Continues the newest event file of a reopened run whose last record is `common`: keeps its
  /// records up to that step and writes those of `kept` (metrics.csv's last records) that it
  /// lacks. Without an event file, starts one (scalars from now on).
  void resume(const std::optional<std::int64_t>& common, const std::deque<csv_record>& kept, bool fsync) {
    std::string newest;
    for (const auto& n : list_dir(dir_))
      if (n.rfind("events.out.tfevents.", 0) == 0 && n.size() > 5 && n.compare(n.size() - 5, 5, ".fevo") == 0 &&
          n > newest)
        newest = n;
    if (newest.empty()) {
      create();  // tensorboard newly enabled: scalars from now on
      return;
    }
    f_.open(join_path(dir_, newest), O_RDWR);
    std::uint64_t valid_end = 0;
    const auto recs = tb::scan(f_, valid_end);
    std::optional<std::int64_t> last;  // the last scalar step kept
    std::uint64_t keep_end = 0;
    if (!recs.empty() && recs.front().ev.file_version.rfind("brain.Event:", 0) == 0) {
      keep_end = recs.front().end;
      for (const auto& r : recs)
        if (r.ev.has_summary && common && r.ev.step <= *common) {
          keep_end = r.end;
          last = r.ev.step;
        }
    }
    if (keep_end == 0) {  // not even a complete first record: start the file again
      f_.truncate(0);
      const std::string v = tb::frame(tb::file_version_event(wall_clock()));
      f_.pwrite_all(v.data(), v.size(), 0);
      keep_end = v.size();
    } else if (f_.size() != keep_end) {
      f_.truncate(keep_end);
    }
    size_ = keep_end;
    for (const auto& r : kept)
      if (common && r.step <= *common && (!last || r.step > *last)) {
        const std::string ev = event(r.step, r.dsz);
        f_.pwrite_all(ev.data(), ev.size(), size_);
        size_ += ev.size();
      }
    if (fsync) f_.sync();
  }

  /// The framed Event of one record's scalars.
  std::string event(std::int64_t step, const std::vector<layer_metrics>& m) const {
    std::vector<std::array<double, 3>> dsz;
    for (const auto& x : m) dsz.push_back({x.D, x.S, x.Z});
    return event(step, dsz);
  }

 private:
  /// float(d) rounded to nearest, without the undefined behaviour of converting a double beyond
  /// the float range: those become FLT_MAX (within half an ulp of it) or an infinity.
  static float to_float(double d) {
    const double top = std::numeric_limits<float>::max();
    const double half_ulp = 0x1p103;  // half the spacing of floats at FLT_MAX
    const float inf = std::numeric_limits<float>::infinity();
    if (d > top) return d - top < half_ulp ? std::numeric_limits<float>::max() : inf;
    if (d < -top) return -top - d < half_ulp ? -std::numeric_limits<float>::max() : -inf;
    return static_cast<float>(d);  // NaN stays NaN
  }

  std::string event(std::int64_t step, const std::vector<std::array<double, 3>>& dsz) const {
    std::vector<std::pair<std::string, float>> v;
    v.reserve(3 * tags_.size());
    for (std::size_t k = 0; k < tags_.size(); ++k) {
      v.emplace_back(tags_[k] + "D", to_float(dsz[k][0]));
      v.emplace_back(tags_[k] + "S", to_float(dsz[k][1]));
      v.emplace_back(tags_[k] + "Z", to_float(dsz[k][2]));
    }
    return tb::frame(tb::scalars_event(wall_clock(), step, v));
  }

  std::string dir_;
  std::vector<std::string> tags_;  ///< "fevo/<layer>/" of each layer
};

}  // namespace fevo::record::detail
