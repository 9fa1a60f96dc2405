// The paper driver's data: Fashion-MNIST from its gzip IDX files, and an ImageFolder (one folder
// per class, JPEG/PNG) for an ImageNet subset as in the paper. Plain C++ (zlib, stb_image): no
// LibTorch, so it is tested under the sanitizers too.
//
// Every image is held as 8-bit pixels, channels x size x size (C order), already resized or
// padded to the model's input size; the trainer scales them to [-1, 1].
// Every problem with a file is a data_error naming the file and what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "errors.hpp"

namespace fevo_paper {

/// Bad input data (missing, malformed, too large): the message names the file.
class data_error : public input_error {
 public:
  using input_error::input_error;
};

/// A set of labelled images of one size.
struct image_set {
  std::size_t channels = 0, size = 0;      ///< every image is channels x size x size
  std::vector<std::uint8_t> pixels;        ///< count() images, C order
  std::vector<std::int64_t> labels;        ///< in [0, classes)
  std::size_t count() const { return labels.size(); }
  std::size_t image_bytes() const { return channels * size * size; }
  const std::uint8_t* image(std::size_t i) const { return pixels.data() + i * image_bytes(); }
};

/// Training and test images, and the class names (index = label).
struct dataset {
  std::string name;                     ///< "fashion-mnist" or the folder
  std::vector<std::string> class_names;
  image_set train, test;
  std::size_t classes() const { return class_names.size(); }
};

/// An IDX array (the MNIST file format): element type 0x08 (unsigned byte) only.
struct idx_array {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> data;
};

/// Largest uncompressed IDX file read (Fashion-MNIST's largest is 47 MB).
inline constexpr std::uint64_t idx_max_bytes = std::uint64_t{1} << 30;

/// Reads a gzip-compressed (or plain) IDX file of unsigned bytes, checking the magic, the rank
/// (`rank`, 0 = any) and that the data is exactly the product of the dimensions.
idx_array read_idx(const std::string& path, std::size_t rank = 0);

/// The Debian package's folder.
inline const char* fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST (28 x 28, one channel, 10 classes), each image zero-padded (centred) to `size`
/// when 28 < size <= 36, else resized bilinearly. At most `max_train` / `max_test` images
/// (0 = all), a seeded random choice of the training set and the first test images.
dataset load_fashion_mnist(const std::string& dir, std::size_t size, std::size_t max_train,
                           std::size_t max_test, std::uint64_t seed);

/// Decoding limits for ImageFolder files: checked from the file's header before decoding.
struct image_limits {
  std::uint64_t max_file_bytes = std::uint64_t{256} << 20;
  std::uint32_t max_side = 16384;
  std::uint64_t max_pixels = std::uint64_t{64} << 20;
};

/// An image decoded to 8-bit RGB, pixels in height x width x 3 order.
struct rgb_image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> hwc;  ///< height x width x 3
};

/// Decodes a JPEG or PNG file to RGB, refusing files over the limits before decoding them.
rgb_image decode_image_file(const std::string& path, const image_limits& lim = {});

/// An ImageFolder: DIR/<class>/<image>.{png,jpg,jpeg} (case-insensitive extensions; other files
/// are ignored). With DIR/train and DIR/val (or DIR/test) holding such class folders, those are the
/// two sets; otherwise a seeded 20% of each class (at least one image) is the test set. Classes
/// are the sorted folder names. Images are resized bilinearly to size x size, RGB.
dataset load_image_folder(const std::string& dir, std::size_t size, std::size_t max_train,
                          std::size_t max_test, std::uint64_t seed, const image_limits& lim = {});

/// Bilinear resize of an 8-bit image (HWC, `c` channels) to out_w x out_h, written CHW.
void resize_bilinear_to_chw(const std::uint8_t* hwc, int w, int h, int c, int out_w, int out_h,
                            std::uint8_t* chw);

/// Writes an 8-bit PNG (1 = gray or 3 = RGB channels, HWC); throws data_error naming the file.
void write_png(const std::string& path, int w, int h, int channels, const std::uint8_t* hwc);

}  // namespace fevo_paper
