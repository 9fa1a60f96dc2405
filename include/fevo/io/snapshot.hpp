// fevo::io::snapshot: the weights of a network at one training step, as named tensors, and
// fevo::io::make_series: the snapshot files of a run in the order of their steps.
//
//   fevo::io::snapshot s("ckpt/step_1000.safetensors");   // or a .npy, or a .npz
//   for (const auto& t : s.entries()) ...                   // name, type, shape, nbytes
//   std::vector<float> scratch;
//   auto w = s.view<float>("conv1.weight", fevo::io::layout::oihw, scratch);
//   s.at("conv.weight");   // fevo::error: the file, the name, and the tensors the file has
//
//   for (const auto& item : fevo::io::make_series({"ckpt/"}))   // directories are expanded
//     fevo::io::snapshot s(item.path);                            // item.step: its step
//
// Formats: the format is detected from the file's bytes (detect_format, format.hpp), which refuses
// Python pickles (PyTorch checkpoints) with a message that says how to convert them.
//   safetensors  memory-mapped: views point into the mapping (zero-copy, in either layout; a
//                tensor whose data is misaligned for its type is copied to the scratch buffer),
//                and evict() drops a tensor's pages once it is done with;
//   .npy         one tensor, named "array", loaded;
//   .npz         one tensor per member, named by the member (without ".npy"), loaded.
// Every reader validates the whole file (see safetensors.hpp, npy.hpp, npz.hpp).
//
// Steps: a snapshot's step is its safetensors __metadata__ "step" (a decimal integer) when it has
// one, else the number that ends the last word of its file name (step_from_name:
// "ckpt-1200.safetensors" and "epoch3-step1200.npz" are 1200, "no4d.npy" has none), else it has none. make_series gives every file its step that way, sorts by
// step and refuses two files with the same step, naming both.
//
// Sources: a snapshot reads its tensors from a list of sources (files), and each tensor records
// the source that holds it. Every format here is one file, so one source; a checkpoint sharded
// over several files would be one snapshot over several sources.
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
#include <unordered_map>
#include <vector>

#include "../error.hpp"
#include "../view.hpp"
#include "format.hpp"
#include "npy.hpp"
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
inline std::optional<std::int64_t> step_from_name(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  const std::size_t dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) base.resize(dot);
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

  /// Opens a snapshot file: detects its format (refusing pickles) and reads its tensor list (a
  /// safetensors file is mapped; .npy and .npz are loaded). fevo::error naming the file when it
  /// cannot be read or is not valid.
  explicit snapshot(const std::string& path) : path_(path) { add_source(path); }

  snapshot(snapshot&&) noexcept = default;
  snapshot& operator=(snapshot&&) noexcept = default;

  /// The path the snapshot was opened from.
  const std::string& path() const { return path_; }
  /// The format of its file.
  file_format format() const { return sources_.front().format; }
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
    if (const entry* e = find(name))
      if (const auto& st = readers_[e->source].st)
        if (const tensor_info* t = st->find(name)) st->evict(*t);
  }
  /// A safetensors file's __metadata__ (empty for .npy and .npz).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The snapshot's step: __metadata__ "step", else the number in the file's name, else none.
  /// fevo::error when __metadata__ "step" is not an integer.
  std::optional<std::int64_t> step() const { return step_of(path_, metadata_); }

  /// The step of the snapshot file at `path` (see step()), reading no more than a safetensors
  /// header; detects the format first, so a pickle, a missing or an unknown file is refused.
  static std::optional<std::int64_t> step_of(const std::string& path) {
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
  /// The tensors of one source: a mapped safetensors file, or loaded arrays.
  struct reader {
    std::unique_ptr<safetensors_file> st;
    std::map<std::string, npy_array> arrays;
  };
  static constexpr std::size_t max_listed = 20;

  static std::optional<std::int64_t> step_of(const std::string& path,
                                             const std::map<std::string, std::string>& metadata) {
    const auto it = metadata.find("step");
    if (it != metadata.end()) return parse_step(it->second, path + ": __metadata__");
    return step_from_name(path);
  }

  void add_source(const std::string& path) {
    const std::size_t s = sources_.size();
    source src{path, detect_format(path)};
    reader r;
    switch (src.format) {
      case file_format::safetensors:
        r.st = std::make_unique<safetensors_file>(path);
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
  std::vector<source> sources_;
  std::vector<reader> readers_;
  std::vector<entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A file of a series and its step.
struct series_item {
  std::string path;
  std::int64_t step;
};

/// The snapshot files named by `paths`, each directory expanded to its snapshot files
/// (is_snapshot_name, sorted by name; fevo::error for a directory without one), each file with
/// its step (snapshot::step_of; fevo::error for a file without one), sorted by step (files with
/// equal steps would keep their order, but two files with the same step are refused, naming both).
inline std::vector<series_item> make_series(const std::vector<std::string>& paths) {
  const auto is_directory = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  std::vector<std::string> files;
  for (const auto& a : paths) {
    if (is_directory(a)) {
      std::vector<std::string> found;
      for (const auto& e : std::filesystem::directory_iterator(a))
        if (e.is_regular_file() && is_snapshot_name(e.path().filename().string()))
          found.push_back(e.path().string());
      FEVO_EXPECTS(!found.empty(), a, ": the directory holds no snapshot file (.safetensors, .npy, .npz)");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(a);
    }
  }
  std::vector<series_item> out;
  for (const auto& f : files) {
    const std::optional<std::int64_t> step = snapshot::step_of(f);
    FEVO_EXPECTS(step, f, ": cannot tell its training step: no __metadata__ \"step\" and no number in its name");
    out.push_back({f, *step});
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  for (std::size_t k = 1; k < out.size(); ++k)
    FEVO_EXPECTS(out[k].step != out[k - 1].step, out[k].path, ": step ", out[k].step, " is also the step of ",
                 out[k - 1].path);
  return out;
}

}  // namespace fevo::io
