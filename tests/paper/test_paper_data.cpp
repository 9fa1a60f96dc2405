// The paper driver's data readers (no LibTorch): gzip IDX files, Fashion-MNIST, and an
// ImageFolder of PNG and JPEG files the test writes with stb_image_write.
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <stb/stb_image_write.h>

#include "../support.hpp"
#include "data.hpp"

namespace fs = std::filesystem;
using namespace fevo_paper;

namespace {

/// A fresh folder under the system's temporary directory, removed at the end of the test.
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() /
           ("fevo_paper_data_" + std::to_string(::getpid()) + "_" + std::to_string(fevo_test::seed() % 100000));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::vector<std::uint8_t> idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& dims,
                                    const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> b = {0, 0, type, std::uint8_t(dims.size())};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(d >> s));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const data_error& e) {
    return e.what();
  }
  return "(no error)";
}

/// A small Fashion-MNIST-shaped folder: n training and m test images of 28x28, image k filled with
/// the value k and labelled k % 10.
void write_fashion(const temp_dir& d, std::uint32_t n, std::uint32_t m) {
  auto images = [](std::uint32_t count) {
    std::vector<std::uint8_t> px(std::size_t(count) * 784);
    for (std::uint32_t k = 0; k < count; ++k) std::fill_n(px.begin() + std::ptrdiff_t(k) * 784, 784, std::uint8_t(k));
    return px;
  };
  auto labels = [](std::uint32_t count) {
    std::vector<std::uint8_t> l(count);
    for (std::uint32_t k = 0; k < count; ++k) l[k] = std::uint8_t(k % 10);
    return l;
  };
  write_gz(d / "train-images-idx3-ubyte.gz", idx_bytes(8, {n, 28, 28}, images(n)));
  write_gz(d / "train-labels-idx1-ubyte.gz", idx_bytes(8, {n}, labels(n)));
  write_gz(d / "t10k-images-idx3-ubyte.gz", idx_bytes(8, {m, 28, 28}, images(m)));
  write_gz(d / "t10k-labels-idx1-ubyte.gz", idx_bytes(8, {m}, labels(m)));
}

}  // namespace

TEST_CASE("read_idx reads gzip and plain IDX files and refuses malformed ones", "[paper][data]") {
  temp_dir d;
  write_gz(d / "ok.gz", idx_bytes(8, {2, 3}, {1, 2, 3, 4, 5, 6}));
  const idx_array a = read_idx(d / "ok.gz", 2);
  CHECK(a.dims == std::vector<std::uint32_t>{2, 3});
  CHECK(a.data == std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6});
  const auto plain = idx_bytes(8, {4}, {9, 8, 7, 6});
  write_raw(d / "plain.idx", std::string(plain.begin(), plain.end()));
  CHECK(read_idx(d / "plain.idx", 1).data == std::vector<std::uint8_t>{9, 8, 7, 6});

  write_gz(d / "short.gz", idx_bytes(8, {2, 3}, {1, 2, 3}));
  CHECK_THAT(error_of([&] { read_idx(d / "short.gz"); }),
             Catch::Contains("short.gz") && Catch::Contains("truncated file"));
  write_gz(d / "long.gz", idx_bytes(8, {1}, {1, 2}));
  CHECK_THAT(error_of([&] { read_idx(d / "long.gz"); }), Catch::Contains("trailing bytes"));
  write_gz(d / "rank.gz", idx_bytes(8, {1}, {1}));
  CHECK_THAT(error_of([&] { read_idx(d / "rank.gz", 3); }), Catch::Contains("rank is 1, expected 3"));
  write_gz(d / "type.gz", idx_bytes(0x0d, {1}, {1, 2, 3, 4}));
  CHECK_THAT(error_of([&] { read_idx(d / "type.gz"); }), Catch::Contains("not 0x08"));
  write_gz(d / "magic.gz", {1, 2, 8, 1, 0, 0, 0, 0});
  CHECK_THAT(error_of([&] { read_idx(d / "magic.gz"); }), Catch::Contains("not an IDX file"));
  write_gz(d / "tiny.gz", {0, 0});
  CHECK_THAT(error_of([&] { read_idx(d / "tiny.gz"); }), Catch::Contains("too short"));
  write_gz(d / "header.gz", {0, 0, 8, 3, 0, 0, 0, 1});
  CHECK_THAT(error_of([&] { read_idx(d / "header.gz"); }), Catch::Contains("truncated IDX header"));
  write_gz(d / "huge.gz", idx_bytes(8, {0xffffffffu, 0xffffffffu}, {}));
  CHECK_THAT(error_of([&] { read_idx(d / "huge.gz"); }), Catch::Contains("overflow"));
  // A gzip stream cut in the middle.
  {
    std::ifstream in(d / "ok.gz", std::ios::binary);
    std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_raw(d / "cut.gz", gz.substr(0, gz.size() / 2));
  }
  CHECK_THAT(error_of([&] { read_idx(d / "cut.gz"); }), Catch::Contains("cut.gz"));
  CHECK_THAT(error_of([&] { read_idx(d / "missing.gz"); }), Catch::Contains("missing.gz") && Catch::Contains("cannot open"));
}

TEST_CASE("Fashion-MNIST: padding to the input size, subsets, labels, missing files", "[paper][data]") {
  temp_dir d;
  write_fashion(d, 50, 20);
  const dataset s = load_fashion_mnist(d.path.string(), 32, 16, 5, 7);
  CHECK(s.classes() == 10);
  REQUIRE(s.train.count() == 16);
  REQUIRE(s.test.count() == 5);
  CHECK(s.train.channels == 1);
  CHECK(s.train.size == 32);
  // Test images are the first ones; image k is filled with k and padded with a 2-pixel zero border.
  for (std::size_t k = 0; k < 5; ++k) {
    const std::uint8_t* im = s.test.image(k);
    CHECK(s.test.labels[k] == std::int64_t(k % 10));
    CHECK(im[0] == 0);
    CHECK(im[2 * 32 + 2] == k);
    CHECK(im[29 * 32 + 29] == k);
    CHECK(im[30 * 32 + 30] == 0);
  }
  // Training images: a seeded choice; each image still matches its label.
  for (std::size_t k = 0; k < s.train.count(); ++k)
    CHECK(s.train.labels[k] == std::int64_t(s.train.image(k)[16 * 32 + 16] % 10));
  const dataset again = load_fashion_mnist(d.path.string(), 32, 16, 5, 7);
  CHECK(again.train.labels == s.train.labels);
  // Resized (not padded) to 64: a constant image stays constant.
  const dataset big = load_fashion_mnist(d.path.string(), 64, 3, 3, 7);
  CHECK(big.test.image(2)[0] == 2);
  CHECK(big.test.image(2)[64 * 64 - 1] == 2);

  fs::remove(d.path / "t10k-labels-idx1-ubyte.gz");
  CHECK_THAT(error_of([&] { load_fashion_mnist(d.path.string(), 32, 0, 0, 1); }),
             Catch::Contains("t10k-labels-idx1-ubyte.gz") && Catch::Contains("dataset-fashion-mnist"));
  write_gz(d / "t10k-labels-idx1-ubyte.gz", idx_bytes(8, {19}, std::vector<std::uint8_t>(19, 1)));
  CHECK_THAT(error_of([&] { load_fashion_mnist(d.path.string(), 32, 0, 0, 1); }),
             Catch::Contains("19 labels for 20 images"));
  write_gz(d / "t10k-labels-idx1-ubyte.gz", idx_bytes(8, {20}, std::vector<std::uint8_t>(20, 10)));
  CHECK_THAT(error_of([&] { load_fashion_mnist(d.path.string(), 32, 0, 0, 1); }),
             Catch::Contains("label 10"));
}

TEST_CASE("ImageFolder: PNG and JPEG classes, split, resize, bad files", "[paper][data]") {
  temp_dir d;
  const fs::path root = d.path / "images";
  // Three classes, each image one colour: class c is (80 * c, 255 - 80 * c, 40).
  const char* classes[3] = {"cat", "dog", "zebra"};
  for (int c = 0; c < 3; ++c) {
    fs::create_directories(root / classes[c]);
    for (int i = 0; i < 5; ++i) {
      const int w = 20 + 3 * i, h = 16 + i;
      std::vector<std::uint8_t> px(std::size_t(w * h * 3));
      for (std::size_t p = 0; p < px.size(); p += 3) {
        px[p] = std::uint8_t(80 * c);
        px[p + 1] = std::uint8_t(255 - 80 * c);
        px[p + 2] = 40;
      }
      const std::string base = (root / classes[c] / ("img" + std::to_string(i))).string();
      if (i % 2 == 0)
        REQUIRE(stbi_write_png((base + ".png").c_str(), w, h, 3, px.data(), w * 3));
      else
        REQUIRE(stbi_write_jpg((base + ".JPG").c_str(), w, h, 3, px.data(), 95));
    }
  }
  write_raw((root / "cat" / "notes.txt").string(), "not an image");
  fs::create_directories(root / "empty");

  const dataset s = load_image_folder(root.string(), 24, 0, 0, 3);
  CHECK(s.class_names == std::vector<std::string>{"cat", "dog", "zebra"});
  CHECK(s.train.count() == 12);  // 5 per class, one held out each
  CHECK(s.test.count() == 3);
  CHECK(s.train.channels == 3);
  for (const image_set* set : {&s.train, &s.test})
    for (std::size_t k = 0; k < set->count(); ++k) {
      const int c = int(set->labels[k]);
      const std::uint8_t* im = set->image(k);
      // Constant colours survive decoding (JPEG within a few levels) and bilinear resizing.
      CHECK(std::abs(int(im[0]) - 80 * c) <= 6);
      CHECK(std::abs(int(im[24 * 24 + 100]) - (255 - 80 * c)) <= 6);
      CHECK(std::abs(int(im[2 * 24 * 24 + 24 * 24 - 1]) - 40) <= 6);
    }
  const dataset capped = load_image_folder(root.string(), 24, 4, 2, 3);
  CHECK(capped.train.count() == 4);
  CHECK(capped.test.count() == 2);

  // train/ and val/ folders are used as they are.
  const fs::path split = d.path / "split";
  for (const char* part : {"train", "val"})
    for (int c = 0; c < 2; ++c) {
      fs::create_directories(split / part / classes[c]);
      fs::copy_file(root / classes[c] / "img0.png", split / part / classes[c] / "a.png");
    }
  const dataset sp = load_image_folder(split.string(), 16, 0, 0, 1);
  CHECK(sp.train.count() == 2);
  CHECK(sp.test.count() == 2);

  SECTION("a file that is not an image is refused with its name") {
    write_raw((root / "dog" / "broken.png").string(), "\x89PNG\r\n\x1a\n garbage");
    CHECK_THAT(error_of([&] { load_image_folder(root.string(), 24, 0, 0, 3); }), Catch::Contains("broken.png"));
  }
  SECTION("an image over the limits is refused before decoding") {
    image_limits lim;
    lim.max_side = 21;
    CHECK_THAT(error_of([&] { load_image_folder(root.string(), 24, 0, 0, 3, lim); }),
               Catch::Contains("over the limits") && Catch::Contains(".png"));
    image_limits bytes;
    bytes.max_file_bytes = 10;
    CHECK_THAT(error_of([&] { decode_image_file((root / "cat" / "img0.png").string(), bytes); }),
               Catch::Contains("img0.png") && Catch::Contains("over the limit"));
    CHECK_THAT(error_of([&] { decode_image_file((root / "cat" / "nothing.png").string()); }),
               Catch::Contains("nothing.png") && Catch::Contains("no such file"));
  }
  SECTION("a folder with fewer than two classes, or no folder") {
    CHECK_THAT(error_of([&] { load_image_folder((root / "cat").string(), 24, 0, 0, 3); }),
               Catch::Contains("at least 2 class folders"));
    CHECK_THAT(error_of([&] { load_image_folder((d.path / "nowhere").string(), 24, 0, 0, 3); }),
               Catch::Contains("nowhere") && Catch::Contains("not a folder"));
    write_raw((root / "empty" / "one.png").string(), "");
    CHECK_THAT(error_of([&] { load_image_folder(root.string(), 24, 0, 0, 3); }),
               Catch::Contains("empty") && Catch::Contains("at least 2 images"));
    write_raw((root / "empty" / "two.png").string(), "");
    CHECK_THAT(error_of([&] { load_image_folder(root.string(), 24, 0, 0, 3); }),
               Catch::Contains(".png: empty file"));
  }
}

TEST_CASE("bilinear resize: constant images stay constant, a 2x2 upscale interpolates", "[paper][data]") {
  const std::uint8_t src[4] = {0, 100, 100, 200};  // 2x2, one channel
  std::uint8_t out[16];
  resize_bilinear_to_chw(src, 2, 2, 1, 4, 4, out);
  CHECK(out[0] == 0);
  CHECK(out[15] == 200);
  CHECK(out[1] == 25);  // x = 0.25 between 0 and 100
  std::vector<std::uint8_t> c(7 * 5 * 3, 9), o(3 * 11 * 13);
  resize_bilinear_to_chw(c.data(), 7, 5, 3, 11, 13, o.data());
  CHECK(std::all_of(o.begin(), o.end(), [](std::uint8_t v) { return v == 9; }));
}
