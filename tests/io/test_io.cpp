// fevo::io: round trips through every writer and reader for every dtype, the malformed-file
// corpus (every malformation raises a fevo::error naming the file and the problem), the atomic
// writers under failures, format detection and pickle refusal, and (hidden tag [oracle], run by
// the io.oracle test) the check of files written by NumPy and the reference safetensors package.
#include "../support.hpp"
#include "io_support.hpp"

#include <fevo/io/format.hpp>
#include <fevo/io/npy.hpp>
#include <fevo/io/npz.hpp>
#include <fevo/io/safetensors.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

using namespace fevo_io_test;
namespace io = fevo::io;
using io::dtype;

namespace {

const dtype float_types[] = {dtype::f16, dtype::bf16, dtype::f32, dtype::f64};

/// Calls f(T*) for the element type of an analysable dtype.
template <class F>
void with_type(dtype t, F&& f) {
  io::visit_element(t, std::forward<F>(f));
}

/// C-order index of (a, b, c, d) in shape s.
std::size_t c_index(const std::vector<std::uint64_t>& s, std::size_t a, std::size_t b, std::size_t c,
                    std::size_t d) {
  return std::size_t(((a * s[1] + b) * s[2] + c) * s[3] + d);
}

/// Checks a 4-D view against C-order bytes of `shape`, read as `lay`.
template <class T>
void check_view(const fevo::filter_view<const T>& v, const bytes& data,
                const std::vector<std::uint64_t>& shape, io::layout lay) {
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < v.extent(0); ++i)
    for (std::size_t c = 0; c < v.extent(1); ++c)
      for (std::size_t h = 0; h < v.extent(2); ++h)
        for (std::size_t w = 0; w < v.extent(3); ++w) {
          const std::size_t k = lay == io::layout::oihw ? c_index(shape, i, c, h, w)
                                                        : c_index(shape, h, w, c, i);
          T want;
          std::memcpy(&want, data.data() + k * sizeof(T), sizeof(T));
          mismatches += bits_of(v(i, c, h, w)) != bits_of(want);
        }
  CHECK(mismatches == 0);
}

std::uint64_t product(const std::vector<std::uint64_t>& s) {
  std::uint64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

}  // namespace

// =================================================================================================
// Round trips
// =================================================================================================

TEST_CASE("safetensors round trip: every dtype, 4-D, 2-D, 1-D, 0-D, empty, metadata", "[io][safetensors]") {
  auto r = fevo_test::rng_for("safetensors round trip");
  temp_dir dir;
  for (dtype t : float_types) {
    INFO("dtype " << io::dtype_name(t));
    struct spec {
      std::string name;
      std::vector<std::uint64_t> shape;
    };
    const std::vector<spec> specs = {{"features.0.weight", {8, 3, 3, 3}}, {"fc.weight", {5, 7}},
                                     {"hwio", {3, 2, 4, 6}},              {"bias", {9}},
                                     {"scalar", {}},                      {"empty", {0, 3, 3, 3}}};
    std::vector<bytes> data;
    std::vector<io::named_tensor> tensors;
    for (const auto& s : specs) data.push_back(random_elements(t, std::size_t(product(s.shape)), r));
    for (std::size_t i = 0; i < specs.size(); ++i)
      tensors.push_back({specs[i].name, t, specs[i].shape, data[i].data()});
    const std::map<std::string, std::string> meta = {
        {"step", "1200"}, {"note", "ünïcødé \"quoted\" \\ back\nslash"}, {"", "empty key"}};
    const std::string path = dir / (std::string("rt_") + io::dtype_name(t) + ".safetensors");
    io::write_safetensors(path, tensors, meta);

    const io::safetensors_file f(path);
    CHECK(f.path() == path);
    CHECK(f.metadata() == meta);
    REQUIRE(f.tensors().size() == specs.size());
    CHECK(f.header().header_size % 8 == 0);
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const io::tensor_info* ti = f.find(specs[i].name);
      REQUIRE(ti != nullptr);
      CHECK(ti->type == t);
      CHECK(ti->shape == specs[i].shape);
      CHECK(ti->nbytes == data[i].size());
      CHECK((data[i].empty() || std::memcmp(f.data(*ti), data[i].data(), data[i].size()) == 0));
      CHECK(reinterpret_cast<std::uintptr_t>(f.data(*ti)) % io::dtype_size(t) == 0);
    }
    CHECK(f.find("absent") == nullptr);

    with_type(t, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      std::vector<T> scratch;
      const auto v = io::view_of<T>(f, *f.find("features.0.weight"), io::layout::oihw, scratch);
      CHECK(v.extents() == std::array<std::size_t, 4>{8, 3, 3, 3});
      CHECK(scratch.empty());  // aligned: zero-copy
      CHECK(static_cast<const void*>(v.data_handle()) == f.data(*f.find("features.0.weight")));
      check_view(v, data[0], specs[0].shape, io::layout::oihw);

      const auto h = io::view_of<T>(f, *f.find("hwio"), io::layout::hwio, scratch);
      CHECK(h.extents() == std::array<std::size_t, 4>{6, 4, 3, 2});  // O, I, H, W
      check_view(h, data[2], specs[2].shape, io::layout::hwio);

      const auto fc = io::view_of<T>(f, *f.find("fc.weight"), io::layout::oihw, scratch, true);
      CHECK(fc.extents() == std::array<std::size_t, 4>{5, 7, 1, 1});
      CHECK(bits_of(fc(4, 6, 0, 0)) == bits_of(reinterpret_cast<const T*>(data[1].data())[4 * 7 + 6]));
      const auto dense = io::view_of<T>(f, *f.find("fc.weight"), io::layout::hwio, scratch, true);
      CHECK(dense.extents() == std::array<std::size_t, 4>{7, 5, 1, 1});  // Keras Dense: [in, out]
      CHECK(bits_of(dense(6, 4, 0, 0)) == bits_of(reinterpret_cast<const T*>(data[1].data())[4 * 7 + 6]));

      check_message(error_of([&] { io::view_of<T>(f, *f.find("fc.weight"), io::layout::oihw, scratch); }),
                    {path, "tensor 'fc.weight'", "2-D", "allow_2d"});
      check_message(error_of([&] { io::view_of<T>(f, *f.find("bias"), io::layout::oihw, scratch, true); }),
                    {path, "tensor 'bias'", "rank 1"});
      const auto e = io::view_of<T>(f, *f.find("empty"), io::layout::oihw, scratch);
      CHECK(e.extent(0) == 0);
    });
    // A view of the wrong element type is refused, naming both types.
    if (t != dtype::f32) {
      std::vector<float> scratch;
      check_message(error_of([&] { io::view_of<float>(f, *f.find("features.0.weight"), io::layout::oihw, scratch); }),
                    {path, "features.0.weight", io::dtype_name(t), "F32"});
    }
  }
}

TEST_CASE("safetensors: mixed dtypes are aligned by the writer; misaligned data is copied", "[io][safetensors]") {
  auto r = fevo_test::rng_for("safetensors alignment");
  temp_dir dir;
  // The writer orders tensors by element size so every tensor is aligned.
  const bytes a = random_elements(dtype::f16, 3, r), b = random_elements(dtype::f64, 2 * 1 * 1 * 3, r),
              c = random_elements(dtype::bf16, 5, r), d = random_elements(dtype::f32, 7, r);
  const std::string path = dir / "mixed.safetensors";
  io::write_safetensors(path, {{"a16", dtype::f16, {3}, a.data()},
                               {"b64", dtype::f64, {2, 1, 1, 3}, b.data()},
                               {"c16", dtype::bf16, {5}, c.data()},
                               {"d32", dtype::f32, {7}, d.data()}});
  const io::safetensors_file f(path);
  for (const auto& t : f.tensors())
    CHECK(reinterpret_cast<std::uintptr_t>(f.data(t)) % io::dtype_size(t.type) == 0);
  CHECK(f.tensors()[0].name == "b64");  // largest elements first, then the given order
  CHECK(f.tensors()[1].name == "d32");
  CHECK(f.tensors()[2].name == "a16");
  CHECK(f.tensors()[3].name == "c16");

  // A hand-built file whose header is not padded: the F64 data starts at an odd address.
  const bytes w = random_elements(dtype::f64, 2 * 3 * 1 * 2, r);
  for (std::size_t pad = 0; pad < 8; ++pad) {
    std::string header = "{\"w\":{\"dtype\":\"F64\",\"shape\":[2,3,1,2],\"data_offsets\":[0,96]}}";
    header.append(pad, ' ');
    bytes file;
    put_le(file, header.size(), 8);
    append(file, header);
    append(file, w);
    // Place the file at an odd address inside a buffer as well, to test from_memory.
    bytes shifted(file.size() + 1);
    std::memcpy(shifted.data() + 1, file.data(), file.size());
    const auto m = io::safetensors_file::from_memory(shifted.data() + 1, file.size(), "shifted");
    std::vector<double> scratch;
    const auto v = io::view_of<double>(m, m.tensors()[0], io::layout::oihw, scratch);
    const bool aligned = reinterpret_cast<std::uintptr_t>(m.data(m.tensors()[0])) % 8 == 0;
    CHECK(aligned == scratch.empty());
    if (!aligned) CHECK(v.data_handle() == scratch.data());
    check_view(v, w, {2, 3, 1, 2}, io::layout::oihw);
  }
}

TEST_CASE("safetensors: accepted edge cases", "[io][safetensors]") {
  temp_dir dir;
  const auto ok = [&](const std::string& header, std::size_t data) {
    const std::string p = dir / "ok.safetensors";
    write_raw(p, safetensors_bytes(header, data));
    return io::safetensors_file(p);
  };
  CHECK(ok("{}", 0).tensors().empty());
  CHECK(ok("   {}", 0).tensors().empty());      // leading spaces
  CHECK(ok("{}   \n\t\r ", 0).tensors().empty());  // trailing JSON whitespace (writers pad)
  CHECK(ok("{\"__metadata__\":{}}", 0).metadata().empty());
  CHECK(ok("{\"__metadata__\":{\"a\":\"1\",\"b\":\"\"}}", 0).metadata().size() == 2);
  {  // listed out of offset order: tensors() is in data order
    const auto f = ok("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                      "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 16);
    REQUIRE(f.tensors().size() == 2);
    CHECK(f.tensors()[0].name == "a");
    CHECK(f.tensors()[0].type == dtype::i64);
    std::vector<float> scratch;
    check_message(error_of([&] { io::view_of<float>(f, f.tensors()[0], io::layout::oihw, scratch); }),
                  {"tensor 'a'", "I64", "not analysed"});
  }
  {  // zero-size tensors, sub-byte dtype filling whole bytes, every other dtype listed
    const auto f = ok("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
                      "\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]},"
                      "\"z2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[2,2]},"
                      "\"b\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[2,5]},"
                      "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[1,1],\"data_offsets\":[5,6]},"
                      "\"c\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[6,14]}}", 14);
    CHECK(f.tensors().size() == 6);
    CHECK(f.find("q")->nbytes == 2);
    CHECK(f.find("c")->type == dtype::c64);
  }
  {  // "-0" and big integers parse as integers; unicode names and escapes
    const auto f = ok("{\"\\u00e9t\\u00e9\":{\"dtype\":\"F16\",\"shape\":[-0, 2],\"data_offsets\":[0,0]}}", 0);
    CHECK(f.find("\xc3\xa9t\xc3\xa9") != nullptr);
  }
  for (dtype t : io::all_dtypes) {
    dtype back = dtype::f32;
    REQUIRE(io::dtype_from_name(io::dtype_name(t), back));
    CHECK(back == t);
  }
}

TEST_CASE(".npy round trip: every dtype and rank", "[io][npy]") {
  auto r = fevo_test::rng_for("npy round trip");
  temp_dir dir;
  const std::vector<std::vector<std::uint64_t>> shapes = {{4, 3, 2, 5}, {6, 7}, {9}, {}, {0, 4}, {1, 1, 1, 1}};
  for (dtype t : float_types) {
    for (const auto& shape : shapes) {
      INFO("dtype " << io::dtype_name(t) << " shape " << io::shape_string(shape));
      const bytes data = random_elements(t, std::size_t(product(shape)), r);
      const std::string path = dir / "a.npy";
      io::write_npy(path, t, shape, data.data());
      const bytes file = read_raw(path);
      // NumPy's own layout: version 1.0, data at a multiple of 64, header ends with '\n'.
      REQUIRE(file.size() >= 64);
      const std::size_t hlen = file[8] | std::size_t(file[9]) << 8;
      CHECK(file[6] == 1);
      CHECK((10 + hlen) % 64 == 0);
      CHECK(file[10 + hlen - 1] == '\n');
      io::npy_options opt;
      opt.void2_as_bfloat16 = true;
      const io::npy_array a = io::read_npy(path, opt);
      CHECK(a.type == t);
      CHECK(a.shape == shape);
      CHECK_FALSE(a.fortran_order);
      CHECK(a.bytes == data);
      if (t == dtype::bf16)
        check_message(error_of([&] { io::read_npy(path); }), {path, "'<V2'", "void2_as_bfloat16"});
      if (shape.size() == 4)
        with_type(t, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          std::vector<T> scratch;
          check_view(io::view_of<T>(a, io::layout::oihw, scratch), data, shape, io::layout::oihw);
          check_view(io::view_of<T>(a, io::layout::hwio, scratch), data, shape, io::layout::hwio);
        });
      // The npy_array overload writes the same file.
      io::write_npy(dir / "b.npy", a);
      CHECK(read_raw(dir / "b.npy") == file);
    }
  }
}

TEST_CASE(".npy: versions 2.0 and 3.0, keys in any order, Fortran order, big-endian", "[io][npy]") {
  temp_dir dir;
  const std::string p = dir / "x.npy";
  const auto read = [&](const bytes& b, io::npy_options opt = {}) {
    write_raw(p, b);
    return io::read_npy(p, opt);
  };
  // values 0..23 as f4, C order
  bytes c24;
  for (int i = 0; i < 24; ++i) {
    const float f = float(i);
    const auto* q = reinterpret_cast<const unsigned char*>(&f);
    c24.insert(c24.end(), q, q + 4);
  }
  const auto f4_data = [&](const std::string& header, int major) {
    bytes b = npy_bytes(major, 0, header, 0);
    append(b, c24);
    return b;
  };
  for (int major : {1, 2, 3}) {
    const auto a = read(f4_data("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }\n", major));
    CHECK(a.shape == std::vector<std::uint64_t>{2, 3, 4});
    CHECK(a.bytes == c24);
  }
  {  // any key order, double quotes, no trailing comma, extra spaces, Python 2 long suffix
    const auto a = read(f4_data("  { \"shape\" : (2L, 12) ,'fortran_order':False,  'descr':'<f4'}   ", 1));
    CHECK(a.shape == std::vector<std::uint64_t>{2, 12});
    CHECK(a.bytes == c24);
  }
  {  // v3.0: a UTF-8 header (only its spaces could be non-ASCII in practice; here a key's padding)
    const auto a = read(f4_data("{'descr': '<f4', 'fortran_order': False, 'shape': (24,)}        ", 3));
    CHECK(a.type == dtype::f32);
  }
  {  // Fortran order: element (i, j, k) at i + 2 j + 6 k; converted to C order on read
    bytes fdata(96);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) std::memcpy(&fdata[4 * (i + 2 * j + 6 * k)], &c24[4 * ((i * 3 + j) * 4 + k)], 4);
    bytes b = npy_bytes(1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", 0);
    append(b, fdata);
    const auto a = read(b);
    CHECK(a.fortran_order);
    CHECK(a.bytes == c24);
  }
  {  // big-endian: byte-swapped on read
    for (const char* code : {">f4", ">f8", ">f2"}) {
      const std::size_t sz = code[2] - '0';
      bytes be = npy_bytes(1, 0, std::string("{'descr': '") + code + "', 'fortran_order': False, 'shape': (3,), }", 0);
      bytes le;
      for (int i = 0; i < 3; ++i) {
        unsigned char v[8];
        if (sz == 4) { const float f = float(i) + 0.5f; std::memcpy(v, &f, 4); }
        if (sz == 8) { const double f = double(i) + 0.25; std::memcpy(v, &f, 8); }
        if (sz == 2) { const auto h = fevo::half::from_float(float(i) - 0.5f); std::memcpy(v, &h.bits, 2); }
        le.insert(le.end(), v, v + sz);
        for (std::size_t k = 0; k < sz; ++k) be.push_back(v[sz - 1 - k]);
      }
      const auto a = read(be);
      CHECK(a.bytes == le);
      CHECK(a.shape == std::vector<std::uint64_t>{3});
    }
  }
  {  // native '=' and no byte-order character
    CHECK(read(f4_data("{'descr': '=f4', 'fortran_order': False, 'shape': (24,), }", 1)).bytes == c24);
    CHECK(read(f4_data("{'descr': 'f4', 'fortran_order': False, 'shape': (24,), }", 1)).bytes == c24);
  }
  {  // integer types are read (listed) but not analysed
    const auto a = read(f4_data("{'descr': '<i4', 'fortran_order': False, 'shape': (24,), }", 1));
    CHECK(a.type == dtype::i32);
    std::vector<float> scratch;
    CHECK(a.source == p);
    check_message(error_of([&] { io::view_of<float>(a, io::layout::oihw, scratch); }), {"fevo: " + p + ": ", "I32"});
    check_message(error_of([&] { io::view_of<float>(a, io::layout::oihw, scratch, false, "given"); }), {"fevo: given: "});
  }
}

TEST_CASE(".npz round trip: stored and deflated members, every dtype", "[io][npz]") {
  auto r = fevo_test::rng_for("npz round trip");
  temp_dir dir;
  for (bool deflate : {false, true}) {
    std::vector<zip_entry> entries;
    std::map<std::string, std::pair<dtype, bytes>> want;
    for (dtype t : float_types) {
      const std::vector<std::uint64_t> shape = {3, 2, 3, 3};
      const bytes data = random_elements(t, std::size_t(product(shape)), r);
      const std::string key = std::string("layer_") + io::dtype_name(t);
      io::write_npy(dir / "m.npy", t, shape, data.data());
      entries.push_back({key + ".npy", read_raw(dir / "m.npy"), deflate});
      want[key] = {t, data};
    }
    const std::string path = dir / (deflate ? "d.npz" : "s.npz");
    write_raw(path, zip_bytes(entries));
    io::npy_options opt;
    opt.void2_as_bfloat16 = true;
    const auto arrays = io::read_npz(path, {}, opt);
    REQUIRE(arrays.size() == 4);
    for (const auto& [key, w] : want) {
      INFO(key);
      REQUIRE(arrays.count(key));
      CHECK(arrays.at(key).type == w.first);
      CHECK(arrays.at(key).shape == std::vector<std::uint64_t>{3, 2, 3, 3});
      CHECK(arrays.at(key).bytes == w.second);
    }
    const io::npz_archive z(path, {}, opt);
    CHECK(z.members().size() == 4);
    CHECK(z.header("layer_F64").type == dtype::f64);
    CHECK(z.read("layer_F16").bytes == want["layer_F16"].second);
    CHECK(z.find("nope") == nullptr);
    check_message(error_of([&] { z.read("nope"); }), {path, "no array 'nope'"});
    // The same bytes from memory.
    const bytes mem = read_raw(path);
    const auto zm = io::npz_archive::from_memory(mem.data(), mem.size(), "in-memory.npz", {}, opt);
    CHECK(zm.read_all().size() == 4);
  }
}

TEST_CASE("files read by fevo compute the same metrics as the raw buffers", "[io]") {
  auto r = fevo_test::rng_for("io metrics");
  temp_dir dir;
  const std::vector<std::uint64_t> shape = {6, 4, 3, 3};
  const std::size_t n = std::size_t(product(shape));
  std::vector<float> prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = float(r.normal());
    next[i] = prev[i] + (r.chance(0.5) ? float(r.normal() * 0.1) : 0.0f);
  }
  io::write_safetensors(dir / "0.safetensors", {{"conv", dtype::f32, shape, prev.data()}}, {{"step", "0"}});
  io::write_npy(dir / "1.npy", dtype::f32, shape, next.data());
  const io::safetensors_file f(dir / "0.safetensors");
  const io::npy_array a = io::read_npy(dir / "1.npy");
  std::vector<float> s1, s2;
  const auto from_files = fevo::compute(fevo::seq, io::view_of<float>(f, *f.find("conv"), io::layout::oihw, s1),
                                        io::view_of<float>(a, io::layout::oihw, s2), 0.05);
  const auto raw = fevo::compute(fevo::seq, fevo::oihw(static_cast<const float*>(prev.data()), 6, 4, 3, 3),
                                 fevo::oihw(static_cast<const float*>(next.data()), 6, 4, 3, 3), 0.05);
  CHECK(from_files.D == raw.D);
  CHECK(from_files.S == raw.S);
  CHECK(from_files.Z == raw.Z);
}

// =================================================================================================
// Malformed files
// =================================================================================================

namespace {

struct bad_case {
  std::string name;
  bytes file;
  std::vector<std::string> expect;  ///< substrings of the message (besides the file name)
};

const char* const valid_header =
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[16,24]}}";

std::vector<bad_case> malformed_safetensors() {
  const auto st = [](const std::string& h, std::size_t data) { return safetensors_bytes(h, data); };
  const auto entry = [](const std::string& body) { return "{\"t\":{" + body + "}}"; };
  std::vector<bad_case> c;
  bytes valid = st(valid_header, 24);
  bytes cut = valid;
  cut.pop_back();
  c.push_back({"truncated by one byte", cut, {"truncated: the header needs 24 bytes of data, the file holds 23", "tensor 'b'"}});
  {
    const std::uint64_t len = valid.size() - 8 + 1;
    c.push_back({"header length larger than the file", safetensors_bytes(valid_header, 24, &len),
                 {"truncated: the header needs", "after its 8-byte length"}});
    const std::uint64_t max = ~std::uint64_t(0);
    c.push_back({"header length 2^64-1", safetensors_bytes(valid_header, 24, &max),
                 {"header length 18446744073709551615", "exceeds the limit of 100000000"}});
    const std::uint64_t over = 100000001;
    c.push_back({"header length over the cap", safetensors_bytes(valid_header, 24, &over), {"exceeds the limit"}});
    const std::uint64_t zero = 0;
    c.push_back({"header length 0", safetensors_bytes("", 0, &zero), {"header length is 0"}});
  }
  c.push_back({"empty file", {}, {"0 bytes, too short"}});
  c.push_back({"7-byte file", bytes(7, 0), {"7 bytes, too short"}});
  c.push_back({"overlapping offsets",
               st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16),
               {"tensor 'b'", "overlaps tensor 'a'"}});
  c.push_back({"identical offsets",
               st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16),
               {"overlaps tensor"}});
  c.push_back({"out-of-range offsets", st(entry("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]"), 16),
               {"tensor 't'", "truncated: the header needs 32 bytes of data, the file holds 16"}});
  c.push_back({"offsets past 2^64", st(entry("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,18446744073709551616]"), 16),
               {"tensor 't'", "non-integer"}});
  c.push_back({"end before begin", st(entry("\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]"), 8),
               {"tensor 't'", "end before they begin"}});
  c.push_back({"gap between tensors",
               st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]}}", 28),
               {"tensor 'b'", "gap", "tensor 'a' ends at 16", "4 unused bytes"}});
  c.push_back({"gap at the start", st(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]"), 16),
               {"tensor 't'", "gap", "starts at 8"}});
  c.push_back({"trailing bytes", st(valid_header, 30), {"6 trailing bytes"}});
  c.push_back({"data but no tensors", st("{}", 4), {"4 trailing bytes"}});
  c.push_back({"duplicate tensor names",
               st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16),
               {"tensor 'a'", "duplicate tensor name"}});
  c.push_back({"duplicate key in an entry",
               st(entry("\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "duplicate key 'dtype'"}});
  c.push_back({"duplicate metadata key", st("{\"__metadata__\":{\"s\":\"1\",\"s\":\"2\"}}", 0),
               {"__metadata__", "duplicate key 's'"}});
  c.push_back({"duplicate __metadata__", st("{\"__metadata__\":{},\"__metadata__\":{}}", 0), {"__metadata__", "twice"}});
  c.push_back({"unknown dtype", st(entry("\"dtype\":\"F24\",\"shape\":[2],\"data_offsets\":[0,6]"), 6),
               {"tensor 't'", "unknown dtype 'F24'"}});
  c.push_back({"lower-case dtype", st(entry("\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]"), 8),
               {"unknown dtype 'f32'"}});
  c.push_back({"dtype not a string", st(entry("\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "dtype is a number"}});
  c.push_back({"shape product overflow",
               st(entry("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]"), 0),
               {"tensor 't'", "overflows"}});
  c.push_back({"shape size overflow", st(entry("\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]"), 0),
               {"tensor 't'", "overflows"}});
  c.push_back({"shape and offsets disagree", st(entry("\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,16]"), 16),
               {"tensor 't'", "span 16 bytes", "needs 24 bytes"}});
  c.push_back({"negative dimension", st(entry("\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "negative"}});
  c.push_back({"fractional dimension", st(entry("\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "non-integer"}});
  c.push_back({"dimension 2.0", st(entry("\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]"), 8),
               {"non-integer"}});
  c.push_back({"shape not an array", st(entry("\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "shape is a number", "not an array"}});
  c.push_back({"nested shape", st(entry("\"dtype\":\"F32\",\"shape\":[[2]],\"data_offsets\":[0,8]"), 8),
               {"tensor 't'", "shape contains an array"}});
  c.push_back({"string in shape", st(entry("\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]"), 8),
               {"shape contains a string"}});
  c.push_back({"data_offsets of one element", st(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]"), 8),
               {"tensor 't'", "[begin, end]"}});
  c.push_back({"data_offsets of three elements", st(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]"), 8),
               {"[begin, end]"}});
  c.push_back({"missing dtype", st(entry("\"shape\":[2],\"data_offsets\":[0,8]"), 8), {"tensor 't'", "no 'dtype'"}});
  c.push_back({"missing shape", st(entry("\"dtype\":\"F32\",\"data_offsets\":[0,8]"), 8), {"no 'shape'"}});
  c.push_back({"missing data_offsets", st(entry("\"dtype\":\"F32\",\"shape\":[2]"), 8), {"no 'data_offsets'"}});
  c.push_back({"unknown key", st(entry("\"dtype\":\"F32\",\"shape\":[2],\"offsets\":[0,8]"), 8),
               {"tensor 't'", "unknown key 'offsets'"}});
  c.push_back({"entry not an object", st("{\"t\":[1,2]}", 0), {"tensor 't'", "an array, not an object"}});
  c.push_back({"entry is a string", st("{\"t\":\"F32\"}", 0), {"tensor 't'", "a string, not an object"}});
  c.push_back({"non-object JSON: array", st("[1,2]", 0), {"header is an array, not a JSON object"}});
  c.push_back({"non-object JSON: string", st("\"x\"", 0), {"not a JSON object"}});
  c.push_back({"non-object JSON: number", st("42", 0), {"not a JSON object"}});
  c.push_back({"non-object JSON: null", st("null", 0), {"not a JSON object"}});
  c.push_back({"invalid UTF-8 in a name", st("{\"\xff\":{}}", 0), {"not valid UTF-8", "byte 2", "0xff"}});
  c.push_back({"overlong UTF-8", st("{\"\xc0\xaf\":{}}", 0), {"not valid UTF-8"}});
  c.push_back({"UTF-8 surrogate", st("{\"\xed\xa0\x80\":{}}", 0), {"not valid UTF-8"}});
  c.push_back({"truncated UTF-8 sequence", st("{\"\xe2\x82\":{}}", 0), {"not valid UTF-8"}});
  c.push_back({"lone surrogate escape", st("{\"\\ud800\":{}}", 0), {"not valid JSON"}});
  c.push_back({"metadata value not a string", st("{\"__metadata__\":{\"step\":3}}", 0),
               {"__metadata__ value of key 'step' is a number", "must be strings"}});
  c.push_back({"metadata value an object", st("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0),
               {"__metadata__ value of key 'a' is an object"}});
  c.push_back({"metadata value null", st("{\"__metadata__\":{\"a\":null}}", 0), {"is null"}});
  c.push_back({"metadata not an object", st("{\"__metadata__\":\"x\"}", 0), {"__metadata__ is a string, not an object"}});
  c.push_back({"metadata an array", st("{\"__metadata__\":[]}", 0), {"__metadata__ is an array"}});
  c.push_back({"JSON syntax error", st("{\"t\":", 0), {"not valid JSON"}});
  c.push_back({"text after the object", st("{} x", 0), {"not valid JSON"}});
  c.push_back({"two objects", st("{}{}", 0), {"not valid JSON"}});
  c.push_back({"NUL padding", st(std::string("{}\0\0", 4), 0), {"NUL byte", "byte 2"}});
  c.push_back({"NUL then garbage", st(std::string("{}\0{\"x\"", 7), 0), {"NUL byte"}});
  c.push_back({"comment", st("{} // c", 0), {"not valid JSON"}});
  c.push_back({"deep nesting", st("{\"t\":{\"dtype\":" + std::string(1000, '[') + std::string(1000, ']') + "}}", 0),
               {"tensor 't'", "dtype is an array"}});
  c.push_back({"sub-byte dtype not filling bytes", st(entry("\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]"), 2),
               {"tensor 't'", "does not fill whole bytes"}});
  c.push_back({"empty tensor name", st("{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0),
               {"empty name"}});
  return c;
}

std::vector<bad_case> malformed_npy() {
  const auto hdr = [](const std::string& body) { return "{" + body + "}"; };
  const std::string good = "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), ";
  std::vector<bad_case> c;
  const bytes valid = npy_bytes(1, 0, hdr(good), 24);
  bytes cut = valid;
  cut.pop_back();
  c.push_back({"truncated by one byte", cut, {"truncated: the header needs 24 bytes of data", "the file holds 23"}});
  bytes longer = valid;
  longer.push_back(0);
  c.push_back({"one byte too many", longer, {"1 trailing bytes"}});
  bytes magic = valid;
  magic[5] = 'Z';
  c.push_back({"wrong magic", magic, {"not a .npy file"}});
  c.push_back({"empty file", {}, {"not a .npy file"}});
  c.push_back({"preamble cut", bytes(valid.begin(), valid.begin() + 9), {"preamble"}});
  c.push_back({"v2 preamble cut", bytes{0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 1, 0}, {"preamble"}});
  c.push_back({"version 4.0", npy_bytes(4, 0, hdr(good), 24), {"unsupported .npy format version 4.0"}});
  c.push_back({"version 1.1", npy_bytes(1, 1, hdr(good), 24), {"unsupported .npy format version 1.1"}});
  c.push_back({"version 0.0", npy_bytes(0, 0, hdr(good), 24), {"version 0.0"}});
  {
    const std::uint64_t len = 1000;
    c.push_back({"header length larger than the file", npy_bytes(1, 0, hdr(good), 24, &len),
                 {"header length 1000 is larger than"}});
    const std::uint64_t huge = 0xffffffffu;
    c.push_back({"v2 header length 2^32-1", npy_bytes(2, 0, hdr(good), 24, &huge),
                 {"header length 4294967295 exceeds the limit"}});
  }
  c.push_back({"missing descr", npy_bytes(1, 0, hdr("'fortran_order': False, 'shape': (6,)"), 24), {"no 'descr' key"}});
  c.push_back({"missing fortran_order", npy_bytes(1, 0, hdr("'descr': '<f4', 'shape': (6,)"), 24), {"no 'fortran_order' key"}});
  c.push_back({"missing shape", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False"), 24), {"no 'shape' key"}});
  c.push_back({"duplicate key", npy_bytes(1, 0, hdr(good + "'shape': (6,)"), 24), {"'shape' appears twice"}});
  c.push_back({"extra key", npy_bytes(1, 0, hdr(good + "'extra': 1"), 24), {"unexpected key 'extra'"}});
  c.push_back({"not a dict", npy_bytes(1, 0, "['descr']", 24), {"expected '{'"}});
  c.push_back({"unicode dtype", npy_bytes(1, 0, hdr("'descr': '<U4', 'fortran_order': False, 'shape': (6,)"), 96),
               {"unsupported descr '<U4'"}});
  c.push_back({"object dtype", npy_bytes(1, 0, hdr("'descr': '|O', 'fortran_order': False, 'shape': (3,)"), 24),
               {"unsupported descr '|O'"}});
  c.push_back({"long double", npy_bytes(1, 0, hdr("'descr': '<f16', 'fortran_order': False, 'shape': (1,)"), 16),
               {"unsupported descr '<f16'"}});
  c.push_back({"structured dtype", npy_bytes(1, 0, hdr("'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)"), 24),
               {"structured dtypes are not supported"}});
  c.push_back({"2-byte void without the bfloat16 option",
               npy_bytes(1, 0, hdr("'descr': '<V2', 'fortran_order': False, 'shape': (12,)"), 24),
               {"'<V2'", "ml_dtypes.bfloat16", "void2_as_bfloat16"}});
  c.push_back({"no byte order for a multi-byte type",
               npy_bytes(1, 0, hdr("'descr': '|f4', 'fortran_order': False, 'shape': (6,)"), 24), {"no byte order"}});
  c.push_back({"shape (3) is not a tuple", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': (6)"), 24),
               {"not a tuple", "(n,)"}});
  c.push_back({"shape as a list", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': [6]"), 24),
               {"'shape' must be a tuple"}});
  c.push_back({"negative dimension", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': (-6,)"), 24),
               {"non-negative"}});
  c.push_back({"shape product overflow",
               npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)"), 0),
               {"shape [4294967296, 4294967296] overflows"}});
  c.push_back({"shape size overflow", npy_bytes(1, 0, hdr("'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,)"), 0),
               {"overflows"}});
  c.push_back({"dimension past 2^64", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,)"), 0),
               {"does not fit in 64 bits"}});
  c.push_back({"short data", npy_bytes(1, 0, hdr(good), 10), {"truncated: the header needs 24 bytes of data", "the file holds 10"}});
  c.push_back({"no data", npy_bytes(1, 0, hdr(good), 0), {"truncated"}});
  c.push_back({"fortran_order not a bool", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': 0, 'shape': (6,)"), 24),
               {"True or False"}});
  c.push_back({"unterminated string", npy_bytes(1, 0, "{'descr': '<f4", 0), {"ends early"}});
  c.push_back({"header cut before '}'", npy_bytes(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), ", 24),
               {"ends early"}});
  c.push_back({"text after the dict", npy_bytes(1, 0, hdr(good) + " x", 24), {"unexpected text after"}});
  c.push_back({"missing comma", npy_bytes(1, 0, hdr("'descr': '<f4' 'fortran_order': False, 'shape': (6,)"), 24),
               {"expected ',' or '}'"}});
  c.push_back({"v3 header not UTF-8", npy_bytes(3, 0, hdr(good) + "\xff", 24), {"not valid UTF-8"}});
  {
    std::string dims;
    for (int i = 0; i < 65; ++i) dims += "1, ";
    c.push_back({"65 dimensions", npy_bytes(1, 0, hdr("'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + ")"), 4),
                 {"more than 64 dimensions"}});
  }
  return c;
}

}  // namespace

TEST_CASE("malformed safetensors files: each raises a fevo::error naming the file and the problem", "[io][safetensors][malformed]") {
  temp_dir dir;
  const auto cases = malformed_safetensors();
  CHECK(cases.size() >= 50);
  for (const auto& c : cases) {
    INFO("case: " << c.name);
    const std::string path = dir / "bad.safetensors";
    write_raw(path, c.file);
    const std::string msg = error_of([&] { io::safetensors_file f(path); });
    check_message(msg, {"fevo: " + path + ": "});
    for (const auto& e : c.expect) check_message(msg, {e});
    // The same from memory, under the given name.
    const std::string mem = error_of([&] { io::safetensors_file::from_memory(c.file.data(), c.file.size(), "buffer"); });
    check_message(mem, {"fevo: buffer: "});
  }
  // Directories and missing files.
  check_message(error_of([&] { io::safetensors_file f(dir / "missing.safetensors"); }),
                {dir / "missing.safetensors", "cannot open", "No such file"});
  check_message(error_of([&] { io::safetensors_file f(dir.path.string()); }), {dir.path.string(), "directory"});
}

TEST_CASE("malformed safetensors: every truncation of a valid file is refused", "[io][safetensors][malformed]") {
  const bytes valid = safetensors_bytes(valid_header, 24);
  REQUIRE_NOTHROW(io::safetensors_file::from_memory(valid.data(), valid.size(), "valid"));
  for (std::size_t n = 0; n < valid.size(); ++n) {
    INFO("first " << n << " bytes");
    const bytes cut(valid.begin(), valid.begin() + std::ptrdiff_t(n));
    check_message(error_of([&] { io::safetensors_file::from_memory(cut.data(), cut.size(), "cut"); }), {"fevo: cut: "});
  }
}

TEST_CASE("malformed safetensors and npy: random corruptions raise fevo::error or parse", "[io][malformed]") {
  auto r = fevo_test::rng_for("random corruptions");
  const bytes st = safetensors_bytes(
      "{\"__metadata__\":{\"step\":\"3\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,1,1,2],\"data_offsets\":[0,16]},"
      "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}", 24);
  const bytes np = npy_bytes(1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24);
  std::size_t parsed = 0, refused = 0;
  for (int i = 0; i < (fevo_test::sanitized ? 3000 : 20000); ++i) {
    const bool is_st = i % 2 == 0;
    bytes b = is_st ? st : np;
    const int edits = 1 + int(r.below(4));
    for (int k = 0; k < edits; ++k) {
      const std::size_t pos = r.below(b.size());
      switch (r.below(4)) {
        case 0: b[pos] = static_cast<unsigned char>(r.bits()); break;
        case 1: b[pos] ^= static_cast<unsigned char>(1u << r.below(8)); break;
        case 2: b.erase(b.begin() + std::ptrdiff_t(pos)); break;
        default: b.insert(b.begin() + std::ptrdiff_t(pos), static_cast<unsigned char>(r.bits())); break;
      }
      if (b.empty()) break;
    }
    try {
      if (is_st) {
        const auto f = io::safetensors_file::from_memory(b.data(), b.size(), "mutant");
        for (const auto& t : f.tensors()) (void)f.data(t);
      } else {
        io::npy_options opt;
        opt.void2_as_bfloat16 = true;
        const auto a = io::parse_npy(b.data(), b.size(), "mutant", opt);
        std::uint64_t e = 0, nb = 0;
        REQUIRE(io::detail::shape_bytes(a.shape, a.type, e, nb));
        REQUIRE(nb == a.bytes.size());
      }
      ++parsed;
    } catch (const fevo::error& e) {
      ++refused;
      const std::string m = e.what();
      if (m.rfind("fevo: mutant: ", 0) != 0) FAIL_CHECK("message does not name the buffer: " << m);
    }
  }
  INFO("parsed " << parsed << ", refused " << refused);
  CHECK(refused > 0);
  CHECK(parsed > 0);
}

TEST_CASE("malformed .npy files: each raises a fevo::error naming the file and the problem", "[io][npy][malformed]") {
  temp_dir dir;
  const auto cases = malformed_npy();
  CHECK(cases.size() >= 35);
  for (const auto& c : cases) {
    INFO("case: " << c.name);
    const std::string path = dir / "bad.npy";
    write_raw(path, c.file);
    const std::string msg = error_of([&] { io::read_npy(path); });
    check_message(msg, {"fevo: " + path + ": "});
    for (const auto& e : c.expect) check_message(msg, {e});
    check_message(error_of([&] { io::parse_npy(c.file.data(), c.file.size(), "buffer"); }), {"fevo: buffer: "});
  }
  // Every truncation of a valid file.
  const bytes valid = npy_bytes(2, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16);
  REQUIRE_NOTHROW(io::parse_npy(valid.data(), valid.size(), "valid"));
  for (std::size_t n = 0; n < valid.size(); ++n) {
    const bytes cut(valid.begin(), valid.begin() + std::ptrdiff_t(n));
    check_message(error_of([&] { io::parse_npy(cut.data(), cut.size(), "cut"); }), {"fevo: cut: "});
  }
  check_message(error_of([&] { io::read_npy(dir / "missing.npy"); }), {dir / "missing.npy", "No such file"});
  check_message(error_of([&] { io::read_npy(dir.path.string()); }), {dir.path.string(), "directory"});
}

TEST_CASE("malformed .npz archives and zip bombs", "[io][npz][malformed]") {
  temp_dir dir;
  const std::string path = dir / "bad.npz";
  bytes member;
  {
    const float v[6] = {1, 2, 3, 4, 5, 6};
    io::write_npy(dir / "m.npy", dtype::f32, {2, 3}, v);
    member = read_raw(dir / "m.npy");
  }
  const auto npz_error = [&](const bytes& archive, const io::npz_limits& lim = {}) {
    write_raw(path, archive);
    return error_of([&] { io::read_npz(path, lim); });
  };
  check_message(npz_error(to_bytes("this is not a zip archive at all")), {path, "not a valid .npz (zip) archive"});
  {
    bytes z = zip_bytes({{"a.npy", member}});
    z.resize(z.size() - 10);
    check_message(npz_error(z), {path, "not a valid .npz"});
  }
  check_message(npz_error(zip_bytes({{"a.txt", member}})), {path, "member 'a.txt'", "not a .npy array"});
  check_message(npz_error(zip_bytes({{"dir/", {}}})), {path, "not a .npy array"});
  {  // duplicate names: refused by libzip's consistency checks or by fevo
    const std::string m = npz_error(zip_bytes({{"a.npy", member}, {"a.npy", member}}));
    check_message(m, {path});
    INFO(m);
    CHECK((m.find("more than once") != std::string::npos || m.find("not a valid .npz") != std::string::npos));
  }
  {  // a member that is not a valid .npy
    bytes broken = member;
    broken.pop_back();
    check_message(npz_error(zip_bytes({{"w.npy", broken}})), {path, "member 'w.npy'", "truncated"});
  }
  {  // CRC mismatch
    zip_entry e{"w.npy", member};
    e.declared_crc = 12345;
    check_message(npz_error(zip_bytes({e})), {path, "member 'w.npy'", "CRC"});
    e.deflate = true;
    check_message(npz_error(zip_bytes({e})), {path, "member 'w.npy'", "CRC"});
  }
  {  // declares fewer bytes than it inflates to: read stops at the declared size + 1
    zip_entry e{"w.npy", member, true};
    e.declared_size = 64;
    check_message(npz_error(zip_bytes({e})), {path, "member 'w.npy'"});
  }
  {  // declares more bytes than it inflates to
    zip_entry e{"w.npy", member, true};
    e.declared_size = static_cast<long long>(member.size()) + 100;
    check_message(npz_error(zip_bytes({e})), {path, "member 'w.npy'"});
  }
  {  // declared size over the per-member limit, checked before any decompression
    io::npz_limits lim;
    lim.max_member_bytes = 100;
    check_message(npz_error(zip_bytes({{"w.npy", member}}), lim),
                  {path, "member 'w.npy'", "declares " + std::to_string(member.size()), "limit of 100", "zip bomb"});
    lim = {};
    lim.max_total_bytes = member.size() + 10;
    check_message(npz_error(zip_bytes({{"a.npy", member}, {"b.npy", member}}), lim), {path, "member 'b.npy'", "in all"});
    lim = {};
    lim.max_members = 1;
    check_message(npz_error(zip_bytes({{"a.npy", member}, {"b.npy", member}}), lim), {path, "2 members"});
  }
  {  // a real bomb: 16 MiB of zeros deflate to ~16 KiB; refused by the ratio limit
    zip_stream s;
    s.size = 16u << 20;
    s.compressed = deflate_zeros(s.size, s.crc);
    io::npz_limits lim;
    lim.ratio_floor_bytes = 1u << 20;
    check_message(npz_error(zip_bytes({{"bomb.npy", {}}}, {&s}), lim), {path, "member 'bomb.npy'", "ratio", "zip bomb"});
  }
  {  // the same with the default limits: 200 MiB of zeros in ~200 KiB
    zip_stream s;
    s.size = 200u << 20;
    s.compressed = deflate_zeros(s.size, s.crc);
    CHECK(s.compressed.size() < (1u << 20));
    check_message(npz_error(zip_bytes({{"bomb.npy", {}}}, {&s})), {path, "member 'bomb.npy'", "ratio", "zip bomb"});
    // Declaring a small size does not help: the read stops one byte past the declared size.
    zip_entry e{"bomb.npy", {}};
    e.declared_size = 1000;
    check_message(npz_error(zip_bytes({e}, {&s})), {path, "member 'bomb.npy'"});
  }
  {  // overlapping members (the trick of non-recursive zip bombs): each member's data holds the
     // next member's local header and data, so 6 members of ~1 KiB each fit in ~1.2 KiB.
    bytes payload(1000, 7);
    const bytes z = overlapping_zip({"a.npy", "b.npy", "c.npy", "d.npy", "e.npy", "f.npy"}, payload);
    const std::string m = npz_error(z);
    INFO(m);
    check_message(m, {path});
    CHECK((m.find("members overlap") != std::string::npos || m.find("not a valid .npz") != std::string::npos));
  }
}

// =================================================================================================
// Writers
// =================================================================================================

namespace {
std::vector<std::string> leftovers(const temp_dir& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(d.path))
    if (e.path().filename().string().find(fevo::detail::temp_marker) != std::string::npos)
      out.push_back(e.path().string());
  return out;
}

struct inject {
  explicit inject(const char* stage) { io::detail::inject_failure_at = stage; }
  ~inject() { io::detail::inject_failure_at.clear(); }
};
}  // namespace

TEST_CASE("writers: errors name the path and leave no file", "[io][writers]") {
  temp_dir dir;
  const float v[4] = {1, 2, 3, 4};
  const std::vector<io::named_tensor> one = {{"w", dtype::f32, {4}, v}};

  SECTION("non-existent directory") {
    const std::string p = dir / "no/such/dir/w.safetensors";
    check_message(error_of([&] { io::write_safetensors(p, one); }), {p, "No such file or directory"});
    check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, v); }), {p, "No such file or directory"});
    CHECK_FALSE(fs::exists(p));
  }
  SECTION("read-only directory") {
    std::string p;
    if (::geteuid() == 0) {
      p = "/proc/fevo-io-test.npy";  // root ignores permission bits; /proc refuses new files to all
    } else {
      fs::create_directory(dir.path / "ro");
      fs::permissions(dir.path / "ro", fs::perms::owner_read | fs::perms::owner_exec);
      p = dir / "ro/w.npy";
    }
    check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, v); }), {p, "cannot create a temporary file"});
    CHECK_FALSE(fs::exists(p));
  }
  SECTION("the target is a directory: the rename fails, the temporary file is removed") {
    fs::create_directory(dir.path / "target");
    fs::create_directory(dir.path / "target/sub");
    const std::string p = dir / "target";
    check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, v); }), {p, "rename"});
    CHECK(leftovers(dir).empty());
    CHECK(fs::is_directory(p));
  }
  SECTION("an injected failure at each stage: no file (or the old one intact), no temporary left") {
    const std::string p = dir / "w.safetensors";
    for (const char* stage : {"create", "write", "flush", "fsync", "close", "rename"}) {
      INFO("stage " << stage);
      {
        inject fail(stage);
        check_message(error_of([&] { io::write_safetensors(p, one); }), {p, "Input/output error"});
      }
      CHECK_FALSE(fs::exists(p));
      CHECK(leftovers(dir).empty());
    }
    // With an old file in place, a failed write keeps it intact.
    write_raw(p, std::string("old content"));
    for (const char* stage : {"write", "fsync", "rename"}) {
      inject fail(stage);
      check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, v); }), {p});
      CHECK(read_raw(p) == to_bytes("old content"));
    }
    CHECK(leftovers(dir).empty());
    {  // the directory sync fails after the rename: reported, and the file is complete
      inject fail("dirsync");
      check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, v); }), {p, "syncing its directory"});
    }
    CHECK(io::read_npy(p).shape == std::vector<std::uint64_t>{4});
  }
  SECTION("a real short write: RLIMIT_FSIZE makes write(2) fail with EFBIG part-way") {
    const std::string p = dir / "big.npy";
    std::vector<double> big(1 << 16, 1.5);  // 512 KiB
    struct rlimit old;
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    const std::string m1 = error_of([&] { io::write_npy(p, dtype::f64, {big.size()}, big.data()); });
    const std::string m2 = error_of([&] {
      io::write_safetensors(p, {{"w", dtype::f64, {big.size()}, big.data()}});
    });
    const std::string m3 = error_of([&] {  // a writer that ignores fwrite's result is caught at the flush
      io::atomic_write(p, [&](std::FILE* f) { std::fwrite(big.data(), 8, big.size(), f); });
    });
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    for (const auto& m : {m1, m2, m3}) check_message(m, {p, "File too large"});
    CHECK_FALSE(fs::exists(p));
    CHECK(leftovers(dir).empty());
  }
  SECTION("a writer callback that throws: its exception propagates, nothing is left") {
    const std::string p = dir / "s.csv";
    write_raw(p, std::string("old"));
    CHECK_THROWS_AS(io::atomic_write(p, [](std::FILE* f) {
                      std::fputs("partial,row\n", f);
                      throw std::runtime_error("writer failed");
                    }),
                    std::runtime_error);
    CHECK(read_raw(p) == to_bytes("old"));
    CHECK(leftovers(dir).empty());
  }
  SECTION("atomic_write replaces a file and respects the umask") {
    const std::string p = dir / "summary.csv";
    write_raw(p, std::string("old"));
    io::atomic_write(p, [&](std::FILE* f) {
      CHECK(leftovers(dir).size() == 1);  // the temporary file, named with the marker
      io::write_text(f, "layer,D\nconv1,0.5\n", p);
    });
    CHECK(read_raw(p) == to_bytes("layer,D\nconv1,0.5\n"));
    CHECK(leftovers(dir).empty());
    const mode_t mask = ::umask(022);
    ::umask(mask);
    struct ::stat st;
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == (0666 & ~mask));
    check_message(error_of([&] { io::atomic_write("", [](std::FILE*) {}); }), {"not a file name"});
    check_message(error_of([&] { io::atomic_write(dir / "x/", [](std::FILE*) {}); }), {"not a file name"});
  }
  SECTION("invalid tensors are refused before anything is written") {
    const std::string p = dir / "x.safetensors";
    check_message(error_of([&] { io::write_safetensors(p, {{"", dtype::f32, {4}, v}}); }), {p, "empty name"});
    check_message(error_of([&] { io::write_safetensors(p, {{"__metadata__", dtype::f32, {4}, v}}); }), {p, "__metadata__"});
    check_message(error_of([&] { io::write_safetensors(p, {{"w", dtype::f32, {4}, v}, {"w", dtype::f32, {4}, v}}); }),
                  {p, "tensor 'w'", "more than once"});
    check_message(error_of([&] { io::write_safetensors(p, {{"w", dtype::f32, {4}, nullptr}}); }), {p, "null pointer"});
    check_message(error_of([&] { io::write_safetensors(p, {{"w\xff", dtype::f32, {4}, v}}); }), {p, "not valid UTF-8"});
    check_message(error_of([&] { io::write_safetensors(p, one, {{"k", "\xc3"}}); }), {p, "not valid UTF-8"});
    check_message(error_of([&] { io::write_safetensors(p, {{"w", dtype::f32, {1ull << 62, 8}, v}}); }), {p, "overflows"});
    check_message(error_of([&] { io::write_npy(p, dtype::f8_e4m3, {4}, v); }), {p, "no type code"});
    check_message(error_of([&] { io::write_npy(p, dtype::f32, {4}, nullptr); }), {p, "null pointer"});
    CHECK_FALSE(fs::exists(p));
    CHECK(leftovers(dir).empty());
  }
}

// =================================================================================================
// Format detection and pickles
// =================================================================================================

TEST_CASE("detect_format: content decides; pickles are refused with how to convert them", "[io][format]") {
  temp_dir dir;
  const float v[4] = {1, 2, 3, 4};
  io::write_safetensors(dir / "a.safetensors", {{"w", dtype::f32, {4}, v}});
  io::write_npy(dir / "a.npy", dtype::f32, {4}, v);
  write_raw(dir / "a.npz", zip_bytes({{"w.npy", read_raw(dir / "a.npy")}}));
  CHECK(io::detect_format(dir / "a.safetensors") == io::file_format::safetensors);
  CHECK(io::detect_format(dir / "a.npy") == io::file_format::npy);
  CHECK(io::detect_format(dir / "a.npz") == io::file_format::npz);
  // Names do not matter for these formats.
  fs::copy_file(dir / "a.safetensors", dir / "model.bin");
  CHECK(io::detect_format(dir / "model.bin") == io::file_format::safetensors);
  fs::copy_file(dir / "a.npy", dir / "weights");
  CHECK(io::detect_format(dir / "weights") == io::file_format::npy);

  const std::string howto = "safetensors.torch.save_file(model.state_dict(), path)";
  for (const char* name : {"model.pt", "model.pth", "last.ckpt", "x.pkl", "MODEL.PT"}) {
    // Refused by name, whatever the content (even a valid safetensors file): never opened.
    fs::copy_file(dir / "a.safetensors", dir / name);
    check_message(error_of([&] { io::detect_format(dir / name); }), {dir / name, "pickle", "never unpickles", howto});
  }
  {  // legacy torch.save / plain pickle protocol 2-5, under any name
    write_raw(dir / "legacy.bin", bytes{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8});
    check_message(error_of([&] { io::detect_format(dir / "legacy.bin"); }), {"pickle", howto});
    write_raw(dir / "p5", bytes{0x80, 0x05, 0x95, 0x10, 0, 0, 0, 0, 0, 0, 0, '}', 0x94});
    check_message(error_of([&] { io::detect_format(dir / "p5"); }), {"pickle", howto});
  }
  {  // torch.save's zip format (archive/data.pkl ...), under any name
    write_raw(dir / "model.zip", zip_bytes({{"archive/data.pkl", to_bytes("\x80\x02}q\x00.")},
                                           {"archive/version", to_bytes("3\n")},
                                           {"archive/data/0", bytes(16, 0)}}));
    check_message(error_of([&] { io::detect_format(dir / "model.zip"); }), {dir / "model.zip", "pickle", howto});
  }
  write_raw(dir / "notes.txt", std::string("hello, this is a text file\n"));
  check_message(error_of([&] { io::detect_format(dir / "notes.txt"); }), {dir / "notes.txt", "unknown file format"});
  write_raw(dir / "tiny", std::string("ab"));
  check_message(error_of([&] { io::detect_format(dir / "tiny"); }), {"only 2 bytes"});
  check_message(error_of([&] { io::detect_format(dir / "missing"); }), {dir / "missing", "cannot open"});
  check_message(error_of([&] { io::detect_format(dir.path.string()); }), {"not a regular file"});
  // open_error_for_pickle is a value to throw
  const fevo::error e = io::open_error_for_pickle("x.pt");
  check_message(e.what(), {"x.pt", howto});
}

TEST_CASE("every reader recognises a pickle, not only detect_format", "[io][format]") {
  temp_dir dir;
  const std::string howto = "safetensors.torch.save_file(model.state_dict(), path)";
  // A legacy torch.save file read by each reader directly (not through detect_format): the
  // pickle's opcodes are not taken for a header length or a magic string.
  const bytes legacy{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, '}', 0x71, 0x00, '.'};
  write_raw(dir / "legacy.bin", legacy);
  check_message(error_of([&] { io::safetensors_file f(dir / "legacy.bin"); }), {dir / "legacy.bin", "pickle", howto});
  check_message(error_of([&] { (void)io::read_npy(dir / "legacy.bin"); }), {dir / "legacy.bin", "pickle", howto});
  // torch.save's zip format, read as safetensors or as .npz.
  write_raw(dir / "model.bin", zip_bytes({{"archive/data.pkl", to_bytes("\x80\x02}q\x00.")},
                                         {"archive/version", to_bytes("3\n")},
                                         {"archive/data/0", bytes(16, 0)}}));
  check_message(error_of([&] { io::safetensors_file f(dir / "model.bin"); }), {dir / "model.bin", "zip archive"});
  check_message(error_of([&] { (void)io::read_npz(dir / "model.bin"); }), {dir / "model.bin", "pickle", howto});
}

TEST_CASE("safetensors_file::at names the file and lists the tensors it has", "[io][safetensors]") {
  temp_dir dir;
  const float v[4] = {1, 2, 3, 4};
  io::write_safetensors(dir / "a.safetensors", {{"conv1.weight", dtype::f32, {1, 1, 2, 2}, v},
                                                {"conv2.weight", dtype::f32, {1, 1, 2, 2}, v}});
  const io::safetensors_file f(dir / "a.safetensors");
  CHECK(f.at("conv2.weight").name == "conv2.weight");
  CHECK(&f.at("conv1.weight") == f.find("conv1.weight"));
  CHECK(f.find("conv.weight") == nullptr);
  check_message(error_of([&] { (void)f.at("conv.weight"); }),
                {dir / "a.safetensors", "tensor 'conv.weight' is missing", "2 tensors", "'conv1.weight'", "'conv2.weight'"});
  // More than 20: the first 20 and how many more.
  std::vector<std::string> names;
  std::vector<io::named_tensor> many;
  for (int k = 0; k < 25; ++k) names.push_back("t" + std::to_string(100 + k));
  for (const auto& n : names) many.push_back({n, dtype::f32, {4}, v});
  io::write_safetensors(dir / "many.safetensors", many);
  const io::safetensors_file g(dir / "many.safetensors");
  check_message(error_of([&] { (void)g.at("x"); }), {"25 tensors", "'t119'", "... (5 more)"});
}

// =================================================================================================
// Oracle: files written by NumPy and the reference safetensors package (run by io.oracle)
// =================================================================================================

TEST_CASE("oracle: NumPy and safetensors files read exactly; fevo's files written back", "[.oracle]") {
  const char* dir_env = std::getenv("FEVO_IO_ORACLE_DIR");
  REQUIRE(dir_env != nullptr);
  const std::string dir = dir_env;
  const nlohmann::json manifest = nlohmann::json::parse(read_raw(dir + "/manifest.json"));
  const auto& entries = manifest.at("entries");
  REQUIRE(entries.size() > 50);

  std::map<std::string, std::unique_ptr<io::safetensors_file>> st_files;
  std::map<std::string, std::map<std::string, io::npy_array>> npz_files;
  // What fevo writes back: per output file, its tensors (safetensors) or its array (npy).
  std::map<std::string, std::vector<std::pair<nlohmann::json, bytes>>> out_st;
  nlohmann::json out_entries = nlohmann::json::array();
  fs::create_directories(dir + "/cpp");
  std::size_t checked = 0, values = 0;

  for (const auto& e : entries) {
    const std::string file = e.at("file"), fmt = e.at("format"), key = e.at("key"), dt = e.at("dtype");
    const std::string path = dir + "/" + file;
    INFO("file " << file << " key '" << key << "' dtype " << dt);
    io::npy_options opt;
    opt.void2_as_bfloat16 = e.value("void2", false);
    CHECK(io::format_name(io::detect_format(path)) == fmt);

    // Read it with fevo.
    dtype type = dtype::f32;
    std::vector<std::uint64_t> shape;
    const unsigned char* data = nullptr;
    std::size_t nbytes = 0;
    io::npy_array arr;
    if (fmt == "safetensors") {
      auto& f = st_files[path];
      if (!f) f = std::make_unique<io::safetensors_file>(path);
      const io::tensor_info* t = f->find(key);
      REQUIRE(t != nullptr);
      type = t->type, shape = t->shape, data = f->data(*t), nbytes = std::size_t(t->nbytes);
      if (e.contains("metadata")) CHECK(f->metadata() == e.at("metadata").get<std::map<std::string, std::string>>());
    } else if (fmt == "npy") {
      arr = io::read_npy(path, opt);
      CHECK(arr.fortran_order == e.value("fortran", false));
    } else {
      auto& z = npz_files[path];
      opt.void2_as_bfloat16 = true;  // the archive holds bf16 ('<V2') members next to the others
      if (z.empty()) z = io::read_npz(path, {}, opt);
      REQUIRE(z.count(key));
      arr = z.at(key);
    }
    if (fmt != "safetensors") type = arr.type, shape = arr.shape, data = arr.bytes.data(), nbytes = arr.bytes.size();
    CHECK(std::string(io::dtype_name(type)) == dt);
    CHECK(shape == e.at("shape").get<std::vector<std::uint64_t>>());

    // Every value, exactly (the dump is float64, exact for all four types).
    const bytes want = read_raw(dir + "/" + e.at("values").get<std::string>());
    const std::size_t n = want.size() / 8;
    REQUIRE(nbytes == n * io::dtype_size(type));
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) {
      double w, g = io::element_as_double(type, data, i);
      std::memcpy(&w, want.data() + 8 * i, 8);
      const bool ok = (std::isnan(w) && std::isnan(g)) || (w == g && std::signbit(w) == std::signbit(g));
      wrong += !ok;
    }
    CHECK(wrong == 0);
    values += n;
    // 4-D arrays also through a view (checks Fortran-order conversion and layouts end to end).
    if (shape.size() == 4 && n > 0)
      with_type(type, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        std::vector<T> scratch;
        const bytes copy(data, data + nbytes);
        if (fmt == "safetensors") {
          check_view(io::view_of<T>(*st_files[path], *st_files[path]->find(key), io::layout::oihw, scratch), copy, shape,
                     io::layout::oihw);
        } else {
          check_view(io::view_of<T>(arr, io::layout::oihw, scratch), copy, shape, io::layout::oihw);
        }
      });
    ++checked;

    // Write it back with fevo: safetensors files whole (with their metadata), arrays as .npy.
    const bytes copy(data, data + nbytes);
    nlohmann::json out = e;
    if (fmt == "safetensors") {
      out_st[file].push_back({e, copy});
    } else {
      const std::string name = fmt == "npz" ? file + "." + key + ".npy" : file;
      io::write_npy(dir + "/cpp/" + name, type, shape, copy.data());
      out["file"] = name;
      out["format"] = "npy";
      out_entries.push_back(out);
    }
  }
  for (const auto& [file, list] : out_st) {
    std::vector<io::named_tensor> tensors;
    std::map<std::string, std::string> meta;
    for (const auto& [e, b] : list) {
      dtype t = dtype::f32;
      REQUIRE(io::dtype_from_name(e.at("dtype").get<std::string>(), t));
      tensors.push_back({e.at("key").get<std::string>(), t, e.at("shape").get<std::vector<std::uint64_t>>(), b.data()});
      if (e.contains("metadata")) meta = e.at("metadata").get<std::map<std::string, std::string>>();
      out_entries.push_back(e);
    }
    io::write_safetensors(dir + "/cpp/" + file, tensors, meta);
  }
  io::atomic_write(dir + "/cpp/manifest.json", [&](std::FILE* f) {
    io::write_text(f, nlohmann::json({{"entries", out_entries}}).dump(1), dir + "/cpp/manifest.json");
  });
  std::printf("io.oracle: fevo read %zu arrays (%zu values) exactly; wrote them back to %s/cpp\n", checked, values,
              dir.c_str());
}
