// Checkpoint directories as Hugging Face writes them: a model saved by save_pretrained (one
// model.safetensors, or shards named by model.safetensors.index.json) and the checkpoint-N/
// directories of its Trainer (with trainer_state.json). fevo::io::snapshot opens them
// (snapshot.hpp); this file reads and checks the index and the step.
//
//   checkpoint-400/
//     model.safetensors.index.json   {"metadata": {"total_size": 28000},
//                                     "weight_map": {"conv1.weight": "model-00001-of-00002.safetensors", ...}}
//     model-00001-of-00002.safetensors
//     model-00002-of-00002.safetensors
//     trainer_state.json             {"global_step": 400, ...}
//     optimizer.pt, rng_state.pth, ...   (never opened)
//
// The index is checked before any shard is opened (read_shard_index): a JSON object (at most
// json_max_size bytes, valid UTF-8, no duplicate key at any level: a tensor listed twice in
// weight_map is refused, not silently mapped to one of its shards) whose "weight_map" maps tensor
// names to shard file names; every shard name a plain file name in the checkpoint directory (no
// '/', '\', "..", "." or empty name; a symbolic link must stay in the directory) naming a regular
// file. Each shard opened is then checked against it (check_shard: the shard holds exactly the
// tensors the index maps to it, so a tensor is in its shard and in no other), and the index's
// "metadata" "total_size", when present, is checked against the bytes of the tensors of every
// shard (check_total_size), never used to size anything.
#pragma once

#include "../config.hpp"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "../error.hpp"
#include "dtype.hpp"
#include "safetensors.hpp"

namespace fevo::io {

/// The index of a sharded checkpoint, in its directory.
inline constexpr const char* shard_index_name = "model.safetensors.index.json";
/// The weights of an unsharded checkpoint, in its directory.
inline constexpr const char* checkpoint_weights_name = "model.safetensors";
/// The Trainer's state in a checkpoint directory; its "global_step" is the checkpoint's step.
inline constexpr const char* trainer_state_name = "trainer_state.json";
/// The largest index or trainer_state.json read, in bytes.
inline constexpr std::uint64_t json_max_size = 100000000;

namespace detail {

inline bool is_directory(const std::string& p) {
  struct ::stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

inline bool exists(const std::string& p) {
  struct ::stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

inline std::string join(const std::string& dir, const std::string& name) {
  return !dir.empty() && dir.back() == '/' ? dir + name : dir + "/" + name;
}

/// The real path of `p` (links resolved), or "" when it cannot be resolved.
inline std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

/// A JSON file, parsed with every object checked for duplicate keys (JSON libraries keep one of
/// them silently). fevo::error naming the file when it cannot be read, is larger than
/// json_max_size, is not valid UTF-8 JSON or repeats a key.
inline nlohmann::json read_json(const std::string& path) {
  using ::fevo::detail::fail;
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open: ", errno_text(errno));
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) fail(path, ": cannot read");
  if (std::uint64_t(size) > json_max_size)
    fail(path, ": ", size, " bytes, more than the ", json_max_size, " a JSON file of a checkpoint may have");
  f.seekg(0);
  std::string text(static_cast<std::size_t>(size), '\0');
  if (!f.read(text.data(), size)) fail(path, ": cannot read: ", errno_text(errno));
  std::vector<std::unordered_set<std::string>> keys;  // the keys of each open object
  std::string duplicate;
  const auto check = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using ev_t = nlohmann::json::parse_event_t;
    if (ev == ev_t::object_start) keys.emplace_back();
    else if (ev == ev_t::object_end) keys.pop_back();
    else if (ev == ev_t::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, check);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!duplicate.empty())
    fail(path, ": key '", duplicate, "' appears twice in one object (a JSON reader would keep one of them)");
  return j;
}

/// A non-negative JSON integer, or fevo::error "<path>: <what> is not ...".
inline std::uint64_t json_count(const nlohmann::json& v, const std::string& path, const char* what) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return std::uint64_t(v.get<std::int64_t>());
  ::fevo::detail::fail(path, ": ", what, " is ", v.dump(), ", not a non-negative integer");
}

/// A shard's name is a plain file name: not empty, not "." or "..", no '/', '\' or NUL.
inline bool plain_file_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

}  // namespace detail

/// What a directory is to fevo: a sharded checkpoint (it holds model.safetensors.index.json), an
/// unsharded one (model.safetensors), or neither.
enum class checkpoint_kind { none, sharded, single };

inline checkpoint_kind checkpoint_kind_of(const std::string& dir) {
  if (!detail::is_directory(dir)) return checkpoint_kind::none;
  if (detail::exists(detail::join(dir, shard_index_name))) return checkpoint_kind::sharded;
  if (detail::exists(detail::join(dir, checkpoint_weights_name))) return checkpoint_kind::single;
  return checkpoint_kind::none;
}

/// A checked model.safetensors.index.json (see the file comment).
struct shard_index {
  std::string dir;                  ///< the checkpoint directory
  std::string path;                 ///< the index file
  std::vector<std::string> shards;  ///< the shard files (dir/name), each once, sorted by name
  /// Per shard, the tensors the index maps to it, sorted by name.
  std::vector<std::vector<std::string>> tensors;
  /// Tensor name -> its shard (an index into shards).
  std::unordered_map<std::string, std::size_t> shard_of;
  std::optional<std::uint64_t> total_size;  ///< metadata.total_size, when present (checked, not trusted)
  std::size_t tensor_count() const { return shard_of.size(); }
};

/// Reads and checks `dir`'s model.safetensors.index.json (no shard is opened; each shard file
/// must exist). fevo::error naming the index and the problem.
inline shard_index read_shard_index(const std::string& dir) {
  using ::fevo::detail::fail;
  shard_index ix;
  ix.dir = dir;
  ix.path = detail::join(dir, shard_index_name);
  const nlohmann::json j = detail::read_json(ix.path);
  if (!j.is_object()) fail(ix.path, ": not a JSON object");
  const auto meta = j.find("metadata");
  if (meta != j.end() && !meta->is_null()) {
    if (!meta->is_object()) fail(ix.path, ": \"metadata\" is not an object");
    const auto ts = meta->find("total_size");
    if (ts != meta->end() && !ts->is_null()) ix.total_size = detail::json_count(*ts, ix.path, "metadata total_size");
  }
  const auto wm = j.find("weight_map");
  if (wm == j.end()) fail(ix.path, ": no \"weight_map\" (the map from tensor names to shard files)");
  if (!wm->is_object()) fail(ix.path, ": \"weight_map\" is not an object");
  if (wm->empty()) fail(ix.path, ": \"weight_map\" is empty");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string()) fail(ix.path, ": tensor '", it.key(), "' maps to ", it->dump(), ", not a file name");
    const std::string& shard = it->get_ref<const std::string&>();
    if (!detail::plain_file_name(shard))
      fail(ix.path, ": tensor '", it.key(), "' maps to '", shard,
           "', which is not a plain file name in the checkpoint directory (no '/', '\\', '..')");
    by_shard[shard].push_back(it.key());
  }
  const std::string real_dir = detail::real_path(dir);
  if (real_dir.empty()) fail(dir, ": cannot resolve the directory's path: ", detail::errno_text(errno));
  for (auto& [name, names] : by_shard) {
    const std::string p = detail::join(dir, name);
    struct ::stat st {};
    if (::lstat(p.c_str(), &st) != 0)
      fail(ix.path, ": shard '", name, "' (of tensor '", names.front(), "') is missing: ", p, ": ",
           detail::errno_text(errno));
    if (S_ISLNK(st.st_mode)) {
      const std::string target = detail::real_path(p);
      const std::string parent = target.substr(0, target.find_last_of('/'));
      if (target.empty() || (parent.empty() ? std::string("/") : parent) != real_dir)
        fail(ix.path, ": shard '", name, "' is a link out of the checkpoint directory (to ",
             target.empty() ? std::string("nowhere") : target, ")");
    }
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      fail(ix.path, ": shard '", name, "' is not a regular file");
    std::sort(names.begin(), names.end());
    const std::size_t k = ix.shards.size();
    for (const auto& t : names) ix.shard_of.emplace(t, k);
    ix.shards.push_back(p);
    ix.tensors.push_back(std::move(names));
  }
  return ix;
}

/// Checks that shard `k` of `ix`, whose tensors are `have`, holds exactly the tensors the index
/// maps to it: one that the index maps elsewhere (so in two shards) or not at all, or one of its
/// tensors that is missing, is a fevo::error naming the shard file and the tensor.
inline void check_shard(const shard_index& ix, std::size_t k, const std::vector<tensor_info>& have) {
  using ::fevo::detail::fail;
  const std::string& path = ix.shards.at(k);
  for (const auto& t : have) {
    const auto it = ix.shard_of.find(t.name);
    if (it == ix.shard_of.end())
      fail(path, ": holds tensor '", t.name, "', which ", ix.path, " does not list");
    if (it->second != k)
      fail(path, ": holds tensor '", t.name, "', which ", ix.path, " maps to ", ix.shards[it->second],
           " (a tensor must be in its own shard and in no other)");
  }
  if (have.size() != ix.tensors[k].size()) {
    std::vector<std::string> names;
    for (const auto& t : have) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    for (const auto& want : ix.tensors[k])
      if (!std::binary_search(names.begin(), names.end(), want))
        fail(path, ": tensor '", want, "' is missing; ", ix.path, " maps it to this shard");
  }
}

/// Checks metadata total_size, when the index has one, against `bytes`, the bytes of every tensor
/// of every shard.
inline void check_total_size(const shard_index& ix, std::uint64_t bytes) {
  FEVO_EXPECTS(!ix.total_size || *ix.total_size == bytes, ix.path, ": metadata total_size is ", *ix.total_size,
               " bytes, but the tensors of its ", ix.shards.size(), " shard", ix.shards.size() == 1 ? "" : "s",
               " hold ", bytes, " bytes");
}

/// "global_step" of `dir`'s trainer_state.json; none when there is no such file or no such key.
/// fevo::error naming the file when it is not valid JSON or the step is not an integer.
inline std::optional<std::int64_t> trainer_state_step(const std::string& dir) {
  const std::string p = detail::join(dir, trainer_state_name);
  if (!detail::exists(p)) return std::nullopt;
  const nlohmann::json j = detail::read_json(p);
  FEVO_EXPECTS(j.is_object(), p, ": not a JSON object");
  const auto it = j.find("global_step");
  if (it == j.end() || it->is_null()) return std::nullopt;
  const std::uint64_t s = detail::json_count(*it, p, "global_step");
  FEVO_EXPECTS(s <= std::uint64_t(std::numeric_limits<std::int64_t>::max()), p, ": global_step ", s, " is too large");
  return std::int64_t(s);
}

}  // namespace fevo::io
