// Fashion-MNIST (gzip IDX via zlib) and ImageFolder (stb_image) readers. See data.hpp.
#include "data.hpp"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

namespace fevo_paper {

namespace fs = std::filesystem;

namespace {

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw data_error(os.str());
}

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

/// The whole (decompressed) content of a gzip or plain file, at most `cap` bytes.
std::vector<std::uint8_t> read_gz(const std::string& path, std::uint64_t cap) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, ": cannot open: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail(path, ": cannot open: ", std::strerror(errno));
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string why = gzerror(f, &code);
      gzclose(f);
      fail(path, ": corrupt gzip data (", why, ")");
    }
    if (n == 0) break;
    if (out.size() + std::size_t(n) > cap) {
      gzclose(f);
      fail(path, ": more than ", cap, " bytes after decompression");
    }
    out.insert(out.end(), buf, buf + n);
  }
  gzclose(f);
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_name(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

/// Pads (centred, zeros) or resizes one 8-bit image (HWC) into `out` (C x size x size).
void fit_image(const std::uint8_t* hwc, int w, int h, int c, std::size_t size, bool allow_pad,
               std::uint8_t* out) {
  const int s = int(size);
  if (allow_pad && w == h && s >= w && s - w <= 8 && (s - w) % 2 == 0) {
    const int off = (s - w) / 2;
    std::fill(out, out + std::size_t(c) * size * size, std::uint8_t{0});
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          out[(std::size_t(ch) * size + std::size_t(y + off)) * size + std::size_t(x + off)] =
              hwc[(std::size_t(y) * std::size_t(w) + std::size_t(x)) * std::size_t(c) + std::size_t(ch)];
    return;
  }
  resize_bilinear_to_chw(hwc, w, h, c, s, s, out);
}

}  // namespace

idx_array read_idx(const std::string& path, std::size_t rank) {
  const std::vector<std::uint8_t> b = read_gz(path, idx_max_bytes);
  if (b.size() < 4) fail(path, ": too short for an IDX file (", b.size(), " bytes)");
  if (b[0] != 0 || b[1] != 0)
    fail(path, ": not an IDX file (the magic number's first two bytes are not zero)");
  if (b[2] != 0x08)
    fail(path, ": IDX element type 0x", std::hex, int(b[2]), std::dec, " is not 0x08 (unsigned byte)");
  const std::size_t r = b[3];
  if (r == 0) fail(path, ": IDX rank is 0");
  if (rank != 0 && r != rank) fail(path, ": IDX rank is ", r, ", expected ", rank);
  if (b.size() < 4 + 4 * r) fail(path, ": truncated IDX header");
  idx_array a;
  std::uint64_t n = 1;
  for (std::size_t k = 0; k < r; ++k) {
    const std::uint32_t d = be32(b.data() + 4 + 4 * k);
    a.dims.push_back(d);
    if (d != 0 && n > idx_max_bytes / d) fail(path, ": IDX dimensions overflow the size limit");
    n *= d;
  }
  const std::uint64_t have = b.size() - 4 - 4 * r;
  if (have != n)
    fail(path, ": IDX data holds ", have, " bytes, the dimensions need ", n,
         have < n ? " (truncated file)" : " (trailing bytes)");
  a.data.assign(b.begin() + std::ptrdiff_t(4 + 4 * r), b.end());
  return a;
}

void resize_bilinear_to_chw(const std::uint8_t* hwc, int w, int h, int c, int out_w, int out_h,
                            std::uint8_t* chw) {
  // Sample centres aligned (half-pixel convention, as OpenCV's INTER_LINEAR and PIL's bilinear).
  const double sx = double(w) / out_w, sy = double(h) / out_h;
  for (int y = 0; y < out_h; ++y) {
    double fy = (y + 0.5) * sy - 0.5;
    fy = std::clamp(fy, 0.0, double(h - 1));
    const int y0 = int(fy), y1 = std::min(y0 + 1, h - 1);
    const double ty = fy - y0;
    for (int x = 0; x < out_w; ++x) {
      double fx = (x + 0.5) * sx - 0.5;
      fx = std::clamp(fx, 0.0, double(w - 1));
      const int x0 = int(fx), x1 = std::min(x0 + 1, w - 1);
      const double tx = fx - x0;
      for (int ch = 0; ch < c; ++ch) {
        auto at = [&](int yy, int xx) {
          return double(hwc[(std::size_t(yy) * std::size_t(w) + std::size_t(xx)) * std::size_t(c) + std::size_t(ch)]);
        };
        const double v = (1 - ty) * ((1 - tx) * at(y0, x0) + tx * at(y0, x1)) +
                         ty * ((1 - tx) * at(y1, x0) + tx * at(y1, x1));
        chw[(std::size_t(ch) * std::size_t(out_h) + std::size_t(y)) * std::size_t(out_w) + std::size_t(x)] =
            std::uint8_t(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
}

dataset load_fashion_mnist(const std::string& dir, std::size_t size, std::size_t max_train,
                           std::size_t max_test, std::uint64_t seed) {
  static const char* const names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  for (const char* n : names) {
    const fs::path p = fs::path(dir) / n;
    std::error_code ec;
    if (!fs::exists(p, ec))
      fail("Fashion-MNIST not found: ", p.string(),
           " is missing (install the Debian package dataset-fashion-mnist: apt-get install dataset-fashion-mnist)");
  }
  if (size < 8) fail("fashion-mnist: input size ", size, " is too small");
  dataset d;
  d.name = "fashion-mnist";
  d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  auto load = [&](const char* img_name, const char* lab_name, std::size_t cap, bool shuffle, image_set& out) {
    const std::string ip = (fs::path(dir) / img_name).string(), lp = (fs::path(dir) / lab_name).string();
    const idx_array im = read_idx(ip, 3);
    const idx_array lb = read_idx(lp, 1);
    if (im.dims[1] != 28 || im.dims[2] != 28)
      fail(ip, ": images are ", im.dims[1], "x", im.dims[2], ", Fashion-MNIST's are 28x28");
    if (im.dims[0] != lb.dims[0])
      fail(lp, ": ", lb.dims[0], " labels for ", im.dims[0], " images in ", ip);
    if (im.dims[0] == 0) fail(ip, ": no image");
    std::vector<std::size_t> order(im.dims[0]);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (shuffle) {
      std::mt19937_64 rng(seed);
      std::shuffle(order.begin(), order.end(), rng);
    }
    const std::size_t n = cap == 0 ? order.size() : std::min(cap, order.size());
    out.channels = 1;
    out.size = size;
    out.pixels.assign(n * size * size, 0);
    out.labels.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = order[k];
      const std::uint8_t label = lb.data[i];
      if (label >= 10) fail(lp, ": label ", int(label), " of item ", i, " is not in [0, 10)");
      out.labels[k] = label;
      fit_image(im.data.data() + i * 784, 28, 28, 1, size, true, out.pixels.data() + k * size * size);
    }
  };
  load(names[0], names[1], max_train, true, d.train);
  load(names[2], names[3], max_test, false, d.test);
  return d;
}

rgb_image decode_image_file(const std::string& path, const image_limits& lim) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, ": cannot open: no such file");
  if (!fs::is_regular_file(st)) fail(path, ": not a regular file");
  const std::uintmax_t bytes = fs::file_size(path, ec);
  if (ec) fail(path, ": cannot read its size: ", ec.message());
  if (bytes == 0) fail(path, ": empty file");
  if (bytes > lim.max_file_bytes || bytes > std::uintmax_t(std::numeric_limits<int>::max()))
    fail(path, ": ", bytes, " bytes, over the limit of ", lim.max_file_bytes, " bytes for an image");
  std::vector<std::uint8_t> buf(bytes);
  {
    std::ifstream in(path, std::ios::binary);
    if (!in || !in.read(reinterpret_cast<char*>(buf.data()), std::streamsize(bytes)))
      fail(path, ": cannot read the file");
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(buf.data(), int(bytes), &w, &h, &comp))
    fail(path, ": not a PNG or JPEG image that can be decoded (", stbi_failure_reason(), ")");
  if (w <= 0 || h <= 0) fail(path, ": image has no pixels (", w, "x", h, ")");
  if (std::uint32_t(w) > lim.max_side || std::uint32_t(h) > lim.max_side ||
      std::uint64_t(w) * std::uint64_t(h) > lim.max_pixels)
    fail(path, ": image is ", w, "x", h, ", over the limits (", lim.max_side, " per side, ",
         lim.max_pixels, " pixels)");
  int dw = 0, dh = 0, dc = 0;
  std::uint8_t* px = stbi_load_from_memory(buf.data(), int(bytes), &dw, &dh, &dc, 3);
  if (!px) fail(path, ": cannot decode the image (", stbi_failure_reason(), ")");
  rgb_image out;
  out.width = dw;
  out.height = dh;
  if (dw != w || dh != h) {
    stbi_image_free(px);
    fail(path, ": decoded size ", dw, "x", dh, " differs from the header's ", w, "x", h);
  }
  out.hwc.assign(px, px + std::size_t(dw) * std::size_t(dh) * 3);
  stbi_image_free(px);
  return out;
}

namespace {

/// Class folders of `dir`: sorted names -> sorted image files.
std::map<std::string, std::vector<std::string>> scan_classes(const fs::path& dir) {
  std::map<std::string, std::vector<std::string>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    std::vector<std::string> files;
    std::error_code ec2;
    for (fs::directory_iterator f(it->path(), ec2), e2; !ec2 && f != e2; f.increment(ec2))
      if (f->is_regular_file(ec2) && is_image_name(f->path())) files.push_back(f->path().string());
    if (ec2) fail(it->path().string(), ": cannot list the folder: ", ec2.message());
    std::sort(files.begin(), files.end());
    out[it->path().filename().string()] = std::move(files);
  }
  if (ec) fail(dir.string(), ": cannot list the folder: ", ec.message());
  return out;
}

void decode_into(const std::vector<std::pair<std::string, std::int64_t>>& items, std::size_t size,
                 const image_limits& lim, image_set& out) {
  out.channels = 3;
  out.size = size;
  out.pixels.assign(items.size() * 3 * size * size, 0);
  out.labels.resize(items.size());
  for (std::size_t k = 0; k < items.size(); ++k) {
    const rgb_image im = decode_image_file(items[k].first, lim);
    fit_image(im.hwc.data(), im.width, im.height, 3, size, false, out.pixels.data() + k * 3 * size * size);
    out.labels[k] = items[k].second;
  }
}

}  // namespace

dataset load_image_folder(const std::string& dir, std::size_t size, std::size_t max_train,
                          std::size_t max_test, std::uint64_t seed, const image_limits& lim) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, ": not a folder (an ImageFolder is one folder per class)");
  if (size < 8) fail(dir, ": input size ", size, " is too small");
  const fs::path root(dir);
  fs::path test_dir;
  for (const char* n : {"val", "test"})
    if (fs::is_directory(root / n, ec)) { test_dir = root / n; break; }
  const bool split = fs::is_directory(root / "train", ec) && !test_dir.empty();
  std::map<std::string, std::vector<std::string>> train = scan_classes(split ? root / "train" : root);
  std::map<std::string, std::vector<std::string>> test;
  if (split) test = scan_classes(test_dir);
  // Empty folders are not classes.
  for (auto it = train.begin(); it != train.end();) it = it->second.empty() ? train.erase(it) : std::next(it);
  if (train.size() < 2)
    fail(dir, ": an ImageFolder needs at least 2 class folders holding .png/.jpg/.jpeg files, found ",
         train.size());
  dataset d;
  d.name = dir;
  std::map<std::string, std::int64_t> label;
  for (const auto& [name, files] : train) {
    label[name] = std::int64_t(d.class_names.size());
    d.class_names.push_back(name);
  }
  std::vector<std::pair<std::string, std::int64_t>> tr, te;
  std::mt19937_64 rng(seed);
  for (const auto& [name, files] : train) {
    std::vector<std::string> f = files;
    if (!split) {
      if (f.size() < 2) fail(root / name, ": a class needs at least 2 images (one is held out for testing)");
      std::shuffle(f.begin(), f.end(), rng);
      const std::size_t nt = std::max<std::size_t>(1, f.size() / 5);
      for (std::size_t k = 0; k < nt; ++k) te.emplace_back(f[k], label[name]);
      f.erase(f.begin(), f.begin() + std::ptrdiff_t(nt));
    }
    for (const auto& p : f) tr.emplace_back(p, label[name]);
  }
  if (split) {
    for (const auto& [name, files] : test) {
      const auto it = label.find(name);
      if (it == label.end()) {
        if (files.empty()) continue;
        fail((test_dir / name).string(), ": class folder has no match in ", (root / "train").string());
      }
      for (const auto& p : files) te.emplace_back(p, it->second);
    }
    if (te.empty()) fail(test_dir.string(), ": no test image");
  }
  std::shuffle(tr.begin(), tr.end(), rng);
  std::shuffle(te.begin(), te.end(), rng);
  if (max_train && tr.size() > max_train) tr.resize(max_train);
  if (max_test && te.size() > max_test) te.resize(max_test);
  decode_into(tr, size, lim, d.train);
  decode_into(te, size, lim, d.test);
  return d;
}

void write_png(const std::string& path, int w, int h, int channels, const std::uint8_t* hwc) {
  if (!stbi_write_png(path.c_str(), w, h, channels, hwc, w * channels))
    fail(path, ": cannot write the PNG file");
}

}  // namespace fevo_paper
