// fevo::io alone: an .npy and a .safetensors file written and read back, and an .npz archive
// opened (libzip: the link fails where the package does not bring it). Usage: consumer SCRATCH_DIR
// (emptied first).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <fevo/fevo.hpp>
#include <fevo/io/npy.hpp>
#include <fevo/io/npz.hpp>
#include <fevo/io/safetensors.hpp>

#include "check.hpp"

int main(int argc, char** argv) {
  using namespace consumer;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto pa = fevo::oihw(a.data(), 2, 1, 1, 2);
    const std::vector<std::uint64_t> shape{2, 1, 1, 2};

    fevo::io::write_npy(dir + "/b.npy", fevo::io::dtype::f32, shape, b.data());
    const fevo::io::npy_array back = fevo::io::read_npy(dir + "/b.npy");
    std::vector<float> nb;
    const auto vnb = fevo::io::view_of<float>(back, fevo::io::layout::oihw, nb);
    check(back.shape == shape && expected(fevo::compute(fevo::seq, pa, vnb, tau)), "npy round trip");

    fevo::io::write_safetensors(dir + "/ab.safetensors", {{"a", fevo::io::dtype::f32, shape, a.data()},
                                                          {"b", fevo::io::dtype::f32, shape, b.data()}});
    const fevo::io::safetensors_file f(dir + "/ab.safetensors");
    std::vector<float> sa, sb;
    const auto va = fevo::io::view_of<float>(f, *f.find("a"), fevo::io::layout::oihw, sa);
    const auto vb = fevo::io::view_of<float>(f, *f.find("b"), fevo::io::layout::oihw, sb);
    check(expected(fevo::compute(fevo::seq, va, vb, tau)), "safetensors round trip");

    std::string why;
    try {
      fevo::io::npz_archive z(dir + "/b.npy");  // an .npy, not a zip archive: libzip says so
    } catch (const fevo::error& e) {
      why = e.what();
    }
    check(why.find("not a valid .npz (zip) archive") != std::string::npos, "npz refuses a file that is not an archive");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
