// Reading and writing safetensors files (https://github.com/huggingface/safetensors), the format
// PyTorch and Hugging Face users save weights in.
//
//   fevo::io::safetensors_file f("step_100.safetensors");       // mmap + full validation
//   for (const auto& t : f.tensors()) ...                         // name, dtype, shape, bytes
//   std::vector<float> scratch;
//   auto v = fevo::io::view_of<float>(f, f.at("conv1.weight"), fevo::io::layout::oihw, scratch);
//   // (at: fevo::error naming the file and its tensors when there is none; find: nullptr)
//
// Layout of a file: 8 bytes N (little-endian u64), N bytes of UTF-8 JSON (the header), then the
// data buffer. The header is an object mapping each tensor name to
// {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets relative to the data
// buffer), plus an optional "__metadata__" object of string values.
//
// Everything is validated before any tensor is touched, and every violation raises a fevo::error
// naming the file, the tensor (when there is one) and the problem:
// - N at most safetensors_max_header_size (100,000,000 bytes, the reference implementation's
//   limit) and at most the file size minus 8; the file is at least 8 bytes;
// - the header is valid UTF-8 and one JSON object; leading and trailing JSON whitespace is
//   accepted (writers pad the header with spaces to align the data);
// - no duplicate key anywhere (tensor names, keys of an entry, metadata keys): JSON libraries
//   silently keep one of them, so the header is parsed with a SAX handler that checks every key;
// - each entry has exactly the keys dtype, shape, data_offsets; dtype is a safetensors dtype
//   (F16 BF16 F32 F64 are analysed; BOOL U8 I8 I16 U16 I32 U32 I64 U64 F8_E5M2 F8_E4M3 F8_E8M0
//   C64 F4 F6_E2M3 F6_E3M2 are listed but refused by view_of; anything else is an error);
//   shape is an array of non-negative integers whose product times the dtype's size does not
//   overflow and equals end - begin; data_offsets is [begin, end] with begin <= end <= buffer size;
// - sorted by offset, the tensors tile the data buffer exactly: the first starts at 0, each starts
//   where the previous ended (no overlap, no gap), the last ends at the end of the file (no
//   trailing bytes);
// - "__metadata__", when present, is an object whose values are all strings.
//
// Data is mapped read-only (mmap) and handed out zero-copy; a tensor whose bytes are not aligned
// for its type (legal in the format) is copied into caller-provided scratch by view_of, never read
// through a misaligned pointer. Caveat of any mmap reader: if another process truncates the file
// while it is mapped, touching the lost pages raises SIGBUS; fevo does not defend against files
// modified while open.
#pragma once

#include "../config.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../error.hpp"
#include "../view.hpp"
#include "detail/safetensors_sax.hpp"
#include "pickle.hpp"
#include "atomic_write.hpp"
#include "dtype.hpp"

namespace fevo::io {

/// The largest header accepted, in bytes (the reference implementation's MAX_HEADER_SIZE).
inline constexpr std::uint64_t safetensors_max_header_size = 100000000;

/// One tensor of a safetensors file.
struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  std::uint64_t offset = 0;  ///< from the start of the data buffer (data_offsets[0])
  std::uint64_t nbytes = 0;  ///< data_offsets[1] - data_offsets[0]
  std::uint64_t elements() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;  // validated: cannot overflow
    return n;
  }
};

/// A parsed and validated header.
struct safetensors_header {
  std::vector<tensor_info> tensors;             ///< sorted by offset (the order of the data)
  std::map<std::string, std::string> metadata;  ///< "__metadata__", empty when absent
  std::uint64_t header_size = 0;                ///< N: the JSON text's length in bytes
  std::uint64_t data_start = 0;                 ///< 8 + N: where the data buffer begins in the file
  std::uint64_t data_size = 0;                  ///< bytes of the data buffer
};


/// Parses and validates a whole safetensors file held in memory (`n` bytes at `p`); `name` is used
/// in error messages. Throws fevo::error on any violation listed in the file comment.
inline safetensors_header parse_safetensors(const unsigned char* p, std::size_t n,
                                            const std::string& name) {
  using ::fevo::detail::fail;
  if (n < 8) {
    if (starts_like_pickle(p, n)) throw open_error_for_pickle(name);
    fail(name, ": file is ", n, " bytes, too short for a safetensors file (an 8-byte header "
         "length comes first)");
  }
  std::uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | p[i];
  // Not a plausible safetensors file (its header length does not fit): say what else it is, where
  // its first bytes tell. (A valid file's length may begin with the bytes of a pickle's opcode,
  // 0x80 0x02: only an implausible one is taken for something else.)
  const bool fits = hlen >= 2 && hlen <= safetensors_max_header_size && hlen <= n - 8;
  if (!fits) {
    if (starts_like_pickle(p, n)) throw open_error_for_pickle(name);
    if (p[0] == 'P' && p[1] == 'K' && p[2] == 3 && p[3] == 4)
      fail(name, ": is a zip archive (an .npz, or a PyTorch checkpoint), not a safetensors file");
  }
  if (hlen > safetensors_max_header_size)
    fail(name, ": header length ", hlen, " exceeds the limit of ", safetensors_max_header_size,
         " bytes (not a safetensors file, or a corrupt one)");
  if (hlen > n - 8)
    fail(name, ": truncated: the header needs ", hlen, " bytes, the file holds ", n - 8,
         " after its 8-byte length");
  if (hlen == 0) fail(name, ": header length is 0; the header must be a JSON object");

  const unsigned char* h = p + 8;
  const std::size_t bad = detail::utf8_invalid_at(h, std::size_t(hlen));
  if (bad != hlen)
    fail(name, ": header is not valid UTF-8 (byte ", bad, " of the header, value 0x", std::hex,
         unsigned(h[bad]), std::dec, ")");

  // A raw NUL can never be part of JSON text; nlohmann's lexer would take it for the end of the
  // input and ignore whatever follows, so it is refused here.
  const void* nul = std::memchr(h, 0, std::size_t(hlen));
  if (nul)
    fail(name, ": header contains a NUL byte (byte ", static_cast<const unsigned char*>(nul) - h,
         " of the header); it must be JSON text");

  detail::safetensors_sax sax;
  const bool ok = nlohmann::json::sax_parse(h, h + hlen, &sax, nlohmann::json::input_format_t::json,
                                            /*strict=*/true);
  if (!ok || !sax.error.empty()) {
    const std::string e = sax.error.empty() ? "header is not a valid safetensors header" : sax.error;
    fail(name, ": ", sax.error_tensor.empty() ? "" : "tensor '" + sax.error_tensor + "': ", e);
  }

  safetensors_header out;
  out.header_size = hlen;
  out.data_start = 8 + hlen;
  out.data_size = n - 8 - hlen;
  // A file cut short: its tensors reach past the end of the data buffer.
  std::uint64_t needed = 0;
  const std::string* last = nullptr;  // the tensor that ends last
  for (const auto& r : sax.tensors)
    if (r.offsets[1] >= needed) {
      needed = r.offsets[1];
      last = &r.name;
    }
  if (needed > out.data_size)
    fail(name, ": truncated: the header needs ", needed, " bytes of data, the file holds ", out.data_size,
         " (tensor '", *last, "' ends at byte ", needed, " of the data)");
  out.metadata = std::move(sax.metadata);
  out.tensors.reserve(sax.tensors.size());
  for (auto& r : sax.tensors) {
    const std::string at = detail::where(name, r.name);
    if (r.name.empty()) fail(name, ": a tensor has an empty name");
    tensor_info t;
    t.name = std::move(r.name);
    if (!dtype_from_name(r.dtype, t.type))
      fail(at, "unknown dtype '", r.dtype, "' (safetensors dtypes: F16 BF16 F32 F64 BOOL U8 I8 "
           "I16 U16 I32 U32 I64 U64 F8_E5M2 F8_E4M3 F8_E8M0 C64 F4 F6_E2M3 F6_E3M2)");
    t.shape = std::move(r.shape);
    std::uint64_t elements = 0, bytes = 0;
    if (!detail::shape_bytes(t.shape, t.type, elements, bytes)) {
      if (dtype_bits(t.type) % 8 != 0) {
        std::uint64_t e = 1;
        bool ovf = false;
        for (auto d : t.shape) ovf |= __builtin_mul_overflow(e, d, &e);
        if (!ovf && !__builtin_mul_overflow(e, std::uint64_t(dtype_bits(t.type)), &e))
          fail(at, "shape ", shape_string(t.shape), " of ", dtype_name(t.type), " (",
               dtype_bits(t.type), " bits each) does not fill whole bytes");
      }
      fail(at, "shape ", shape_string(t.shape), " overflows: its size in bytes (elements x ",
           dtype_name(t.type), ") does not fit in 64 bits");
    }
    const std::uint64_t begin = r.offsets[0], end = r.offsets[1];
    if (end < begin)
      fail(at, "data_offsets [", begin, ", ", end, "] end before they begin");
    if (end > out.data_size)
      fail(at, "data_offsets [", begin, ", ", end, "] are out of range: the data buffer holds ",
           out.data_size, " bytes");
    if (end - begin != bytes)
      fail(at, "data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but dtype ",
           dtype_name(t.type), " with shape ", shape_string(t.shape), " needs ", bytes, " bytes");
    t.offset = begin;
    t.nbytes = bytes;
    out.tensors.push_back(std::move(t));
  }

  // The tensors, in the order of their data, must tile [0, data_size) exactly.
  std::stable_sort(out.tensors.begin(), out.tensors.end(), [](const tensor_info& a, const tensor_info& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  std::uint64_t expect = 0;
  const tensor_info* prev = nullptr;
  for (const auto& t : out.tensors) {
    if (t.offset < expect)
      fail(detail::where(name, t.name), "data [", t.offset, ", ", t.offset + t.nbytes,
           ") overlaps tensor '", prev->name, "' at [", prev->offset, ", ", expect, ")");
    if (t.offset > expect)
      fail(detail::where(name, t.name), "gap: its data starts at ", t.offset, " but ",
           prev ? "tensor '" + prev->name + "' ends" : std::string("the data buffer starts"),
           " at ", expect, " (", t.offset - expect, " unused bytes)");
    expect = t.offset + t.nbytes;
    prev = &t;
  }
  if (expect != out.data_size)
    fail(name, ": ", out.data_size - expect, " trailing bytes after the last tensor's data (the "
         "data buffer holds ", out.data_size, " bytes, the tensors cover ", expect, ")");
  return out;
}

/// A safetensors file, memory-mapped read-only and fully validated by the constructor.
/// Move-only; the mapping lives as long as the object (and the views made from it).
class safetensors_file {
 public:
  /// Maps and validates `path`; throws fevo::error naming the file and the problem.
  explicit safetensors_file(const std::string& path) : path_(path) {
    using ::fevo::detail::fail;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open: ", detail::errno_text(errno));
    struct ::stat st;
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      fail(path, ": cannot stat: ", detail::errno_text(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (a directory)" : "");
    }
    const std::uint64_t size = std::uint64_t(st.st_size);
    if (size < 8) {  // too short to map usefully: parse_safetensors says what it is
      unsigned char head[8] = {};
      const ::ssize_t got = ::pread(fd, head, std::size_t(size), 0);
      ::close(fd);
      parse_safetensors(head, got > 0 ? std::size_t(got) : 0, path);
    }
    if (size > std::uint64_t(std::numeric_limits<std::size_t>::max())) {
      ::close(fd);
      fail(path, ": file of ", size, " bytes does not fit in the address space");
    }
    void* m = ::mmap(nullptr, std::size_t(size), PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (m == MAP_FAILED) fail(path, ": mmap of ", size, " bytes failed: ", detail::errno_text(e));
    map_ = m;
    map_len_ = std::size_t(size);
    base_ = static_cast<const unsigned char*>(m);
    size_ = map_len_;
    try {
      init();
    } catch (...) {
      release();
      throw;
    }
  }

  /// A file held in memory (not copied: `p` must outlive the object); `name` is used in messages.
  static safetensors_file from_memory(const void* p, std::size_t n, std::string name) {
    safetensors_file f;
    f.path_ = std::move(name);
    f.base_ = static_cast<const unsigned char*>(p);
    f.size_ = n;
    f.init();
    return f;
  }

  safetensors_file(safetensors_file&& o) noexcept { swap(o); }
  safetensors_file& operator=(safetensors_file&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file() { release(); }

  /// Every tensor, in the order of its data in the file.
  const std::vector<tensor_info>& tensors() const { return h_.tensors; }
  /// "__metadata__" (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return h_.metadata; }
  /// The tensor called `name`, or nullptr (see at()).
  const tensor_info* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &h_.tensors[it->second];
  }
  /// The tensor called `name`; fevo::error naming the file and listing (up to 20 of) the tensors
  /// it has when there is none.
  const tensor_info& at(const std::string& name) const {
    if (const tensor_info* t = find(name)) return *t;
    std::string have;
    const std::size_t shown = std::min<std::size_t>(h_.tensors.size(), 20);
    for (std::size_t k = 0; k < shown; ++k) have += (k ? ", '" : "'") + h_.tensors[k].name + "'";
    if (h_.tensors.size() > shown) have += ", ... (" + std::to_string(h_.tensors.size() - shown) + " more)";
    ::fevo::detail::fail(path_, ": tensor '", name, "' is missing; ",
                         h_.tensors.empty() ? std::string("the file holds no tensor")
                                            : "it has " + std::to_string(h_.tensors.size()) + " tensor" +
                                                  (h_.tensors.size() == 1 ? "" : "s") + ": " + have);
  }
  /// The first byte of a tensor's data; may be misaligned for its dtype (see view_of).
  const unsigned char* data(const tensor_info& t) const {
    FEVO_EXPECTS(t.offset <= h_.data_size && t.nbytes <= h_.data_size - t.offset, path_,
                 ": tensor '", t.name, "' is not a tensor of this file");
    return base_ + h_.data_start + t.offset;
  }
  const std::string& path() const { return path_; }
  const safetensors_header& header() const { return h_; }
  /// Size of the whole file in bytes.
  std::uint64_t size() const { return size_; }
  /// Asks the kernel to read a tensor's pages ahead (madvise WILLNEED); a hint, never an error.
  void prefetch(const tensor_info& t) const { advise(t, MADV_WILLNEED); }
  /// Drops a tensor's pages from this process's mapping (madvise DONTNEED), so that they no
  /// longer count as resident; pages it shares with a neighbour go too. Views of any tensor stay
  /// valid: touched again, the data is read back from the file (or the page cache). A hint,
  /// never an error.
  void evict(const tensor_info& t) const { advise(t, MADV_DONTNEED); }
  /// As evict(t), for the data bytes [begin, end) (offsets into the data section, as
  /// tensor_info::offset): one call for the neighbouring tensors of a layer chunk.
  void evict_data(std::uint64_t begin, std::uint64_t end) const {
    if (!map_ || begin >= end || begin >= h_.data_size) return;
    advise_range(base_ + h_.data_start + begin, std::min(end, h_.data_size) - begin, MADV_DONTNEED);
  }

 private:
  safetensors_file() = default;
  void init() {
    h_ = parse_safetensors(base_, size_, path_);
    index_.reserve(h_.tensors.size());
    for (std::size_t i = 0; i < h_.tensors.size(); ++i) index_.emplace(h_.tensors[i].name, i);
  }
  /// madvise over the whole pages that hold a tensor's data.
  void advise(const tensor_info& t, int advice) const {
    if (!map_ || t.nbytes == 0) return;
    advise_range(data(t), t.nbytes, advice);
  }
  void advise_range(const unsigned char* p, std::uint64_t nbytes, int advice) const {
    const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE));
    const std::uintptr_t b = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t a = b & ~std::uintptr_t(page - 1);
    ::madvise(reinterpret_cast<void*>(a), std::size_t(b - a + nbytes), advice);
  }
  void release() noexcept {
    if (map_) ::munmap(map_, map_len_);
    map_ = nullptr;
    map_len_ = 0;
  }
  void swap(safetensors_file& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(map_, o.map_);
    std::swap(map_len_, o.map_len_);
    std::swap(base_, o.base_);
    std::swap(size_, o.size_);
    std::swap(h_, o.h_);
    std::swap(index_, o.index_);
  }

  std::string path_;
  void* map_ = nullptr;
  std::size_t map_len_ = 0;
  const unsigned char* base_ = nullptr;
  std::size_t size_ = 0;
  safetensors_header h_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// A tensor of `f` as a fevo view of T (T must match the tensor's dtype: float for F32, double
/// for F64, fevo::half for F16, fevo::bfloat16 for BF16). Rank 4 is read as [O, I, H, W]
/// (layout::oihw) or [H, W, I, O] (layout::hwio). With allow_2d, a rank-2 tensor is read as
/// N x C x 1 x 1 filters: [out, in] under oihw (torch.nn.Linear), [in, out] under hwio (Keras
/// Dense). Zero-copy when the data is aligned for T; otherwise it is copied into `scratch`
/// (resized), which must then outlive the view. Throws fevo::error naming the file and tensor.
template <class T>
filter_view<const T> view_of(const safetensors_file& f, const tensor_info& t, layout lay,
                             std::vector<T>& scratch, bool allow_2d = false) {
  return detail::layer_view<T>(f.data(t), t.type, t.shape, t.nbytes, lay, scratch, allow_2d,
                               f.path(), t.name);
}

/// A tensor to write: `data` points to its elements, little-endian, C order.
struct named_tensor {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;
};

/// Writes a safetensors file atomically (see atomic_write). Tensors are stored sorted by element
/// size, largest first (the reference writer's order), keeping the given order among equal sizes,
/// and the header is padded with spaces to a multiple of 8 bytes, so every tensor's data is
/// aligned for its type and reads back zero-copy. Names must be unique, non-empty, valid UTF-8 and
/// not "__metadata__"; metadata keys and values must be valid UTF-8.
inline void write_safetensors(const std::string& path, const std::vector<named_tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  using ::fevo::detail::fail;
  using json = nlohmann::json;
  const auto quote = [&](const std::string& s, const std::string& what) {
    try {
      return json(s).dump(-1, ' ', false, json::error_handler_t::strict);
    } catch (const json::exception&) {
      fail(path, ": ", what, " is not valid UTF-8");
    }
  };

  std::vector<std::size_t> order(tensors.size());
  std::vector<std::uint64_t> nbytes(tensors.size());
  std::unordered_set<std::string> names;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const named_tensor& t = tensors[i];
    order[i] = i;
    if (t.name.empty()) fail(path, ": cannot write a tensor with an empty name");
    if (t.name == "__metadata__") fail(path, ": '__metadata__' cannot be a tensor name");
    if (!names.insert(t.name).second)
      fail(detail::where(path, t.name), "the name appears more than once");
    std::uint64_t elements = 0;
    if (!detail::shape_bytes(t.shape, t.type, elements, nbytes[i]))
      fail(detail::where(path, t.name), "shape ", shape_string(t.shape), " of ",
           dtype_name(t.type), " overflows or does not fill whole bytes");
    if (nbytes[i] > 0 && t.data == nullptr)
      fail(detail::where(path, t.name), "data is a null pointer");
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return dtype_bits(tensors[a].type) > dtype_bits(tensors[b].type);
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      header += quote(k, "metadata key");
      header += ':';
      header += quote(v, "metadata value of '" + k + "'");
    }
    header += '}';
  }
  std::uint64_t offset = 0;
  for (std::size_t i : order) {
    const named_tensor& t = tensors[i];
    if (header.size() > 1) header += ',';
    header += quote(t.name, "a tensor name");
    header += ":{\"dtype\":\"";
    header += dtype_name(t.type);
    header += "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d) header += ',';
      header += std::to_string(t.shape[d]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + ",";
    if (__builtin_add_overflow(offset, nbytes[i], &offset))
      fail(path, ": total size of the tensors overflows");
    header += std::to_string(offset) + "]}";
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > safetensors_max_header_size)
    fail(path, ": header of ", header.size(), " bytes exceeds the safetensors limit of ",
         safetensors_max_header_size);

  atomic_write(path, [&](std::FILE* f) {
    unsigned char len[8];
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<unsigned char>(n & 0xff);
    write_bytes(f, len, 8, path);
    write_bytes(f, header.data(), header.size(), path);
    for (std::size_t i : order) write_bytes(f, tensors[i].data, std::size_t(nbytes[i]), path);
  });
}

}  // namespace fevo::io
