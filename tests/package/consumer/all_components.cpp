// Every host component of fevo from one translation unit, as a user's project would include them:
// the core and fevo::seq, fevo::cpu, fevo::thrust (on Thrust's OpenMP device system), the io
// readers and writers, the recorder and the Eigen and xtensor adapters. Each is called once and
// its result checked; exit status 0 when all agree.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "third_party.hpp"  // first: the dependencies' headers, as system headers

#include <fevo/cpu.hpp>
#include <fevo/eigen.hpp>
#include <fevo/fevo.hpp>
#include <fevo/io/npy.hpp>
#include <fevo/io/npz.hpp>
#include <fevo/io/safetensors.hpp>
#include <fevo/record/recorder.hpp>
#include <fevo/thrust.hpp>
#include <fevo/xtensor.hpp>

#include "check.hpp"

int main(int argc, char** argv) {
  using namespace consumer;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRATCH_DIR (emptied first)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto pa = fevo::oihw(a.data(), 2, 1, 1, 2), pb = fevo::oihw(b.data(), 2, 1, 1, 2);
    check(expected(fevo::compute(fevo::seq, pa, pb, tau)), "fevo::seq");
    check(expected(fevo::compute(fevo::cpu::par, pa, pb, tau)), "fevo::cpu::par");
    check(expected(fevo::compute(fevo::thrust::par, pa, pb, tau)), "fevo::thrust::par (OpenMP device system)");

    Eigen::Tensor<float, 4, Eigen::RowMajor> ea(2, 1, 1, 2), eb(2, 1, 1, 2);
    std::copy(a.begin(), a.end(), ea.data());
    std::copy(b.begin(), b.end(), eb.data());
    check(expected(fevo::compute(fevo::seq, fevo::from_eigen(ea), fevo::from_eigen(eb), tau)), "fevo::from_eigen");

    xt::xarray<float> xa = xt::zeros<float>({2, 1, 1, 2}), xb = xa;
    std::copy(b.begin(), b.end(), xb.begin());
    check(expected(fevo::compute(fevo::seq, fevo::from_xtensor(xa), fevo::from_xtensor(xb), tau)),
          "fevo::from_xtensor");

    const std::vector<std::uint64_t> shape{2, 1, 1, 2};
    fevo::io::write_npy(dir + "/b.npy", fevo::io::dtype::f32, shape, b.data());
    const fevo::io::npy_array back = fevo::io::read_npy(dir + "/b.npy");
    std::vector<float> nb;
    const auto vnb = fevo::io::view_of<float>(back, fevo::io::layout::oihw, nb);
    check(back.shape == shape && expected(fevo::compute(fevo::seq, pa, vnb, tau)), "fevo::io npy round trip");

    fevo::io::write_safetensors(dir + "/ab.safetensors", {{"a", fevo::io::dtype::f32, shape, a.data()},
                                                          {"b", fevo::io::dtype::f32, shape, b.data()}});
    const fevo::io::safetensors_file f(dir + "/ab.safetensors");
    std::vector<float> sa, sb;
    const auto va = fevo::io::view_of<float>(f, *f.find("a"), fevo::io::layout::oihw, sa);
    const auto vb = fevo::io::view_of<float>(f, *f.find("b"), fevo::io::layout::oihw, sb);
    check(expected(fevo::compute(fevo::cpu::par, va, vb, tau)), "fevo::io safetensors round trip");

    bool refused = false;
    try {
      fevo::io::npz_archive z(dir + "/b.npy");  // not a zip archive
    } catch (const fevo::error&) {
      refused = true;
    }
    check(refused, "fevo::io npz refuses a file that is not an archive");

    std::vector<float> live = a;
    fevo::record::recorder_options o;
    o.out_dir = dir + "/run";
    o.tau = tau;
    fevo::record::recorder<float> rec(o);
    rec.add_layer("conv", fevo::oihw(static_cast<const float*>(live.data()), 2, 1, 1, 2));
    rec.start(0);
    live = b;
    const std::vector<fevo::layer_metrics> ms = rec.record(1);
    rec.close();
    check(ms.size() == 1 && expected(ms[0]), "fevo::record::recorder");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
