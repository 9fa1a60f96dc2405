// fevo::io::snapshot and make_series: every way a snapshot opens (safetensors mapped, .npy and
// .npz loaded), views of every float dtype against the bytes written, at() and its message, the
// refusals (pickles, a missing file, a corrupt one), the step rules, and the series: directories
// expanded, files ordered by step, duplicate steps and files without a step refused.
#include "../support.hpp"
#include "io_support.hpp"

#include <fevo/io/snapshot.hpp>

#include <map>
#include <random>
#include <string>
#include <vector>

using namespace fevo_io_test;
namespace io = fevo::io;
using io::dtype;

namespace {

const dtype float_types[] = {dtype::f16, dtype::bf16, dtype::f32, dtype::f64};

/// Element (a, b, c, d) of C-order data of a 4-D shape equals v(a, b, c, d), bit for bit.
template <class T>
bool view_matches(const fevo::filter_view<const T>& v, dtype t, const bytes& data,
                  const std::vector<std::uint64_t>& s) {
  const std::size_t sz = io::dtype_size(t);
  for (std::size_t a = 0; a < s[0]; ++a)
    for (std::size_t b = 0; b < s[1]; ++b)
      for (std::size_t c = 0; c < s[2]; ++c)
        for (std::size_t d = 0; d < s[3]; ++d) {
          const std::size_t k = std::size_t(((a * s[1] + b) * s[2] + c) * s[3] + d);
          const T x = v(a, b, c, d);
          if (std::memcmp(&x, data.data() + k * sz, sz) != 0) return false;
        }
  return true;
}

/// A .npy member of an .npz archive: the bytes write_npy writes.
bytes npy_member(const temp_dir& dir, dtype t, const std::vector<std::uint64_t>& shape, const bytes& data) {
  const std::string p = dir / "member.npy";
  io::write_npy(p, t, shape, data.data());
  bytes b = read_raw(p);
  fs::remove(p);
  return b;
}

/// A small safetensors file with one f32 tensor and the given metadata.
void small_safetensors(const std::string& path, const std::map<std::string, std::string>& meta = {}) {
  static const float v[4] = {1, 2, 3, 4};
  io::write_safetensors(path, {{"w", dtype::f32, {4, 1, 1, 1}, v}}, meta);
}

const std::string pickle_howto = "safetensors.torch.save_file(model.state_dict(), path)";

}  // namespace

TEST_CASE("snapshot: a safetensors file is mapped; tensors in data order, metadata, zero-copy views",
          "[io][snapshot]") {
  auto r = fevo_test::rng_for("snapshot safetensors");
  temp_dir dir;
  for (dtype t : float_types) {
    INFO("dtype " << io::dtype_name(t));
    const std::vector<std::uint64_t> conv = {4, 3, 2, 2}, fc = {5, 6}, bias = {4};
    const bytes dc = random_elements(t, 4 * 3 * 2 * 2, r), df = random_elements(t, 30, r),
                db = random_elements(t, 4, r);
    const std::map<std::string, std::string> meta = {{"step", "40"}, {"note", "x"}};
    const std::string path = dir / (std::string("s_") + io::dtype_name(t) + ".safetensors");
    io::write_safetensors(path, {{"conv.weight", t, conv, dc.data()}, {"fc.weight", t, fc, df.data()},
                                 {"conv.bias", t, bias, db.data()}},
                          meta);

    const io::snapshot s(path);
    CHECK(s.path() == path);
    CHECK(s.format() == io::file_format::safetensors);
    REQUIRE(s.sources().size() == 1);
    CHECK(s.sources()[0].path == path);
    CHECK(s.sources()[0].format == io::file_format::safetensors);
    CHECK(s.mapped());
    CHECK(s.metadata() == meta);
    CHECK(s.step() == 40);
    // The entries are the file's tensors, in the order of their data.
    const io::safetensors_file f(path);
    REQUIRE(s.entries().size() == f.tensors().size());
    for (std::size_t k = 0; k < f.tensors().size(); ++k) {
      const auto& e = s.entries()[k];
      CHECK(e.name == f.tensors()[k].name);
      CHECK(e.type == t);
      CHECK(e.shape == f.tensors()[k].shape);
      CHECK(e.nbytes == f.tensors()[k].nbytes);
      CHECK(e.source == 0);
      CHECK(s.find(e.name) == &e);
      CHECK(&s.at(e.name) == &e);
    }
    CHECK(s.find("conv") == nullptr);
    CHECK(s.at("fc.weight").shape == fc);

    io::visit_element(t, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      std::vector<T> scratch;
      const auto v = s.view<T>("conv.weight", io::layout::oihw, scratch);
      CHECK(v.extents() == std::array<std::size_t, 4>{4, 3, 2, 2});
      CHECK(view_matches(v, t, dc, conv));
      CHECK(scratch.empty());  // zero-copy: the view points into the mapping
      // Dropping the pages keeps the view valid: they are read again from the file.
      s.evict("conv.weight");
      s.evict("no such tensor");  // a no-op
      CHECK(view_matches(v, t, dc, conv));
      // A list in one call (neighbours merged into one range, unknown names skipped): the same.
      s.evict(std::vector<std::string>{"fc.weight", "no such tensor", "conv.weight"});
      s.evict(std::vector<std::string>{});
      CHECK(view_matches(v, t, dc, conv));
      // The same cut in parts, for threads to share: each part alone, any number of parts.
      for (std::size_t parts = 1; parts <= 3; ++parts)
        for (std::size_t part = 0; part < parts; ++part) s.evict_part({"fc.weight", "conv.weight"}, part, parts);
      CHECK(view_matches(v, t, dc, conv));
      CHECK_THROWS_AS(s.evict_part({"conv.weight"}, 2, 2), fevo::error);
      CHECK_THROWS_AS(s.evict_part({"conv.weight"}, 0, 0), fevo::error);
      // HWIO: the same tensor read as [H, W, I, O]: strides, still zero-copy.
      std::vector<T> scratch2;
      const auto h = s.view<T>("conv.weight", io::layout::hwio, scratch2);
      CHECK(h.extents() == std::array<std::size_t, 4>{2, 2, 4, 3});
      CHECK(scratch2.empty());
      const T x = h(1, 0, 3, 2);  // [H, W, I, O] = [3, 2, 0, 1]
      const std::size_t sz = io::dtype_size(t);
      CHECK(std::memcmp(&x, dc.data() + (((3 * 3 + 2) * 2 + 0) * 2 + 1) * sz, sz) == 0);
      // 2-D only when asked for, as N x C x 1 x 1.
      CHECK_THROWS_AS(s.view<T>("fc.weight", io::layout::oihw, scratch2), fevo::error);
      const auto w2 = s.view<T>("fc.weight", io::layout::oihw, scratch2, true);
      CHECK(w2.extents() == std::array<std::size_t, 4>{5, 6, 1, 1});
      CHECK(view_matches(w2, t, df, {5, 6, 1, 1}));
      check_message(error_of([&] { s.view<T>("nope", io::layout::oihw, scratch2); }),
                    {path, "tensor 'nope' is missing"});
      return 0;
    });
    // The element type must be the tensor's.
    std::vector<double> wrong;
    if (t != dtype::f64) CHECK_THROWS_AS(s.view<double>("conv.weight", io::layout::oihw, wrong), fevo::error);
  }
}

TEST_CASE("snapshot::evict_part: the parts cut the ranges end to end, in equal bytes", "[io][snapshot]") {
  std::mt19937_64 rng(fevo_test::seed());
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<io::detail::byte_range> ranges;
    std::uint64_t total = 0, at = 0;
    const int n = int(rng() % 5);  // none too
    for (int k = 0; k < n; ++k) {
      at += rng() % 3 * 4096;  // gaps, or none
      const std::uint64_t len = 1 + rng() % (trial % 2 ? 10 : 1u << 24);
      ranges.push_back({std::size_t(rng() % 2), at, at + len});
      at += len;
      total += len;
    }
    const std::size_t parts = 1 + std::size_t(rng() % 7);
    // Laid end to end, the parts are the ranges: each byte in exactly one part, in order.
    std::vector<io::detail::byte_range> joined;
    for (std::size_t p = 0; p < parts; ++p) {
      std::uint64_t bytes = 0;
      for (const auto& r : io::detail::slice_ranges(ranges, p, parts)) {
        CHECK(r.b < r.e);
        bytes += r.e - r.b;
        if (!joined.empty() && joined.back().src == r.src && joined.back().e == r.b)
          joined.back().e = r.e;
        else
          joined.push_back(r);
      }
      CHECK(bytes >= total / parts);  // equal shares, to a byte
      CHECK(bytes <= total / parts + 1);
    }
    std::vector<io::detail::byte_range> want;  // the ranges, those that touch merged
    for (const auto& r : ranges)
      if (!want.empty() && want.back().src == r.src && want.back().e == r.b)
        want.back().e = r.e;
      else
        want.push_back(r);
    REQUIRE(joined.size() == want.size());
    for (std::size_t k = 0; k < want.size(); ++k) {
      CHECK(joined[k].src == want[k].src);
      CHECK(joined[k].b == want[k].b);
      CHECK(joined[k].e == want[k].e);
    }
  }
}

TEST_CASE("snapshot: a .npy file is one tensor, named \"array\", loaded", "[io][snapshot]") {
  auto r = fevo_test::rng_for("snapshot npy");
  temp_dir dir;
  const std::vector<std::uint64_t> shape = {3, 2, 1, 2};
  const bytes data = random_elements(dtype::f32, 12, r);
  const std::string path = dir / "w_300.npy";
  io::write_npy(path, dtype::f32, shape, data.data());

  const io::snapshot s(path);
  CHECK(s.format() == io::file_format::npy);
  REQUIRE(s.sources().size() == 1);
  CHECK(s.sources()[0].format == io::file_format::npy);
  CHECK_FALSE(s.mapped());
  CHECK(s.metadata().empty());
  CHECK(s.step() == 300);
  REQUIRE(s.entries().size() == 1);
  const auto& e = s.entries()[0];
  CHECK(e.name == "array");
  CHECK(e.type == dtype::f32);
  CHECK(e.shape == shape);
  CHECK(e.nbytes == 48);
  std::vector<float> scratch;
  const auto v = s.view<float>("array", io::layout::oihw, scratch);
  CHECK(view_matches(v, dtype::f32, data, shape));
  s.evict("array");  // loaded: a no-op
  CHECK(view_matches(v, dtype::f32, data, shape));
  check_message(error_of([&] { s.at("w"); }), {path, "tensor 'w' is missing", "'array'"});
}

TEST_CASE("snapshot: an .npz archive is one tensor per member, by name", "[io][snapshot]") {
  auto r = fevo_test::rng_for("snapshot npz");
  temp_dir dir;
  const bytes a = random_elements(dtype::f64, 2 * 3 * 1 * 1, r), b = random_elements(dtype::f16, 4 * 2 * 2 * 2, r);
  const std::string path = dir / "epoch7.npz";
  write_raw(path, zip_bytes({{"b.weight.npy", npy_member(dir, dtype::f16, {4, 2, 2, 2}, b), true},
                             {"a.weight.npy", npy_member(dir, dtype::f64, {2, 3, 1, 1}, a)}}));

  const io::snapshot s(path);
  CHECK(s.format() == io::file_format::npz);
  CHECK_FALSE(s.mapped());
  CHECK(s.metadata().empty());
  CHECK(s.step() == 7);
  REQUIRE(s.entries().size() == 2);
  CHECK(s.entries()[0].name == "a.weight");  // by name
  CHECK(s.entries()[1].name == "b.weight");
  CHECK(s.entries()[1].type == dtype::f16);
  CHECK(s.entries()[1].shape == std::vector<std::uint64_t>{4, 2, 2, 2});
  CHECK(s.entries()[1].nbytes == 64);
  std::vector<double> sd;
  CHECK(view_matches(s.view<double>("a.weight", io::layout::oihw, sd), dtype::f64, a, {2, 3, 1, 1}));
  std::vector<fevo::half> sh;
  CHECK(view_matches(s.view<fevo::half>("b.weight", io::layout::oihw, sh), dtype::f16, b, {4, 2, 2, 2}));
}

TEST_CASE("snapshot::at: the file, the name, and (up to 20 of) the tensors it has", "[io][snapshot]") {
  temp_dir dir;
  const float v[1] = {0};
  {
    const std::string p = dir / "three.safetensors";
    io::write_safetensors(p, {{"a", dtype::f32, {1}, v}, {"b", dtype::f32, {1}, v}, {"c", dtype::f32, {1}, v}});
    const io::snapshot s(p);
    check_message(error_of([&] { s.at("conv1.weight"); }),
                  {"fevo: " + p + ": tensor 'conv1.weight' is missing; it has 3 tensors: 'a', 'b', 'c'"});
  }
  {
    const std::string p = dir / "many.safetensors";
    std::vector<std::string> names;
    std::vector<io::named_tensor> tensors;
    for (int k = 0; k < 25; ++k) names.push_back("layer" + std::to_string(100 + k));
    for (const auto& n : names) tensors.push_back({n, dtype::f32, {1}, v});
    io::write_safetensors(p, tensors);
    const io::snapshot s(p);
    const std::string m = error_of([&] { s.at("x"); });
    check_message(m, {p, "tensor 'x' is missing", "it has 25 tensors", "(5 more)"});
    std::size_t listed = 0;
    for (const auto& e : s.entries()) listed += m.find("'" + e.name + "'") != std::string::npos;
    CHECK(listed == 20);
  }
  {
    const std::string p = dir / "empty.safetensors";
    io::write_safetensors(p, {});
    const io::snapshot s(p);
    CHECK(s.entries().empty());
    check_message(error_of([&] { s.at("w"); }), {p, "tensor 'w' is missing", "holds no tensor"});
  }
}

TEST_CASE("snapshot: pickles, missing, unknown and corrupt files are refused, naming the file",
          "[io][snapshot]") {
  temp_dir dir;
  small_safetensors(dir / "a.safetensors");
  fs::copy_file(dir / "a.safetensors", dir / "model.pt");  // refused by its name, never opened
  check_message(error_of([&] { io::snapshot s(dir / "model.pt"); }),
                {dir / "model.pt", "pickle", "never unpickles", pickle_howto});
  write_raw(dir / "legacy_3.bin", bytes{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20});
  check_message(error_of([&] { io::snapshot s(dir / "legacy_3.bin"); }), {dir / "legacy_3.bin", "pickle"});
  write_raw(dir / "torch.zip", zip_bytes({{"archive/data.pkl", to_bytes("\x80\x02}q\x00.")},
                                         {"archive/version", to_bytes("3\n")}}));
  check_message(error_of([&] { io::snapshot s(dir / "torch.zip"); }), {dir / "torch.zip", "pickle"});
  check_message(error_of([&] { io::snapshot s(dir / "missing.safetensors"); }),
                {dir / "missing.safetensors", "cannot open", "No such file or directory"});
  write_raw(dir / "notes.txt", std::string("not a snapshot\n"));
  check_message(error_of([&] { io::snapshot s(dir / "notes.txt"); }), {dir / "notes.txt", "unknown file format"});
  bytes cut = read_raw(dir / "a.safetensors");
  cut.resize(cut.size() - 3);
  write_raw(dir / "cut.safetensors", cut);
  check_message(error_of([&] { io::snapshot s(dir / "cut.safetensors"); }), {dir / "cut.safetensors"});
  // The step is read only when asked for: a file with a bad __metadata__ "step" still opens.
  small_safetensors(dir / "bad_7.safetensors", {{"step", "seven"}});
  const io::snapshot s(dir / "bad_7.safetensors");
  CHECK(s.entries().size() == 1);
  check_message(error_of([&] { (void)s.step(); }),
                {dir / "bad_7.safetensors", "__metadata__: step 'seven' is not an integer"});
}

TEST_CASE("snapshot steps: __metadata__ \"step\", else the last number in the file's name", "[io][snapshot]") {
  SECTION("step_from_name") {
    CHECK(io::step_from_name("runs/a/ckpt-1200.safetensors") == 1200);
    CHECK(io::step_from_name("run3/step_0010.npy") == 10);  // the directory's digits do not count
    CHECK(io::step_from_name("x1y22.npz") == 22);           // the last run of digits
    CHECK(io::step_from_name("model.safetensors") == std::nullopt);
    CHECK(io::step_from_name("run7/model.safetensors") == std::nullopt);
    CHECK(io::step_from_name("s_999999999999999999.npy") == 999999999999999999LL);   // 18 digits
    CHECK(io::step_from_name("s_1000000000000000000.npy") == std::nullopt);          // 19: too long
  }
  SECTION("parse_step") {
    CHECK(io::parse_step("12", "x") == 12);
    CHECK(io::parse_step("-5", "x") == -5);
    check_message(error_of([] { io::parse_step("1e3", "--reference"); }), {"--reference: step '1e3' is not an integer"});
    check_message(error_of([] { io::parse_step("", "f: __metadata__"); }), {"f: __metadata__: step '' is not an integer"});
    check_message(error_of([] { io::parse_step("99999999999999999999", "x"); }), {"is not an integer"});
  }
  SECTION("snapshot::step_of and snapshot::step") {
    temp_dir dir;
    small_safetensors(dir / "s_999.safetensors", {{"step", "5"}});  // the metadata wins
    small_safetensors(dir / "s_998.safetensors", {{"note", "no step"}});
    small_safetensors(dir / "plain.safetensors");
    const float v[1] = {0};
    io::write_npy(dir / "w_12.npy", dtype::f32, {1}, v);
    CHECK(io::snapshot::step_of(dir / "s_999.safetensors") == 5);
    CHECK(io::snapshot::step_of(dir / "s_998.safetensors") == 998);
    CHECK(io::snapshot::step_of(dir / "plain.safetensors") == std::nullopt);
    CHECK(io::snapshot::step_of(dir / "w_12.npy") == 12);
    for (const char* n : {"s_999.safetensors", "s_998.safetensors", "plain.safetensors", "w_12.npy"})
      CHECK(io::snapshot(dir / n).step() == io::snapshot::step_of(dir / n));
    check_message(error_of([&] { io::snapshot::step_of(dir / "none_4.pt"); }), {"none_4.pt", "pickle"});
  }
}

TEST_CASE("make_series: directories expanded, files ordered by step, duplicates refused", "[io][snapshot]") {
  temp_dir dir;
  fs::create_directory(dir.path / "run");
  small_safetensors(dir / "run/ckpt-30.safetensors");
  small_safetensors(dir / "run/first.safetensors", {{"step", "0"}});
  small_safetensors(dir / "run/zz_2000.safetensors", {{"step", "10"}});  // the metadata decides
  const float v[4] = {1, 2, 3, 4};
  io::write_npy(dir / "run/w_20.npy", dtype::f32, {4, 1, 1, 1}, v);
  write_raw(dir / "run/notes.txt", std::string("not a snapshot"));  // not a snapshot name: skipped
  fs::create_directory(dir.path / "run/sub.safetensors");          // not a file: skipped
  small_safetensors(dir / "extra_45.safetensors");

  const auto series = io::make_series({dir / "run", dir / "extra_45.safetensors"});
  REQUIRE(series.size() == 5);
  const std::vector<std::pair<std::string, std::int64_t>> want = {
      {dir / "run/first.safetensors", 0}, {dir / "run/zz_2000.safetensors", 10}, {dir / "run/w_20.npy", 20},
      {dir / "run/ckpt-30.safetensors", 30}, {dir / "extra_45.safetensors", 45}};
  for (std::size_t k = 0; k < want.size(); ++k) {
    CHECK(series[k].path == want[k].first);
    CHECK(series[k].step == want[k].second);
  }
  // With headers: the same series, and each snapshot's header in its order.
  std::vector<io::snapshot::header> headers;
  const auto with = io::make_series({dir / "run", dir / "extra_45.safetensors"}, &headers);
  REQUIRE(with.size() == series.size());
  REQUIRE(headers.size() == series.size());
  for (std::size_t k = 0; k < series.size(); ++k) {
    CHECK(with[k].path == series[k].path);
    CHECK(with[k].step == series[k].step);
    const auto h = io::snapshot::read_header(series[k].path);
    CHECK(headers[k].path == h.path);
    CHECK(headers[k].step == h.step);
    REQUIRE(headers[k].entries.size() == h.entries.size());
    for (std::size_t e = 0; e < h.entries.size(); ++e) {
      CHECK(headers[k].entries[e].name == h.entries[e].name);
      CHECK(headers[k].entries[e].shape == h.entries[e].shape);
    }
  }
  // Files in any order come out by step.
  const auto two = io::make_series({dir / "extra_45.safetensors", dir / "run/first.safetensors"});
  REQUIRE(two.size() == 2);
  CHECK(two[0].step == 0);
  CHECK(two[1].step == 45);

  // Two files with one step: refused, naming both.
  small_safetensors(dir / "dup_30.safetensors");
  check_message(error_of([&] { io::make_series({dir / "run", dir / "dup_30.safetensors"}); }),
                {dir / "dup_30.safetensors", "step 30 is also the step of", dir / "run/ckpt-30.safetensors"});
  // A file without a step.
  small_safetensors(dir / "nostep.safetensors");
  check_message(error_of([&] { io::make_series({dir / "nostep.safetensors"}); }),
                {dir / "nostep.safetensors", "cannot tell its training step"});
  // A bad __metadata__ step.
  small_safetensors(dir / "bad_8.safetensors", {{"step", "8.5"}});
  check_message(error_of([&] { io::make_series({dir / "bad_8.safetensors"}); }),
                {dir / "bad_8.safetensors", "__metadata__: step '8.5' is not an integer"});
  // A directory without snapshots; a missing file; a pickle in a directory.
  fs::create_directory(dir.path / "empty");
  check_message(error_of([&] { io::make_series({dir / "empty"}); }), {dir / "empty", "holds no snapshot file"});
  check_message(error_of([&] { io::make_series({dir / "missing_3.safetensors"}); }),
                {dir / "missing_3.safetensors", "cannot open"});
  fs::create_directory(dir.path / "torch");
  write_raw(dir / "torch/model_5.pt", std::string("anything"));
  check_message(error_of([&] { io::make_series({dir / "torch"}); }), {dir / "torch/model_5.pt", "pickle", pickle_howto});
  CHECK(io::is_snapshot_name("model.safetensors"));
  CHECK(io::is_snapshot_name("m.npz"));
  CHECK(io::is_snapshot_name("pytorch_model.bin"));
  CHECK_FALSE(io::is_snapshot_name("notes.txt"));
  CHECK_FALSE(io::is_snapshot_name(".npy"));  // an extension alone is no name
}

TEST_CASE("snapshot: moved, its views stay valid", "[io][snapshot]") {
  temp_dir dir;
  small_safetensors(dir / "a_1.safetensors", {{"step", "1"}});
  io::snapshot a(dir / "a_1.safetensors");
  std::vector<float> scratch;
  const auto v = a.view<float>("w", io::layout::oihw, scratch);
  io::snapshot b(std::move(a));
  CHECK(b.path() == dir / "a_1.safetensors");
  CHECK(b.step() == 1);
  CHECK(v(2, 0, 0, 0) == 3.0f);  // the mapping moved with the snapshot, not copied
  const auto w = b.view<float>("w", io::layout::oihw, scratch);
  CHECK(w.data_handle() == v.data_handle());
}
