// fevo::io::snapshot: the weights of a network at one training step, as named tensors, and
// fevo::io::make_series: the snapshots of a run in the order of their steps.
//
//   fevo::io::snapshot s("ckpt/step_1000.safetensors");   // or a .npy, an .npz, a checkpoint directory
//   for (const auto& t : s.entries()) ...                   // name, type, shape, nbytes, source
//   std::vector<float> scratch;
//   auto w = s.view<float>("conv1.weight", fevo::io::layout::oihw, scratch);
//   s.at("conv.weight");   // fevo::error: the file, the name, and the tensors the file has
//
//   for (const auto& item : fevo::io::make_series({"ckpt/"}))   // directories are expanded
//     fevo::io::snapshot s(item.path);                            // item.step: its step
//
// Formats: a file's format is detected from its bytes (detect_format, format.hpp), which refuses
// Python pickles (PyTorch checkpoints) with a message that says how to convert them.
//   safetensors  memory-mapped: views point into the mapping (zero-copy, in either layout; a
//                tensor whose data is misaligned for its type is copied to the scratch buffer),
//                and evict() drops a tensor's pages once it is done with;
//   .npy         one tensor, named "array", loaded;
//   .npz         one tensor per member, named by the member (without ".npy"), loaded.
// Every reader validates the whole file (see safetensors.hpp, npy.hpp, npz.hpp).
//
// Checkpoint directories (checkpoint.hpp): a directory holding model.safetensors.index.json is one
// snapshot over the shards its weight_map names (each a safetensors file, mapped); one holding
// model.safetensors is one snapshot of that file. The index is checked first, then each shard
// against it (exactly the tensors the index maps to it) and metadata total_size against them all.
// Tensors are listed shard by shard (shards by name), each shard's in the order of their data.
//
// Sources: a snapshot reads its tensors from a list of sources (files), and each tensor records
// the source that holds it: one file, or the shards of a checkpoint. A snapshot opened with a list
// of the tensors wanted opens only the shards that hold them (the rest of the index is still
// checked); read_shard reads and checks one shard's header, so that the shards of a series can be
// checked by several processes.
//
// Steps: a file's step is its safetensors __metadata__ "step" (a decimal integer) when it has one,
// else the number that ends the last word of its file name (step_from_name:
// "ckpt-1200.safetensors" and "epoch3-step1200.npz" are 1200, "no4d.npy" has none), else it has
// none. A checkpoint directory's step is its trainer_state.json "global_step" when it has one,
// else its model.safetensors' __metadata__ "step", else the number that ends the directory's
// name ("checkpoint-1200"). make_series gives every snapshot its step that way, sorts by step and
// refuses two with the same step, naming both.
#pragma once

#include "../config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../view.hpp"
#include "format.hpp"
#include "npy.hpp"
#include "checkpoint.hpp"
#include "npz.hpp"
#include "safetensors.hpp"

namespace fevo::io {

/// An integer step written as text (a __metadata__ value, a command-line argument); fevo::error
/// "<what>: step '<text>' is not an integer" otherwise.
inline std::int64_t parse_step(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  FEVO_EXPECTS(used == text.size() && !text.empty(), what, ": step '", text, "' is not an integer");
  return v;
}

/// The step in a file's name: the name without its directory and its last extension is cut into
/// words at the separators '_', '-', '.' and ' '; the step is the number that ends the last word
/// that ends in one (at most 18 digits). "step_400", "checkpoint-400", "epoch3-step400" and
/// "ckpt.400" are step 400; "no4d" has none (its digit does not end a word); "resnet50" is 50.
/// A directory's name (strip_extension false) keeps its last extension: "ckpt.400/" is 400.
inline std::optional<std::int64_t> step_from_name(std::string path, bool strip_extension = true) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string base = path.substr(path.find_last_of('/') + 1);
  const std::size_t dot = base.rfind('.');
  if (strip_extension && dot != std::string::npos && dot > 0) base.resize(dot);
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto separator = [](char c) { return c == '_' || c == '-' || c == '.' || c == ' '; };
  // Scan the words from the last: a word ends at a separator or at the end of the name.
  std::size_t end = base.size();
  while (end > 0) {
    std::size_t begin = end;
    while (begin > 0 && !separator(base[begin - 1])) --begin;
    std::size_t first = end;
    while (first > begin && digit(base[first - 1])) --first;
    if (first < end) {
      if (end - first > 18) return std::nullopt;
      return std::stoll(base.substr(first, end - first));
    }
    end = begin > 0 ? begin - 1 : 0;
  }
  return std::nullopt;
}

/// Whether a directory entry is taken for a snapshot file when a directory is expanded: the
/// snapshot extensions, and those of PyTorch checkpoints (so that they are refused, not skipped).
inline bool is_snapshot_name(const std::string& name) {
  for (const char* ext : {".safetensors", ".npy", ".npz", ".pt", ".pth", ".ckpt", ".bin"}) {
    const std::size_t n = std::char_traits<char>::length(ext);
    if (name.size() > n && name.compare(name.size() - n, n, ext) == 0) return true;
  }
  return false;
}

namespace detail {
/// Bytes [b, e) of the data of a snapshot's source file `src`.
struct byte_range {
  std::size_t src;
  std::uint64_t b, e;
};
/// Part `part` of `parts` of `ranges` laid end to end: the bytes [floor(T * part / parts),
/// floor(T * (part + 1) / parts)) of their T bytes, as ranges of the same files. The parts are
/// contiguous, do not overlap and together are `ranges`.
inline std::vector<byte_range> slice_ranges(const std::vector<byte_range>& ranges, std::size_t part,
                                            std::size_t parts) {
  std::uint64_t total = 0;
  for (const auto& r : ranges) total += r.e - r.b;
  const auto cut = [&](std::size_t p) {  // floor(total * p / parts), without overflow
    return total / parts * p + total % parts * p / parts;
  };
  const std::uint64_t lo = cut(part), hi = cut(part + 1);
  std::vector<byte_range> out;
  std::uint64_t at = 0;
  for (const auto& r : ranges) {
    const std::uint64_t len = r.e - r.b, b = std::max(lo, at), e = std::min(hi, at + len);
    if (b < e) out.push_back({r.src, r.b + (b - at), r.b + (e - at)});
    at += len;
  }
  return out;
}
}  // namespace detail

/// A snapshot (see the file comment).
class snapshot {
 public:
  /// One tensor of the snapshot.
  struct entry {
    std::string name;
    dtype type;
    std::vector<std::uint64_t> shape;
    std::uint64_t nbytes;    ///< bytes of its data
    std::size_t source = 0;  ///< the index in sources() of the file that holds it
  };
  /// A file the snapshot reads tensors from.
  struct source {
    std::string path;
    file_format format;
  };

  /// Opens a snapshot file or checkpoint directory: detects its format (refusing pickles) and
  /// reads its tensor list (safetensors files are mapped; .npy and .npz are loaded). fevo::error
  /// naming the file when it cannot be read or is not valid.
  explicit snapshot(const std::string& path) : path_(path) { open(nullptr); }
  /// As above, but a sharded checkpoint opens only the shards that hold the tensors `wanted` (a
  /// name the index does not list is a fevo::error); entries() then lists those shards' tensors.
  /// Files and unsharded checkpoints open whole.
  snapshot(const std::string& path, const std::vector<std::string>& wanted) : path_(path) { open(&wanted); }

  snapshot(snapshot&&) noexcept = default;
  snapshot& operator=(snapshot&&) noexcept = default;

  /// The path the snapshot was opened from.
  const std::string& path() const { return path_; }
  /// The format of its file (safetensors for a checkpoint directory).
  file_format format() const { return sources_.empty() ? file_format::safetensors : sources_.front().format; }
  /// Whether it is a sharded checkpoint (a directory with model.safetensors.index.json).
  bool sharded() const { return sharded_; }
  const std::vector<source>& sources() const { return sources_; }
  /// Every tensor: a safetensors file's in the order of their data, a .npz's by name.
  const std::vector<entry>& entries() const { return entries_; }
  /// The tensor called `name`, or nullptr.
  const entry* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  /// The tensor called `name`; fevo::error naming the file and listing (up to 20 of) the
  /// tensors it has when there is none.
  const entry& at(const std::string& name) const {
    if (const entry* e = find(name)) return *e;
    std::string have;
    const std::size_t shown = std::min<std::size_t>(entries_.size(), max_listed);
    for (std::size_t k = 0; k < shown; ++k) have += (k ? ", '" : "'") + entries_[k].name + "'";
    if (entries_.size() > shown) have += ", ... (" + std::to_string(entries_.size() - shown) + " more)";
    ::fevo::detail::fail(path_, ": tensor '", name, "' is missing; ",
                         entries_.empty() ? std::string("the file holds no tensor")
                                          : "it has " + std::to_string(entries_.size()) + " tensor" +
                                                (entries_.size() == 1 ? "" : "s") + ": " + have);
  }

  /// Whether every tensor is memory-mapped (safetensors) rather than loaded (.npy, .npz).
  bool mapped() const {
    return std::all_of(readers_.begin(), readers_.end(), [](const reader& r) { return r.st != nullptr; });
  }
  /// Drops a mapped tensor's pages from memory (they are read again if touched; views stay
  /// valid); a no-op for loaded tensors and unknown names.
  void evict(const std::string& name) const {
    std::size_t src = 0;
    if (const tensor_info* t = mapped_info(name, src)) readers_[src].st->evict(*t);
  }
  /// Drops the pages of `nbytes` bytes of a mapped tensor's data from `offset` on (the whole pages
  /// they touch), e.g. those of a range of its filters; as evict(name) otherwise.
  void evict(const std::string& name, std::uint64_t offset, std::uint64_t nbytes) const {
    std::size_t src = 0;
    const tensor_info* t = mapped_info(name, src);
    if (!t || offset >= t->nbytes) return;
    tensor_info part = *t;
    part.offset += offset;
    part.nbytes = std::min(nbytes, t->nbytes - offset);
    readers_[src].st->evict(part);
  }
  /// evict(name) for each of `names`, in as few calls to the kernel as their places allow: the
  /// data of tensors less than evict_gap bytes apart in a file goes in one range (the bytes
  /// between them too: whatever of them is mapped is read again if touched). Each madvise call
  /// interrupts every other thread of the process to flush its TLB; `fevo analyze` dropping the
  /// 53 layers of a ResNet-50 snapshot one by one spent 8 ms of a 16-snapshot run in them.
  void evict(const std::vector<std::string>& names) const { evict_part(names, 0, 1); }
  /// Part `part` of evict(names) cut into `parts` of equal bytes (a page at a cut may be dropped
  /// by both parts), for threads to share: unmapping costs the kernel work on every page. The
  /// parts together drop what evict(names) does. fevo::error unless part < parts.
  void evict_part(const std::vector<std::string>& names, std::size_t part, std::size_t parts) const {
    FEVO_EXPECTS(part < parts, "evict_part: part ", part, " of ", parts, " does not exist");
    std::vector<detail::byte_range> ranges;
    for (const auto& name : names) {
      std::size_t src = 0;
      if (const tensor_info* t = mapped_info(name, src))
        if (t->nbytes) ranges.push_back({src, t->offset, t->offset + t->nbytes});
    }
    std::sort(ranges.begin(), ranges.end(), [](const detail::byte_range& x, const detail::byte_range& y) {
      return std::tie(x.src, x.b, x.e) < std::tie(y.src, y.b, y.e);
    });
    std::vector<detail::byte_range> merged;
    for (std::size_t k = 0; k < ranges.size();) {
      detail::byte_range m = ranges[k];
      for (++k; k < ranges.size() && ranges[k].src == m.src && ranges[k].b <= m.e + evict_gap; ++k)
        m.e = std::max(m.e, ranges[k].e);
      merged.push_back(m);
    }
    for (const auto& r : detail::slice_ranges(merged, part, parts)) readers_[r.src].st->evict_data(r.b, r.e);
  }
  /// Tensors of evict(names) closer than this in a file are dropped in one call.
  static constexpr std::uint64_t evict_gap = std::uint64_t{1} << 20;

  /// A safetensors file's __metadata__ (empty for .npy and .npz).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The snapshot's step (see the file comment): __metadata__ "step", else the number in the
  /// file's name, else none; for a checkpoint directory trainer_state.json "global_step" first.
  /// fevo::error when __metadata__ "step" or global_step is not an integer.
  std::optional<std::int64_t> step() const { return step_of(path_, metadata_); }

  /// The step of the snapshot at `path` (see step()), reading no more than a safetensors header
  /// (and a checkpoint's trainer_state.json); detects the format first, so a pickle, a missing or
  /// an unknown file is refused.
  static std::optional<std::int64_t> step_of(const std::string& path) {
    if (detail::is_directory(path)) {
      switch (checkpoint_kind_of(path)) {
        case checkpoint_kind::sharded: return step_of(path, {});
        case checkpoint_kind::single: {
          if (auto s = trainer_state_step(path)) return s;
          const safetensors_file st(detail::join(path, checkpoint_weights_name));
          return step_of(path, st.metadata());
        }
        case checkpoint_kind::none: not_a_checkpoint(path);
      }
    }
    if (detect_format(path) == file_format::safetensors) {
      const safetensors_file st(path);
      return step_of(path, st.metadata());
    }
    return step_from_name(path);
  }

  /// What a snapshot file holds, read from its headers alone: no tensor data is read or loaded (a
  /// safetensors file's header; a .npy's header; each .npz member's .npy header, decompressing
  /// only its first bytes). To check a whole series before any of it is loaded; fevo::error, as
  /// the constructor's, for a file that cannot be read or whose headers are not valid.
  struct header {
    std::string path;
    file_format format;
    std::vector<std::string> sources;  ///< the files read: the path, or a checkpoint's shards
    bool sharded = false;              ///< a sharded checkpoint
    std::vector<entry> entries;  ///< as the opened snapshot's entries(), in the same order
    std::map<std::string, std::string> metadata;
    std::optional<std::int64_t> step;  ///< as step()
    const entry* find(const std::string& name) const {
      for (const entry& e : entries)
        if (e.name == name) return &e;
      return nullptr;
    }
  };
  static header read_header(const std::string& path) {
    header h;
    h.path = path;
    if (detail::is_directory(path)) {
      h.format = file_format::safetensors;
      switch (checkpoint_kind_of(path)) {
        case checkpoint_kind::sharded: {
          const shard_index ix = read_shard_index(path);
          std::uint64_t bytes = 0;
          for (std::size_t k = 0; k < ix.shards.size(); ++k)
            for (entry& e : read_shard(ix, k)) {
              bytes += e.nbytes;
              h.entries.push_back(std::move(e));
            }
          check_total_size(ix, bytes);
          h.sources = ix.shards;
          h.sharded = true;
          break;
        }
        case checkpoint_kind::single: {
          const std::string file = detail::join(path, checkpoint_weights_name);
          FEVO_EXPECTS(detect_format(file) == file_format::safetensors, file, ": not a safetensors file");
          const safetensors_file st(file);
          for (const auto& t : st.tensors()) h.entries.push_back({t.name, t.type, t.shape, t.nbytes, 0});
          h.metadata = st.metadata();
          h.sources = {file};
          break;
        }
        case checkpoint_kind::none: not_a_checkpoint(path);
      }
      h.step = step_of(path, h.metadata);
      return h;
    }
    h.sources = {path};
    h.format = detect_format(path);
    switch (h.format) {
      case file_format::safetensors: {
        const safetensors_file st(path);  // mapped: only the header's pages are read
        for (const auto& t : st.tensors()) h.entries.push_back({t.name, t.type, t.shape, t.nbytes, 0});
        h.metadata = st.metadata();
        break;
      }
      case file_format::npy: {
        const npy_header nh = read_npy_header(path);
        h.entries.push_back({"array", nh.type, nh.shape, nh.nbytes, 0});
        break;
      }
      case file_format::npz: {
        const npz_archive z(path);
        std::vector<entry> es;
        for (const npz_member& m : z.members()) {
          const npy_header nh = z.header(m.key);
          es.push_back({m.key, nh.type, nh.shape, nh.nbytes, 0});
        }
        std::sort(es.begin(), es.end(), [](const entry& a, const entry& b) { return a.name < b.name; });
        h.entries = std::move(es);
        break;
      }
    }
    h.step = step_of(path, h.metadata);
    return h;
  }

  /// The tensors of shard k of a sharded checkpoint, read from its header alone and checked
  /// against the index (check_shard); each entry's source is k. fevo::error naming the shard.
  static std::vector<entry> read_shard(const shard_index& ix, std::size_t k) {
    const std::string& file = ix.shards.at(k);
    FEVO_EXPECTS(detect_format(file) == file_format::safetensors, file, ": not a safetensors file (a shard of ",
                 ix.path, ")");
    const safetensors_file st(file);  // mapped: only the header's pages are read
    check_shard(ix, k, st.tensors());
    std::vector<entry> out;
    for (const auto& t : st.tensors()) out.push_back({t.name, t.type, t.shape, t.nbytes, k});
    return out;
  }

  /// A tensor as a fevo view of T: rank 4 in layout `lay`, rank 2 as N x C x 1 x 1 with
  /// `allow_2d`; T must match the tensor's dtype (see view_of in safetensors.hpp). The view points
  /// into the mapping or the loaded array, or, for misaligned mapped data, into `scratch`, which
  /// must then outlive it. fevo::error (see at()) for a name the snapshot does not have.
  template <class T>
  filter_view<const T> view(const std::string& name, layout lay, std::vector<T>& scratch,
                            bool allow_2d = false) const {
    const reader& r = readers_[at(name).source];
    if (r.st) return view_of<T>(*r.st, r.st->at(name), lay, scratch, allow_2d);
    return view_of<T>(r.arrays.at(name), lay, scratch, allow_2d);
  }

 private:
  /// The tensor called `name` in the safetensors file that maps it, and in `source` that file's
  /// index; nullptr for loaded tensors (.npy, .npz) and unknown names.
  const tensor_info* mapped_info(const std::string& name, std::size_t& source) const {
    const entry* e = find(name);
    if (!e || !readers_[e->source].st) return nullptr;
    source = e->source;
    return readers_[e->source].st->find(name);
  }
  /// The tensors of one source: a mapped safetensors file, or loaded arrays.
  struct reader {
    std::unique_ptr<safetensors_file> st;
    std::map<std::string, npy_array> arrays;
  };
  static constexpr std::size_t max_listed = 20;

  static std::optional<std::int64_t> step_of(const std::string& path,
                                             const std::map<std::string, std::string>& metadata) {
    const bool dir = detail::is_directory(path);
    if (dir)
      if (auto s = trainer_state_step(path)) return s;
    const auto it = metadata.find("step");
    if (it != metadata.end())
      return parse_step(it->second, (dir ? detail::join(path, checkpoint_weights_name) : path) + ": __metadata__");
    return step_from_name(path, !dir);
  }

  [[noreturn]] static void not_a_checkpoint(const std::string& path) {
    ::fevo::detail::fail(path, ": a directory, but not a checkpoint (it holds no ", shard_index_name, " and no ",
                         checkpoint_weights_name, "); pass its snapshot files, or the directory that holds them "
                         "to fevo analyze");
  }

  void open(const std::vector<std::string>* wanted) {
    if (!detail::is_directory(path_)) {
      add_source(path_);
      return;
    }
    switch (checkpoint_kind_of(path_)) {
      case checkpoint_kind::single: {
        const std::string file = detail::join(path_, checkpoint_weights_name);
        FEVO_EXPECTS(detect_format(file) == file_format::safetensors, file, ": not a safetensors file");
        add_source(file);
        return;
      }
      case checkpoint_kind::sharded: break;
      case checkpoint_kind::none: not_a_checkpoint(path_);
    }
    sharded_ = true;
    const shard_index ix = read_shard_index(path_);
    std::vector<bool> open(ix.shards.size(), wanted == nullptr);
    if (wanted)
      for (const auto& name : *wanted) {
        const auto it = ix.shard_of.find(name);
        FEVO_EXPECTS(it != ix.shard_of.end(), ix.path, ": tensor '", name, "' is missing (the index lists ",
                     ix.tensor_count(), " tensors)");
        open[it->second] = true;
      }
    std::uint64_t bytes = 0;
    for (std::size_t k = 0; k < ix.shards.size(); ++k) {
      if (!open[k]) continue;
      FEVO_EXPECTS(detect_format(ix.shards[k]) == file_format::safetensors, ix.shards[k],
                   ": not a safetensors file (a shard of ", ix.path, ")");
      auto st = std::make_unique<safetensors_file>(ix.shards[k]);
      check_shard(ix, k, st->tensors());
      for (const auto& t : st->tensors()) bytes += t.nbytes;
      add_source(ix.shards[k], std::move(st));
    }
    if (!wanted) check_total_size(ix, bytes);
    metadata_.clear();
  }

  /// Adds the file at `path` as a source; `mapped`, when given, is that file already mapped.
  void add_source(const std::string& path, std::unique_ptr<safetensors_file> mapped = nullptr) {
    const std::size_t s = sources_.size();
    source src{path, mapped ? file_format::safetensors : detect_format(path)};
    reader r;
    switch (src.format) {
      case file_format::safetensors:
        r.st = mapped ? std::move(mapped) : std::make_unique<safetensors_file>(path);
        for (const auto& t : r.st->tensors()) add_entry({t.name, t.type, t.shape, t.nbytes, s}, path);
        if (s == 0) metadata_ = r.st->metadata();
        break;
      case file_format::npy: {
        npy_array a = read_npy(path);
        const std::string name = "array";  // a .npy holds one unnamed array
        add_entry({name, a.type, a.shape, std::uint64_t(a.bytes.size()), s}, path);
        r.arrays.emplace(name, std::move(a));
        break;
      }
      case file_format::npz:
        r.arrays = read_npz(path);
        for (const auto& [name, a] : r.arrays)
          add_entry({name, a.type, a.shape, std::uint64_t(a.bytes.size()), s}, path);
        break;
    }
    sources_.push_back(std::move(src));
    readers_.push_back(std::move(r));
  }

  /// Adds a tensor of the source at `path`; names are unique within a snapshot.
  void add_entry(entry e, const std::string& path) {
    FEVO_EXPECTS(index_.emplace(e.name, entries_.size()).second, path, ": tensor '", e.name,
                 "' is also in another file of the snapshot");
    entries_.push_back(std::move(e));
  }

  std::string path_;
  bool sharded_ = false;
  std::vector<source> sources_;
  std::vector<reader> readers_;
  std::vector<entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A snapshot of a series (a file or a checkpoint directory) and its step.
struct series_item {
  std::string path;
  std::int64_t step;
};

/// The snapshots named by `paths`, each with its step (snapshot::step_of; fevo::error for one
/// without a step), sorted by step; two with the same step are refused, naming both. A directory
/// that holds checkpoint directories (checkpoint-100/, checkpoint-200/, as a Trainer saves them)
/// stands for those; else a checkpoint directory is one snapshot; else a directory stands for its
/// snapshot files (is_snapshot_name). fevo::error for a directory with none of these.
/// With `headers`, each snapshot's header (snapshot::read_header) is read instead of its step alone
/// and put in *headers in the order of the series: one read of each header where the caller needs
/// both (a safetensors header is parsed once instead of twice).
inline std::vector<series_item> make_series(const std::vector<std::string>& paths,
                                            std::vector<snapshot::header>* headers = nullptr) {
  std::vector<std::string> found_all;
  for (const auto& a : paths) {
    if (!detail::is_directory(a)) {
      found_all.push_back(a);
      continue;
    }
    std::vector<std::string> checkpoints, files;
    for (const auto& e : std::filesystem::directory_iterator(a)) {
      const std::string p = e.path().string();
      if (e.is_directory()) {
        if (checkpoint_kind_of(p) != checkpoint_kind::none) checkpoints.push_back(p);
      } else if (e.is_regular_file() && is_snapshot_name(e.path().filename().string())) {
        files.push_back(p);
      }
    }
    std::vector<std::string> found;
    if (!checkpoints.empty()) found = std::move(checkpoints);
    else if (checkpoint_kind_of(a) != checkpoint_kind::none) found = {a};
    else found = std::move(files);
    FEVO_EXPECTS(!found.empty(), a,
                 ": the directory holds no snapshot file (.safetensors, .npy, .npz) and no checkpoint directory "
                 "(one with ", shard_index_name, " or ", checkpoint_weights_name, ")");
    std::sort(found.begin(), found.end());
    found_all.insert(found_all.end(), found.begin(), found.end());
  }
  std::vector<series_item> out;
  std::vector<snapshot::header> found_headers;
  for (const auto& f : found_all) {
    std::optional<std::int64_t> step;
    if (headers) {
      found_headers.push_back(snapshot::read_header(f));
      step = found_headers.back().step;
    } else {
      step = snapshot::step_of(f);
    }
    FEVO_EXPECTS(step, f,
                 detail::is_directory(f)
                     ? ": cannot tell its training step: no trainer_state.json \"global_step\" and no number "
                       "ending its name"
                     : ": cannot tell its training step: no __metadata__ \"step\" and no number in its name");
    out.push_back({f, *step});
  }
  std::vector<std::size_t> order(out.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return out[a].step < out[b].step; });
  std::vector<series_item> sorted;
  for (std::size_t k : order) sorted.push_back(std::move(out[k]));
  for (std::size_t k = 1; k < sorted.size(); ++k)
    FEVO_EXPECTS(sorted[k].step != sorted[k - 1].step, sorted[k].path, ": step ", sorted[k].step,
                 " is also the step of ", sorted[k - 1].path);
  if (headers) {
    headers->clear();
    for (std::size_t k : order) headers->push_back(std::move(found_headers[k]));
  }
  return sorted;
}

}  // namespace fevo::io
