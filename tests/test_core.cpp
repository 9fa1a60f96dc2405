// The core without a backend: the 16-bit element types, views, the checks of bad calls, and the
// accumulator's merge / finalize.
#include "support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace fevo_test;
using Catch::Contains;

namespace {

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- independent models of the two 16-bit formats ----------------------------------------------

/// Value of a binary16 bit pattern, decoded with ldexp: (-1)^s * m * 2^(e-25) for normals
/// (m with its implicit 1024), m * 2^-24 for subnormals.
double half_value(std::uint16_t b) {
  const int e = (b >> 10) & 31, m = b & 1023;
  const double s = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::nan("") : s * std::numeric_limits<double>::infinity();
  if (e == 0) return s * std::ldexp(double(m), -24);
  return s * std::ldexp(double(1024 + m), e - 25);
}
/// Value of a bfloat16 bit pattern: 8 exponent bits (bias 127), 7 mantissa bits.
double bf16_value(std::uint16_t b) {
  const int e = (b >> 7) & 255, m = b & 127;
  const double s = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m ? std::nan("") : s * std::numeric_limits<double>::infinity();
  if (e == 0) return s * std::ldexp(double(m), -133);
  return s * std::ldexp(double(128 + m), e - 134);
}

/// Round-to-nearest-even into a 16-bit format, by search: `table[k]` is the value of the
/// non-negative bit pattern k for k = 0 .. inf_bits, increasing with k, with the infinity's entry
/// replaced by where the next binade would start (IEEE: values at or beyond the midpoint between
/// the largest finite value and that point round to infinity).
struct rounding_model {
  std::vector<double> table;
  std::uint16_t inf_bits;

  std::uint16_t round(float f) const {
    const std::uint16_t sign = (bits_of(f) & 0x80000000u) ? 0x8000 : 0;
    const double x = std::fabs(double(f));
    if (std::isinf(x)) return sign | inf_bits;
    const auto hi = std::lower_bound(table.begin(), table.end(), x);  // first >= x
    if (hi == table.end()) return sign | inf_bits;
    std::size_t k = std::size_t(hi - table.begin());
    if (*hi != x) {  // between table[k - 1] and table[k]
      const double below = x - table[k - 1], above = table[k] - x;
      if (below < above || (below == above && (k - 1) % 2 == 0)) k -= 1;
    }
    return std::uint16_t(sign | k);
  }
};
rounding_model half_model() {
  rounding_model m{{}, 0x7c00};
  for (std::uint16_t b = 0; b < 0x7c00; ++b) m.table.push_back(half_value(b));
  m.table.push_back(65536.0);  // 2^16
  return m;
}
rounding_model bf16_model() {
  rounding_model m{{}, 0x7f80};
  for (std::uint16_t b = 0; b < 0x7f80; ++b) m.table.push_back(bf16_value(b));
  m.table.push_back(std::ldexp(1.0, 128));
  return m;
}

bool is_half_nan(std::uint16_t b) { return (b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0; }
bool is_bf16_nan(std::uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

/// Floats worth converting: every midpoint between neighbouring 16-bit values and the floats
/// next to it (the ties and just past them), and random bit patterns of every exponent.
std::vector<float> probe_floats(const rounding_model& m, rng& g, std::size_t n_random) {
  std::vector<float> out;
  for (std::size_t k = 0; k + 1 < m.table.size(); ++k) {
    const float mid = float((m.table[k] + m.table[k + 1]) / 2);  // exact: fewer than 24 bits
    out.push_back(mid);
    out.push_back(std::nextafter(mid, 0.0f));
    out.push_back(std::nextafter(mid, std::numeric_limits<float>::infinity()));
    out.push_back(float(m.table[k]));
  }
  for (std::size_t k = 0; k < n_random; ++k) out.push_back(float_of(std::uint32_t(g.bits())));
  const std::size_t n = out.size();
  for (std::size_t k = 0; k < n; ++k) out.push_back(-out[k]);
  return out;
}

}  // namespace

// ---- element types -----------------------------------------------------------------------------

TEST_CASE("half: every bit pattern converts to its exact value and back", "[element][half]") {
  long long bad_value = -1, bad_round_trip = -1;
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const fevo::half h{std::uint16_t(b)};
    const float f = h.to_float();
    const double want = half_value(std::uint16_t(b));
    const bool value_ok = std::isnan(want) ? std::isnan(f) : (double(f) == want &&
                                                              std::signbit(f) == bool(b & 0x8000));
    if (!value_ok && bad_value < 0) bad_value = b;
    const std::uint16_t back = fevo::half::from_float(f).bits;
    const bool trip_ok = is_half_nan(std::uint16_t(b))
                             ? is_half_nan(back) && (back & 0x8000) == (b & 0x8000)
                             : back == b;
    if (!trip_ok && bad_round_trip < 0) bad_round_trip = b;
  }
  INFO("first bad to_float at bits " << bad_value << ", first bad round trip at bits " << bad_round_trip);
  CHECK(bad_value == -1);
  CHECK(bad_round_trip == -1);
}

TEST_CASE("half::from_float rounds to nearest, ties to even", "[element][half]") {
  using fevo::half;
  // Hand-picked: (value, bits).
  const struct {
    float f;
    std::uint16_t bits;
  } cases[] = {
      {1.0f, 0x3c00},
      {1.0f + 0x1p-11f, 0x3c00},                // tie between 1 and 1 + 2^-10: to even (1)
      {1.0f + 3 * 0x1p-11f, 0x3c02},            // tie between 1 + 2^-10 and 1 + 2^-9: to even
      {1.0f + 0x1p-11f + 0x1p-23f, 0x3c01},     // just above the tie
      {65504.0f, 0x7bff},                       // largest finite
      {65519.996f, 0x7bff},                     // below the midpoint to 2^16
      {65520.0f, 0x7c00},                       // the midpoint: ties to even, which is infinity
      {1e10f, 0x7c00},
      {0x1p-24f, 0x0001},                       // smallest subnormal
      {0x1p-25f, 0x0000},                       // tie between 0 and 2^-24: to even (0)
      {0x1.8p-25f, 0x0001},                     // 0.75 * 2^-24: up
      {3 * 0x1p-25f, 0x0002},                   // 1.5 * 2^-24: tie, to even (2)
      {0x1p-14f - 0x1p-25f, 0x0400},            // between the largest subnormal and 2^-14: tie, even
      {0x1p-14f, 0x0400},                       // smallest normal
      {1e-30f, 0x0000},
      {-1e-30f, 0x8000},                        // the sign survives underflow
      {std::numeric_limits<float>::denorm_min(), 0x0000},
      {-2.0f, 0xc000},
      {std::numeric_limits<float>::infinity(), 0x7c00},
      {-std::numeric_limits<float>::infinity(), 0xfc00},
  };
  for (const auto& c : cases) {
    INFO("from_float(" << c.f << ")");
    CHECK(half::from_float(c.f).bits == c.bits);
  }
  CHECK(is_half_nan(half::from_float(std::nanf("")).bits));
  CHECK(is_half_nan(half::from_float(-std::nanf("")).bits));

  // Every tie and its neighbours, and random floats, against the search model.
  rng g = rng_for("half rounding");
  INFO("seed=" << seed());
  const rounding_model model = half_model();
  const auto probes = probe_floats(model, g, sanitized ? 20000 : 2000000);
  long long bad = -1;
  for (std::size_t k = 0; k < probes.size() && bad < 0; ++k) {
    const float f = probes[k];
    const std::uint16_t got = half::from_float(f).bits;
    if (std::isnan(f) ? !is_half_nan(got) : got != model.round(f)) bad = (long long)k;
  }
  std::ostringstream why;
  if (bad >= 0)
    why << std::hexfloat << "from_float(" << probes[std::size_t(bad)] << ") = 0x" << std::hex
        << half::from_float(probes[std::size_t(bad)]).bits << ", expected 0x" << model.round(probes[std::size_t(bad)]);
  INFO(why.str());
  CHECK(bad == -1);
}

#if defined(__FLT16_MAX__)
// g++ >= 12 and clang have the IEEE binary16 type _Float16 on x86-64 and AArch64; its conversion
// from float is correctly rounded, so it is a second, independent reference.
TEST_CASE("half::from_float and to_float agree with the compiler's _Float16", "[element][half]") {
  rng g = rng_for("half vs _Float16");
  INFO("seed=" << seed());
  const auto probes = probe_floats(half_model(), g, sanitized ? 20000 : 2000000);
  long long bad = -1;
  for (std::size_t k = 0; k < probes.size() && bad < 0; ++k) {
    const float f = probes[k];
    const _Float16 h = static_cast<_Float16>(f);
    std::uint16_t hb;
    std::memcpy(&hb, &h, 2);
    const std::uint16_t got = fevo::half::from_float(f).bits;
    if (std::isnan(f) ? !is_half_nan(got) : got != hb) bad = (long long)k;
  }
  INFO("first disagreement at probe " << bad);
  CHECK(bad == -1);
  long long bad_widen = -1;
  for (std::uint32_t b = 0; b < 0x10000 && bad_widen < 0; ++b) {
    _Float16 h;
    const std::uint16_t hb = std::uint16_t(b);
    std::memcpy(&h, &hb, 2);
    const float want = static_cast<float>(h), got = fevo::half{hb}.to_float();
    if (std::isnan(want) ? !std::isnan(got) : bits_of(got) != bits_of(want)) bad_widen = b;
  }
  INFO("first to_float disagreement at bits " << bad_widen);
  CHECK(bad_widen == -1);
}
#else
// No _Float16 in this compiler: the search model above is the only rounding reference.
#endif

TEST_CASE("bfloat16: every bit pattern converts to its exact value and back", "[element][bfloat16]") {
  long long bad_value = -1, bad_round_trip = -1;
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const fevo::bfloat16 h{std::uint16_t(b)};
    const float f = h.to_float();
    const double want = bf16_value(std::uint16_t(b));
    const bool value_ok = std::isnan(want) ? std::isnan(f) : (double(f) == want &&
                                                              std::signbit(f) == bool(b & 0x8000));
    if (!value_ok && bad_value < 0) bad_value = b;
    const std::uint16_t back = fevo::bfloat16::from_float(f).bits;
    const bool trip_ok = is_bf16_nan(std::uint16_t(b))
                             ? is_bf16_nan(back) && (back & 0x8000) == (b & 0x8000)
                             : back == b;
    if (!trip_ok && bad_round_trip < 0) bad_round_trip = b;
  }
  INFO("first bad to_float at bits " << bad_value << ", first bad round trip at bits " << bad_round_trip);
  CHECK(bad_value == -1);
  CHECK(bad_round_trip == -1);
}

TEST_CASE("bfloat16::from_float rounds to nearest, ties to even", "[element][bfloat16]") {
  using fevo::bfloat16;
  const float fmax = std::numeric_limits<float>::max();
  const struct {
    float f;
    std::uint16_t bits;
  } cases[] = {
      {1.0f, 0x3f80},
      {1.0f + 0x1p-8f, 0x3f80},              // tie between 1 and 1 + 2^-7: to even (1)
      {1.0f + 3 * 0x1p-8f, 0x3f82},          // tie between 1 + 2^-7 and 1 + 2^-6: to even
      {1.0f + 0x1p-8f + 0x1p-23f, 0x3f81},   // just above the tie
      {1.0f + 0x1p-8f - 0x1p-23f, 0x3f80},   // just below
      {fmax, 0x7f80},                        // above the midpoint to 2^128: infinity
      {0x1.fep127f, 0x7f7f},                 // the largest finite bfloat16
      {0x1p-133f, 0x0001},                   // smallest subnormal (a float subnormal too)
      {0x1p-134f, 0x0000},                   // tie between 0 and it: to even
      {-0x1p-134f, 0x8000},
      {-2.0f, 0xc000},
      {std::numeric_limits<float>::infinity(), 0x7f80},
      {-std::numeric_limits<float>::infinity(), 0xff80},
  };
  for (const auto& c : cases) {
    INFO("from_float(" << c.f << ")");
    CHECK(bfloat16::from_float(c.f).bits == c.bits);
  }
  CHECK(is_bf16_nan(bfloat16::from_float(std::nanf("")).bits));
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  CHECK(is_bf16_nan(bfloat16::from_float(float_of(0x7f800001u)).bits));
  CHECK(is_bf16_nan(bfloat16::from_float(float_of(0xff800001u)).bits));

  rng g = rng_for("bfloat16 rounding");
  INFO("seed=" << seed());
  const rounding_model model = bf16_model();
  const auto probes = probe_floats(model, g, sanitized ? 20000 : 2000000);
  long long bad = -1;
  for (std::size_t k = 0; k < probes.size() && bad < 0; ++k) {
    const float f = probes[k];
    const std::uint16_t got = bfloat16::from_float(f).bits;
    if (std::isnan(f) ? !is_bf16_nan(got) : got != model.round(f)) bad = (long long)k;
  }
  std::ostringstream why;
  if (bad >= 0)
    why << std::hexfloat << "from_float(" << probes[std::size_t(bad)] << ") = 0x" << std::hex
        << bfloat16::from_float(probes[std::size_t(bad)]).bits << ", expected 0x"
        << model.round(probes[std::size_t(bad)]);
  INFO(why.str());
  CHECK(bad == -1);
}

TEST_CASE("element traits: compute types and loads", "[element]") {
  STATIC_REQUIRE(std::is_same_v<fevo::compute_t<float>, float>);
  STATIC_REQUIRE(std::is_same_v<fevo::compute_t<double>, double>);
  STATIC_REQUIRE(std::is_same_v<fevo::compute_t<fevo::half>, float>);
  STATIC_REQUIRE(std::is_same_v<fevo::compute_t<const fevo::bfloat16>, float>);
  STATIC_REQUIRE(fevo::is_element<float>::value);
  STATIC_REQUIRE(fevo::is_element<const fevo::half>::value);
  STATIC_REQUIRE(!fevo::is_element<int>::value);
  STATIC_REQUIRE(!fevo::is_element<long double>::value);
  CHECK(fevo::load(fevo::half{0x3c00}) == 1.0f);
  CHECK(fevo::load(fevo::bfloat16{0xc000}) == -2.0f);
  CHECK(fevo::load(2.5) == 2.5);
}

// ---- views ---------------------------------------------------------------------------------------

namespace {
/// Checks that v(i, c, h, w) is the element at offset(i, c, h, w) written by hand.
template <class T, class F>
bool addresses_match(const fevo::filter_view<T>& v, const T* base, F&& offset) {
  bool ok = true;
  for_each_index(v, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
    ok = ok && (&v(i, c, h, w) == base + offset(i, c, h, w));
  });
  return ok;
}
}  // namespace

TEST_CASE("views: extents, strides and offsets of every layout", "[view]") {
  std::vector<float> mem(4000);
  const float* base = mem.data();
  const std::size_t O = 5, I = 3, H = 4, W = 6;

  SECTION("oihw") {
    const auto v = fevo::oihw(mem.data(), O, I, H, W);
    CHECK(v.extents() == std::array<std::size_t, 4>{O, I, H, W});
    CHECK(v.strides() == std::array<std::size_t, 4>{I * H * W, H * W, W, 1});
    CHECK(v.data_handle() == base);
    CHECK(v.size() == O * I * H * W);
    CHECK(v.filter_size() == I * H * W);
    CHECK(v.required_span_size() == O * I * H * W);
    CHECK(v.is_exhaustive());
    CHECK(v.rank() == 4);
    CHECK(addresses_match(v, mem.data(), [&](auto i, auto c, auto h, auto w) {
      return ((i * I + c) * H + h) * W + w;
    }));
  }
  SECTION("hwio") {
    const auto v = fevo::hwio(mem.data(), H, W, I, O);
    CHECK(v.extents() == std::array<std::size_t, 4>{O, I, H, W});
    CHECK(v.strides() == std::array<std::size_t, 4>{1, O, W * I * O, I * O});
    CHECK(v.required_span_size() == O * I * H * W);
    CHECK(v.is_exhaustive());
    CHECK(addresses_match(v, mem.data(), [&](auto i, auto c, auto h, auto w) {
      return ((h * W + w) * I + c) * O + i;
    }));
  }
  SECTION("ohwi") {
    const auto v = fevo::ohwi(mem.data(), O, H, W, I);
    CHECK(v.extents() == std::array<std::size_t, 4>{O, I, H, W});
    CHECK(v.strides() == std::array<std::size_t, 4>{H * W * I, 1, W * I, I});
    CHECK(v.required_span_size() == O * I * H * W);
    CHECK(v.is_exhaustive());
    CHECK(addresses_match(v, mem.data(), [&](auto i, auto c, auto h, auto w) {
      return ((i * H + h) * W + w) * I + c;
    }));
  }
  SECTION("strided with padded rows, channels and filters") {
    // rows of 6 in 8, channels of 4 rows in 35, filters of 3 channels in 110
    const auto v = fevo::strided(mem.data(), {O, I, H, W}, {110, 35, 8, 1});
    CHECK(v.strides() == std::array<std::size_t, 4>{110, 35, 8, 1});
    CHECK(v.size() == O * I * H * W);
    // 1 + 4*110 + 2*35 + 3*8 + 5*1
    CHECK(v.required_span_size() == 1 + 440 + 70 + 24 + 5);
    CHECK_FALSE(v.is_exhaustive());
    CHECK(addresses_match(v, mem.data(), [&](auto i, auto c, auto h, auto w) {
      return i * 110 + c * 35 + h * 8 + w;
    }));
  }
  SECTION("strided, the other axis orders are exhaustive too (IOHW)") {
    const auto v = fevo::strided(mem.data(), {O, I, H, W}, {H * W, O * H * W, W, 1});
    CHECK(v.is_exhaustive());
    CHECK(v.required_span_size() == O * I * H * W);
  }
  SECTION("axes of extent 1 may have any stride") {
    const auto v = fevo::strided(mem.data(), {1, 1, 1, 5}, {999, 7, 3, 1});
    CHECK(v.required_span_size() == 5);
    CHECK(v.is_exhaustive());
    const auto z = fevo::strided(mem.data(), {1, 1, 1, 5}, {0, 0, 0, 0});  // one element, 5 times
    CHECK(z.required_span_size() == 1);
    CHECK_FALSE(z.is_exhaustive());
    const auto gaps = fevo::strided(mem.data(), {1, 1, 1, 5}, {0, 0, 0, 2});
    CHECK(gaps.required_span_size() == 9);
    CHECK_FALSE(gaps.is_exhaustive());
  }
  SECTION("filter_slice and channel_slice") {
    const auto v = fevo::oihw(mem.data(), O, I, H, W);
    const auto f = v.filter_slice(1, 3);
    CHECK(f.extents() == std::array<std::size_t, 4>{3, I, H, W});
    CHECK(f.strides() == v.strides());
    CHECK(f.data_handle() == base + I * H * W);
    CHECK(f.required_span_size() == 3 * I * H * W);
    CHECK(f.is_exhaustive());  // whole filters of a contiguous layer are contiguous
    CHECK(&f(0, 0, 0, 0) == &v(1, 0, 0, 0));
    CHECK(&f(2, 2, 3, 5) == &v(3, 2, 3, 5));

    const auto c = v.channel_slice(1, 2);
    CHECK(c.extents() == std::array<std::size_t, 4>{O, 2, H, W});
    CHECK(c.data_handle() == base + H * W);
    CHECK_FALSE(c.is_exhaustive());
    CHECK(c.required_span_size() == (O - 1) * I * H * W + 2 * H * W);
    CHECK(&c(4, 1, 3, 5) == &v(4, 2, 3, 5));

    const auto both = fevo::hwio(mem.data(), H, W, I, O).channel_slice(2, 1).filter_slice(3, 2);
    CHECK(both.extents() == std::array<std::size_t, 4>{2, 1, H, W});
    CHECK(both.data_handle() == base + 2 * O + 3);
    CHECK(&both(1, 0, 3, 5) == base + ((3 * W + 5) * I + 2) * O + 4);

    CHECK(v.filter_slice(0, O).is_exhaustive());
    CHECK(v.channel_slice(0, I).is_exhaustive());
    CHECK(v.filter_slice(O, 0).size() == 0);
    CHECK(v.filter_slice(O, 0).required_span_size() == 0);
    CHECK(v.filter_slice(O, 0).is_exhaustive());
  }
  SECTION("a view of const elements from a mutable one") {
    const fevo::filter_view<float> m = fevo::oihw(mem.data(), O, I, H, W);
    const fevo::filter_view<const float> c = m;
    CHECK(c.data_handle() == base);
    CHECK(c.extents() == m.extents());
    CHECK(c.strides() == m.strides());
    STATIC_REQUIRE(std::is_convertible_v<fevo::filter_view<float>, fevo::filter_view<const float>>);
    STATIC_REQUIRE(!std::is_convertible_v<fevo::filter_view<const float>, fevo::filter_view<float>>);
  }
  SECTION("extents and strides of any integer type") {
    const unsigned short e = 2;
    const auto v = fevo::strided(mem.data(), {e, 3u, std::size_t{1}, 4LL}, {12, 4, 4, 1});
    CHECK(v.extents() == std::array<std::size_t, 4>{2, 3, 1, 4});
  }
}

TEST_CASE("layer_info: a layer's name and extents, from a view", "[view]") {
  std::vector<float> mem(5 * 3 * 2 * 4);
  const fevo::layer_info a = fevo::layer_info_of("conv1.weight", fevo::oihw(mem.data(), 5, 3, 2, 4));
  CHECK(a.name == "conv1.weight");
  CHECK(a.extents == std::array<std::size_t, 4>{5, 3, 2, 4});
  CHECK(a.filters() == 5);
  CHECK(a.channels() == 3);
  CHECK(a.filter_size() == 3 * 2 * 4);
  // The extents are the view's (filter, channel, row, col) whatever its layout.
  const fevo::layer_info h = fevo::layer_info_of("k", fevo::hwio(mem.data(), 2, 4, 3, 5));
  CHECK(h.extents == std::array<std::size_t, 4>{5, 3, 2, 4});
  const fevo::layer_info b{"fc", {10, 16, 1, 1}};
  CHECK(b.filter_size() == 16);
}

TEST_CASE("views: bad extents, strides and slices throw fevo::error", "[view][error]") {
  float x[16] = {};
  const long long big = 1LL << 40;
  CHECK_THROWS_AS(fevo::strided(x, {-1, 1, 1, 1}, {1, 1, 1, 1}), fevo::error);
  CHECK_THROWS_WITH(fevo::strided(x, {-1, 1, 1, 1}, {1, 1, 1, 1}),
                    Contains("extent(0)") && Contains("negative"));
  CHECK_THROWS_WITH(fevo::strided(x, {1, 1, 2, 1}, {1, 1, -3, 1}),
                    Contains("stride(2)") && Contains("negative") && Contains("-3"));
  CHECK_THROWS_WITH(fevo::strided(x, {1, 1, 1, 2}, {1, 1, 1, -1}), Contains("stride(3)"));
  // unsigned values past LLONG_MAX
  CHECK_THROWS_WITH(fevo::strided(x, {std::size_t(-1), 1, 1, 1}, {1, 1, 1, 1}),
                    Contains("extent(0)") && Contains("too large"));
  CHECK_THROWS_WITH(fevo::strided(x, {1, 1, 1, 2}, {1, 1, 1, std::uint64_t(1) << 63}),
                    Contains("stride(3)"));
  // N*C*H*W = 2^80 overflows the index type
  CHECK_THROWS_WITH(fevo::strided(x, {big, big, 1, 1}, {1, 1, 1, 1}), Contains("overflow"));
  // (N-1) * stride overflows
  CHECK_THROWS_WITH(fevo::strided(x, {big, 1, 1, 1}, {big, 1, 1, 1}), Contains("overflow"));
  // addressable elements, but more bytes than the address space: 2^62 floats = 2^64 bytes
  CHECK_THROWS_WITH(fevo::strided(x, {2, 1, 1, 1}, {1LL << 62, 1, 1, 1}), Contains("bytes"));
  // packed layouts multiply extents for their strides
  CHECK_THROWS_WITH(fevo::oihw(x, 2, big, big, 1), Contains("overflow"));
  CHECK_THROWS_WITH(fevo::hwio(x, 1, 1, -2, 1), Contains("negative"));
  CHECK_THROWS_AS(fevo::ohwi(x, big, big, big, 2), fevo::error);
  // slices outside the view
  const auto v = fevo::oihw(x, 4, 2, 1, 2);
  CHECK_THROWS_WITH(v.filter_slice(3, 2), Contains("filter_slice [3, 5)") && Contains("4 filters"));
  CHECK_THROWS_WITH(v.filter_slice(5, 0), Contains("filter_slice"));
  CHECK_THROWS_WITH(v.channel_slice(1, 2), Contains("channel_slice [1, 3)") && Contains("2 channels"));
  CHECK_THROWS_AS(v.channel_slice(std::size_t(-1), 2), fevo::error);  // first + count wraps
  CHECK_NOTHROW(v.filter_slice(4, 0));
  CHECK_NOTHROW(v.channel_slice(0, 2));
}

// ---- bad calls -----------------------------------------------------------------------------------

TEST_CASE("bad calls throw fevo::error naming the problem", "[error]") {
  std::vector<float> a(2 * 3 * 3 * 4, 1.0f), b(2 * 3 * 3 * 4, 2.0f);
  const auto p = fevo::oihw(a.data(), 2, 3, 3, 3);
  const auto n = fevo::oihw(b.data(), 2, 3, 3, 3);
  const auto policy = fevo::seq;

  SECTION("fevo::error is a std::invalid_argument") {
    STATIC_REQUIRE(std::is_base_of_v<std::invalid_argument, fevo::error>);
    CHECK_THROWS_AS(fevo::compute(policy, p, fevo::oihw(b.data(), 2, 3, 3, 4), 0.1), std::invalid_argument);
  }
  SECTION("shape mismatch names both extents") {
    const auto wide = fevo::oihw(b.data(), 2, 3, 3, 4);
    CHECK_THROWS_WITH(fevo::compute(policy, p, wide, 0.1),
                      Contains("shape mismatch") && Contains("{2, 3, 3, 3}") && Contains("{2, 3, 3, 4}"));
    fevo::filter_results per;
    CHECK_THROWS_WITH(fevo::compute(policy, wide, p, 0.1, per), Contains("{2, 3, 3, 4}") && Contains("{2, 3, 3, 3}"));
    CHECK_THROWS_WITH(fevo::compute_partial(policy, p, fevo::oihw(b.data(), 1, 3, 3, 3), 0.1),
                      Contains("{1, 3, 3, 3}"));
    CHECK_THROWS_WITH(fevo::D(policy, p, fevo::hwio(b.data(), 3, 3, 2, 3)), Contains("{3, 2, 3, 3}"));
  }
  SECTION("zero extent") {
    const auto empty_p = fevo::oihw(a.data(), 2, 0, 3, 3), empty_n = fevo::oihw(b.data(), 2, 0, 3, 3);
    CHECK_THROWS_WITH(fevo::compute(policy, empty_p, empty_n, 0.1),
                      Contains("extent(1) is zero") && Contains("{2, 0, 3, 3}"));
    CHECK_THROWS_WITH(fevo::compute(policy, p.filter_slice(2, 0), n.filter_slice(2, 0), 0.1),
                      Contains("extent(0) is zero"));
    CHECK_THROWS_WITH(fevo::S(policy, fevo::oihw(a.data(), 1, 1, 1, 0), fevo::oihw(b.data(), 1, 1, 1, 0), 0.1),
                      Contains("extent(3) is zero"));
  }
  SECTION("an empty shard is merge's identity, not an error") {
    float* none = nullptr;
    const fevo::partial whole = fevo::compute_partial(policy, p, n, 0.1);
    for (const auto& [ep, en] : {std::pair{p.filter_slice(2, 0), n.filter_slice(2, 0)},
                                 std::pair{p.channel_slice(1, 0), n.channel_slice(1, 0)},
                                 std::pair{fevo::oihw(none, 0, 3, 3, 3), fevo::oihw(none, 0, 3, 3, 3)}}) {
      INFO("extents " << fevo::detail::shape_of(ep));
      const fevo::partial e = fevo::compute_partial(policy, ep, en, 0.1);
      CHECK(e.sum_sq == 0);
      CHECK(e.changed == 0);
      CHECK(e.weights == 0);
      CHECK(e.zero_channels == 0);
      CHECK(e.channels == 0);
      CHECK(e.nonfinite == 0);
      fevo::partial merged = whole;
      fevo::merge(merged, e);
      CHECK(std::memcmp(&merged, &whole, sizeof merged) == 0);
      // its shapes must still agree, and tau still be valid
      CHECK_THROWS_WITH(fevo::compute_partial(policy, ep, fevo::oihw(none, 0, 3, 3, 4), 0.1),
                        Contains("shape mismatch"));
      CHECK_THROWS_WITH(fevo::compute_partial(policy, ep, en, -1.0), Contains("tau must be finite"));
    }
    // compute (a whole layer) still refuses a zero extent: its metrics divide by N and C H W
    CHECK_THROWS_WITH(fevo::compute(policy, p.filter_slice(2, 0), n.filter_slice(2, 0), 0.1),
                      Contains("extent(0) is zero"));
  }
  SECTION("null pointers") {
    const float* none = nullptr;
    CHECK_THROWS_WITH(fevo::compute(policy, fevo::oihw(none, 2, 3, 3, 3), n, 0.1), Contains("prev is a null pointer"));
    CHECK_THROWS_WITH(fevo::compute(policy, p, fevo::oihw(none, 2, 3, 3, 3), 0.1), Contains("next is a null pointer"));
  }
  SECTION("bad tau") {
    const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(fevo::compute(policy, p, n, -0.5), Contains("tau must be finite and non-negative") && Contains("-0.5"));
    CHECK_THROWS_WITH(fevo::compute(policy, p, n, nan), Contains("tau must be finite and non-negative"));
    CHECK_THROWS_WITH(fevo::compute(policy, p, n, inf), Contains("tau must be finite and non-negative"));
    CHECK_THROWS_WITH(fevo::compute(policy, p, n, -inf), Contains("tau must be finite and non-negative"));
    CHECK_THROWS_WITH(fevo::S(policy, p, n, -1.0), Contains("tau"));
    CHECK_THROWS_WITH(fevo::Z(policy, p, n, nan), Contains("tau"));
    CHECK_THROWS_WITH(fevo::compute_partial(policy, p, n, -1e-9), Contains("tau"));
    // 1e300 is a finite double but not a finite float: float (and half, bfloat16) data refuse it.
    CHECK_THROWS_WITH(fevo::compute(policy, p, n, 1e300), Contains("1e+300") && Contains("compute type"));
    std::vector<fevo::half> ha(a.size()), hb(a.size());
    CHECK_THROWS_WITH(fevo::compute(policy, fevo::oihw(ha.data(), 2, 3, 3, 3), fevo::oihw(hb.data(), 2, 3, 3, 3), 1e300),
                      Contains("compute type"));
    std::vector<double> da(a.size(), 0.0), db(a.size(), 1.0);
    const auto m = fevo::compute(policy, fevo::oihw(da.data(), 2, 3, 3, 3), fevo::oihw(db.data(), 2, 3, 3, 3), 1e300);
    CHECK(m.S == 0.0);  // double data accept it: nothing changed by more than 1e300
    CHECK(m.Z == 1.0);
    // The largest float is a valid tau for float data.
    const auto f = fevo::compute(policy, p, n, double(std::numeric_limits<float>::max()));
    CHECK(f.S == 0.0);
  }
  SECTION("channel counts that cannot be stored") {
    // A view of one value repeated 65536 x 65537 times (strides 0): rows*cols > 2^32 - 1.
    const float one = 1.0f;
    const auto huge = fevo::strided(&one, {1, 1, 65536, 65537}, {0, 0, 0, 0});
    fevo::filter_results per;
    CHECK_THROWS_WITH(fevo::compute(policy, huge, huge, 0.1, per, fevo::with_channel_counts),
                      Contains("2^32"));
  }
  SECTION("compute_layers names the layer") {
    std::vector<fevo::layer_pair<float>> layers{
        {"conv1", p, n},
        {"conv2", fevo::oihw(a.data(), 2, 3, 3, 3), fevo::oihw(b.data(), 2, 3, 3, 4)},
    };
    CHECK_THROWS_WITH(fevo::compute_layers(policy, layers, 0.1),
                      Contains("layer 'conv2'") && Contains("shape mismatch") && Contains("{2, 3, 3, 4}"));
    layers[1].name.clear();
    CHECK_THROWS_WITH(fevo::compute_layers(policy, layers, 0.1), Contains("layer '#1'"));
    layers[1] = {"fc", p, n};
    CHECK_THROWS_WITH(fevo::compute_layers(policy, layers, -1.0), Contains("layer 'conv1'") && Contains("tau"));
    layers[0].prev = fevo::oihw(static_cast<const float*>(nullptr), 2, 3, 3, 3);
    CHECK_THROWS_WITH(fevo::compute_layers(policy, layers, 0.1), Contains("layer 'conv1'") && Contains("null"));
  }
  SECTION("filter_results::R") {
    fevo::filter_results per;
    fevo::compute(policy, p, n, 0.1, per);
    CHECK_THROWS_WITH(per.R(0, 0), Contains("with_channel_counts"));
    fevo::compute(policy, p, n, 0.1, per, fevo::with_channel_counts);
    CHECK(per.R(1, 2) == 9);
    CHECK_THROWS_WITH(per.R(2, 0), Contains("outside"));
    CHECK_THROWS_WITH(per.R(0, 3), Contains("outside"));
  }
}

// ---- the accumulator ------------------------------------------------------------------------------

TEST_CASE("check_tau: the one check of tau, with the caller's prefix", "[error]") {
  using fevo::detail::check_tau;
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  CHECK(check_tau(0.25, "") == 0.25);
  CHECK(check_tau<float>(0.1, "") == 0.1f);
  CHECK(check_tau(1e300, "") == 1e300);  // finite in double
  for (double bad : {-0.5, -1e-300, nan, inf, -inf}) {
    INFO("tau " << bad);
    CHECK_THROWS_WITH(check_tau(bad, "recorder: "),
                      Contains("fevo: recorder: tau must be finite and non-negative, got "));
    CHECK_THROWS_AS(check_tau<float>(bad, "--"), fevo::error);
  }
  CHECK_THROWS_WITH(check_tau(-1.0, "--"), Contains("fevo: --tau must be finite and non-negative, got -1"));
  CHECK_THROWS_WITH(check_tau<float>(1e300, "recorder: "),
                    Contains("recorder: tau 1e+300 is not finite in the compute type (32-bit float)"));
  CHECK(check_tau<float>(double(std::numeric_limits<float>::max()), "") == std::numeric_limits<float>::max());
  // A positive tau that rounds to 0 in the compute type would count every change: refused.
  CHECK_THROWS_WITH(check_tau<float>(1e-50, "--"),
                    Contains("--tau 1e-50 rounds to 0 in the compute type (32-bit float") && Contains("pass 0"));
  CHECK(check_tau(1e-50, "") == 1e-50);  // a double holds it
  CHECK(check_tau<float>(1e-40, "") > 0);  // a float subnormal, not 0
  CHECK(check_tau<float>(0.0, "") == 0);  // 0 is meant: every change counts
}

TEST_CASE("merge adds partials; finalize divides by the layer's filters", "[accumulator]") {
  fevo::partial a;
  a.sum_sq = 1.5;
  a.changed = 3;
  a.weights = 18;
  a.zero_channels = 1;
  a.channels = 2;
  a.nonfinite = 1;
  fevo::partial b;
  b.sum_sq = 0.25;
  b.changed = 2;
  b.weights = 18;
  b.zero_channels = 0;
  b.channels = 2;
  b.nonfinite = 0;
  fevo::partial t;
  fevo::merge(t, a);
  fevo::merge(t, b);
  CHECK(t.sum_sq == 1.75);
  CHECK(t.changed == 5);
  CHECK(t.weights == 36);
  CHECK(t.zero_channels == 1);
  CHECK(t.channels == 4);
  CHECK(t.nonfinite == 1);
  // Two filters of 2 channels of 3x3: D = 1.75 / 2, S = 5 / 36, Z = 1 / 4.
  const fevo::layer_metrics m = fevo::finalize(t, 2);
  CHECK(m.D == 0.875);
  CHECK(m.D_per_weight == 1.75 / 36);  // = D / (C H W) = 0.875 / 18
  CHECK(m.S == 5.0 / 36);
  CHECK(m.Z == 0.25);
  CHECK(m.n_filters == 2);
  CHECK(m.nonfinite == 1);
  CHECK(m.totals.changed == 5);
  // Nothing folded: all zero, no division by zero.
  const fevo::layer_metrics z = fevo::finalize(fevo::partial{}, 0);
  CHECK(z.D == 0.0);
  CHECK(z.D_per_weight == 0.0);
  CHECK(z.S == 0.0);
  CHECK(z.Z == 0.0);
}
