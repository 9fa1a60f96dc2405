// The device recorder (<fevo/record/cuda.cuh>) against the host recorder on the same weights:
// same metrics (D within 1e-12 relative: the device sums in another order; the counts exactly),
// same rows, summaries and reopening. Without a usable GPU the executable exits with 77, which
// ctest reports as skipped.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <fevo/record/cuda.cuh>

#include "../runner.hpp"
#include "record_support.hpp"

namespace {

using namespace fevo_record_test;

template <class T>
struct device_buffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit device_buffer(std::size_t count) : n(count) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)) == cudaSuccess);
  }
  ~device_buffer() { cudaFree(p); }
  void upload(const std::vector<T>& h) {
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
};

bool close_rel(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::fabs(a - b) <= 1e-12 * std::fabs(b) + 1e-300;
}

template <class T>
void compare_with_host() {
  INFO("type " << fevo::element_traits<T>::name << " seed " << fevo_test::seed());
  temp_dir dh("cuda-host"), dd("cuda-dev");
  std::vector<T> a(6 * 4 * 3 * 3), b(3 * 3 * 5 * 8), c(5 * 7 * 2 * 2);
  device_buffer<T> da(a.size()), db(b.size()), dc(c.size());
  const std::vector<fevo::filter_view<T>> host{fevo::oihw(a.data(), 6, 4, 3, 3), fevo::hwio(b.data(), 3, 3, 5, 8),
                                               fevo::oihw(c.data(), 5, 7, 2, 2).channel_slice(1, 4)};
  const std::vector<fevo::basic_filter_view<const T, fevo::device_space>> dev{
      fevo::oihw<fevo::device_space>(static_cast<const T*>(da.p), 6, 4, 3, 3),
      fevo::hwio<fevo::device_space>(static_cast<const T*>(db.p), 3, 3, 5, 8),
      fevo::oihw<fevo::device_space>(static_cast<const T*>(dc.p), 5, 7, 2, 2).channel_slice(1, 4)};
  const char* names[] = {"conv1", "features/conv,\"2\"", "fc.weight"};
  auto fill = [&](std::int64_t step) {
    for (unsigned k = 0; k < 3; ++k) synth_fill(host[k], fevo_test::seed(), k, step);
    da.upload(a);
    db.upload(b);
    dc.upload(c);
  };
  fevo::record::recorder_options o;
  o.tau = synth_tau;
  o.tensorboard = true;
  o.per_filter_series = true;
  auto oh = o, od = o;
  oh.out_dir = dh.path();
  od.out_dir = dd.path();
  {
    fevo::record::recorder<T> rh(oh);
    fevo::record::cuda_recorder<T> rd(od, fevo::cuda::par);
    for (unsigned k = 0; k < 3; ++k) {
      rh.add_layer(names[k], host[k]);
      rd.add_layer(names[k], dev[k]);
    }
    fill(0);
    rh.start(0);
    rd.start(0);
    CHECK(rd.copy_bytes() == rh.copy_bytes());
    for (std::int64_t s = 1; s <= 6; ++s) {
      fill(s);
      const auto mh = rh.record(s);
      const auto md = rd.record(s);
      REQUIRE(md.size() == 3);
      for (unsigned k = 0; k < 3; ++k) {
        INFO("step " << s << " layer " << names[k]);
        CHECK(close_rel(md[k].D, mh[k].D));
        CHECK(md[k].S == mh[k].S);
        CHECK(md[k].Z == mh[k].Z);
        CHECK(md[k].nonfinite == mh[k].nonfinite);
        const auto& ph = rh.last_filters()[k];
        const auto& pd = rd.last_filters()[k];
        REQUIRE(pd.size() == ph.size());
        CHECK(pd.changed == ph.changed);
        CHECK(pd.zero_channels == ph.zero_channels);
        for (std::size_t i = 0; i < ph.size(); ++i) CHECK(close_rel(pd.D[i], ph.D[i]));
      }
    }
    rh.close();
    rd.close();
  }
  const auto rows_h = parse_csv(slurp(dh / "metrics.csv")), rows_d = parse_csv(slurp(dd / "metrics.csv"));
  REQUIRE(rows_d.size() == rows_h.size());
  for (std::size_t r = 0; r < rows_h.size(); ++r) {
    CHECK(rows_d[r][0] == rows_h[r][0]);
    CHECK(rows_d[r][1] == rows_h[r][1]);
    CHECK(rows_d[r][2] == rows_h[r][2]);
    CHECK(rows_d[r][4] == rows_h[r][4]);  // S
    CHECK(rows_d[r][5] == rows_h[r][5]);  // Z
  }
  const auto sum_h = parse_csv(slurp(dh / "filter_summary.csv")), sum_d = parse_csv(slurp(dd / "filter_summary.csv"));
  REQUIRE(sum_d.size() == sum_h.size());
  for (std::size_t r = 1; r < sum_h.size(); ++r) {
    CHECK(close_rel(to_double(sum_d[r][3]), to_double(sum_h[r][3])));
    CHECK(sum_d[r][6] == sum_h[r][6]);
    CHECK(sum_d[r][7] == sum_h[r][7]);
  }
  CHECK(read_npy(dd / "series/steps.npy").data == read_npy(dh / "series/steps.npy").data);

  // Reopening: replayed steps are skipped, the run continues.
  {
    fevo::record::cuda_recorder<T> rd(od);
    for (unsigned k = 0; k < 3; ++k) rd.add_layer(names[k], dev[k]);
    fill(4);
    rd.start(4);
    CHECK(*rd.last_recorded_step() == 6);
    fill(5);
    CHECK(rd.record(5).empty());
    fill(6);
    CHECK(rd.record(6).empty());
    fill(7);
    CHECK(rd.record(7).size() == 3);
  }
  CHECK(parse_csv(slurp(dd / "metrics.csv")).size() == 1 + 7 * 3);
}

}  // namespace

TEST_CASE("cuda recorder: the same metrics and files as the host recorder", "[record][cuda]") {
  compare_with_host<float>();
  compare_with_host<double>();
  compare_with_host<fevo::half>();
  compare_with_host<fevo::bfloat16>();
}

TEST_CASE("cuda recorder: host memory in a device view is refused with fevo::error", "[record][cuda]") {
  temp_dir d;
  std::vector<float> h(2 * 3 * 3 * 3, 1.f);
  fevo::record::recorder_options o;
  o.out_dir = d.path();
  o.tau = 0.1;
  fevo::record::cuda_recorder<float> rd(o);
  rd.add_layer("a", fevo::oihw<fevo::device_space>(static_cast<const float*>(h.data()), 2, 3, 3, 3));
  CHECK_THROWS_AS(rd.start(0), fevo::error);
}

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no usable CUDA device (%s): skipped\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  return fevo_test::run(argc, argv);
}
