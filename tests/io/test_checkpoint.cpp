// Checkpoint directories as snapshots (<fevo/io/checkpoint.hpp>, <fevo/io/snapshot.hpp>): a
// sharded checkpoint (model.safetensors.index.json) is one snapshot over its shards, one with
// model.safetensors a snapshot of that file; steps from trainer_state.json or the directory's
// name; series of checkpoint-N/ directories; every malformed index refused, naming the file.
#include "../support.hpp"
#include "io_support.hpp"

#include <nlohmann/json.hpp>

#include <fevo/io/snapshot.hpp>

#include <map>
#include <string>
#include <vector>

using namespace fevo_io_test;
namespace io = fevo::io;
using io::dtype;

namespace {

struct tensor_spec {
  std::string name;
  dtype type;
  std::vector<std::uint64_t> shape;
  std::string shard;  ///< the file it goes to
};

/// Writes a sharded checkpoint into `dir`: each tensor with random bytes in its shard, and an
/// index mapping every tensor to its shard (index_map overrides the map written; total_size, when
/// not negative, overrides the true total). Returns the bytes of each tensor by name.
std::map<std::string, bytes> write_sharded(const std::string& dir, const std::vector<tensor_spec>& specs,
                                           fevo_test::rng& r, const std::map<std::string, std::string>* index_map = nullptr,
                                           long long total_size = -1) {
  fs::create_directories(dir);
  std::map<std::string, bytes> data;
  std::map<std::string, std::vector<const tensor_spec*>> by_shard;
  std::uint64_t total = 0;
  for (const auto& t : specs) {
    std::uint64_t n = 1;
    for (auto d : t.shape) n *= d;
    data[t.name] = random_elements(t.type, std::size_t(n), r);
    by_shard[t.shard].push_back(&t);
    total += data[t.name].size();
  }
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& [shard, ts] : by_shard) {
    std::vector<io::named_tensor> nt;
    for (const tensor_spec* t : ts) {
      nt.push_back({t->name, t->type, t->shape, data[t->name].data()});
      wm[t->name] = shard;
    }
    io::write_safetensors(dir + "/" + shard, nt, {{"format", "pt"}});
  }
  if (index_map) {
    wm = nlohmann::json::object();
    for (const auto& [k, v] : *index_map) wm[k] = v;
  }
  nlohmann::json ix = {{"metadata", {{"total_size", total_size >= 0 ? std::uint64_t(total_size) : total}}},
                       {"weight_map", wm}};
  write_raw(dir + "/model.safetensors.index.json", ix.dump(2));
  return data;
}

const std::vector<tensor_spec> three_shards = {
    {"conv1.weight", dtype::f32, {4, 3, 3, 3}, "model-00001-of-00003.safetensors"},
    {"conv1.bias", dtype::f32, {4}, "model-00001-of-00003.safetensors"},
    {"conv2.weight", dtype::bf16, {8, 4, 3, 3}, "model-00002-of-00003.safetensors"},
    {"fc.weight", dtype::f32, {10, 8}, "model-00003-of-00003.safetensors"},
    {"fc.bias", dtype::f32, {10}, "model-00003-of-00003.safetensors"},
};

}  // namespace

TEST_CASE("snapshot: a sharded checkpoint is one snapshot over its shards", "[io][checkpoint]") {
  auto r = fevo_test::rng_for("sharded checkpoint");
  temp_dir dir;
  const std::string ck = dir / "checkpoint-300";
  const auto data = write_sharded(ck, three_shards, r);

  const io::snapshot s(ck);
  CHECK(s.sharded());
  CHECK(s.path() == ck);
  CHECK(s.format() == io::file_format::safetensors);
  CHECK(s.mapped());
  REQUIRE(s.sources().size() == 3);
  CHECK(s.sources()[0].path == ck + "/model-00001-of-00003.safetensors");
  CHECK(s.sources()[2].path == ck + "/model-00003-of-00003.safetensors");
  CHECK(s.metadata().empty());
  CHECK(s.step() == 300);  // from the directory's name
  // Shard by shard, each in the order of its data (write_safetensors orders by dtype size, then name).
  std::vector<std::string> names;
  for (const auto& e : s.entries()) names.push_back(e.name);
  REQUIRE(names.size() == 5);
  CHECK(s.at("conv2.weight").source == 1);
  CHECK(s.at("fc.weight").source == 2);
  CHECK(s.at("conv2.weight").nbytes == 8 * 4 * 9 * 2);
  for (std::size_t k = 1; k < names.size(); ++k)
    CHECK(s.at(names[k - 1]).source <= s.at(names[k]).source);

  std::vector<float> scratch;
  const auto v = s.view<float>("conv1.weight", io::layout::oihw, scratch);
  CHECK(std::memcmp(v.data_handle(), data.at("conv1.weight").data(), data.at("conv1.weight").size()) == 0);
  std::vector<fevo::bfloat16> sb;
  const auto b = s.view<fevo::bfloat16>("conv2.weight", io::layout::oihw, sb);
  CHECK(b.extent(0) == 8);
  CHECK(std::memcmp(b.data_handle(), data.at("conv2.weight").data(), data.at("conv2.weight").size()) == 0);
  const auto fc = s.view<float>("fc.weight", io::layout::oihw, scratch, true);
  CHECK(fc.extent(0) == 10);
  CHECK(fc.extent(1) == 8);
  s.evict("conv1.weight");  // pages dropped; the view reads them back
  CHECK(std::memcmp(v.data_handle(), data.at("conv1.weight").data(), data.at("conv1.weight").size()) == 0);
  // Tensors of several shards in one call: each shard's ranges go to its own file.
  s.evict(std::vector<std::string>{"fc.weight", "conv2.weight", "conv1.weight"});
  CHECK(std::memcmp(v.data_handle(), data.at("conv1.weight").data(), data.at("conv1.weight").size()) == 0);
  CHECK(std::memcmp(b.data_handle(), data.at("conv2.weight").data(), data.at("conv2.weight").size()) == 0);

  // read_header lists the same tensors, from the shards' headers alone.
  const auto h = io::snapshot::read_header(ck);
  CHECK(h.sharded);
  CHECK(h.step == 300);
  REQUIRE(h.sources.size() == 3);
  REQUIRE(h.entries.size() == s.entries().size());
  for (std::size_t k = 0; k < h.entries.size(); ++k) {
    CHECK(h.entries[k].name == s.entries()[k].name);
    CHECK(h.entries[k].source == s.entries()[k].source);
    CHECK(h.entries[k].shape == s.entries()[k].shape);
  }

  // Only the shards of the tensors wanted.
  const io::snapshot part(ck, {"fc.weight"});
  REQUIRE(part.sources().size() == 1);
  CHECK(part.sources()[0].path == ck + "/model-00003-of-00003.safetensors");
  CHECK(part.find("conv1.weight") == nullptr);
  CHECK(part.find("fc.bias") != nullptr);
  check_message(error_of([&] { io::snapshot x(ck, {"nope.weight"}); }),
                {ck + "/model.safetensors.index.json", "tensor 'nope.weight' is missing"});

  // The index and each shard, as a series of processes would check them.
  const io::shard_index ix = io::read_shard_index(ck);
  REQUIRE(ix.shards.size() == 3);
  CHECK(ix.tensor_count() == 5);
  CHECK(ix.total_size.has_value());
  std::uint64_t total = 0;
  for (std::size_t k = 0; k < ix.shards.size(); ++k)
    for (const auto& e : io::snapshot::read_shard(ix, k)) {
      CHECK(e.source == k);
      total += e.nbytes;
    }
  CHECK(total == *ix.total_size);
}

TEST_CASE("snapshot: checkpoint steps, trainer_state.json first", "[io][checkpoint]") {
  auto r = fevo_test::rng_for("checkpoint steps");
  temp_dir dir;
  write_sharded(dir / "checkpoint-100", three_shards, r);
  CHECK(io::snapshot::step_of(dir / "checkpoint-100") == 100);
  CHECK(io::snapshot::step_of(dir / "checkpoint-100/") == 100);
  write_raw(dir / "checkpoint-100/trainer_state.json", std::string(R"({"global_step": 120, "log_history": []})"));
  CHECK(io::snapshot::step_of(dir / "checkpoint-100") == 120);
  CHECK(io::snapshot(dir / "checkpoint-100").step() == 120);
  CHECK(io::snapshot::read_header(dir / "checkpoint-100").step == 120);
  write_raw(dir / "checkpoint-100/trainer_state.json", std::string(R"({"epoch": 1.5})"));  // no global_step
  CHECK(io::snapshot::step_of(dir / "checkpoint-100") == 100);
  write_raw(dir / "checkpoint-100/trainer_state.json", std::string(R"({"global_step": -4})"));
  check_message(error_of([&] { io::snapshot::step_of(dir / "checkpoint-100"); }),
                {dir / "checkpoint-100/trainer_state.json", "global_step is -4, not a non-negative integer"});
  write_raw(dir / "checkpoint-100/trainer_state.json", std::string(R"({"global_step": 5, "global_step": 6})"));
  check_message(error_of([&] { io::snapshot::step_of(dir / "checkpoint-100"); }),
                {dir / "checkpoint-100/trainer_state.json", "key 'global_step' appears twice"});
  write_raw(dir / "checkpoint-100/trainer_state.json", std::string("{\"global_step\": 5"));
  check_message(error_of([&] { io::snapshot::step_of(dir / "checkpoint-100"); }),
                {dir / "checkpoint-100/trainer_state.json", "not valid JSON"});

  // An unsharded checkpoint: model.safetensors; its __metadata__ step, else the name.
  fs::create_directory(dir.path / "ckpt.7");
  const float v[4] = {1, 2, 3, 4};
  io::write_safetensors(dir / "ckpt.7/model.safetensors", {{"w", dtype::f32, {4, 1, 1, 1}, v}});
  CHECK(io::snapshot::step_of(dir / "ckpt.7") == 7);  // a directory's name keeps its "extension"
  const io::snapshot one(dir / "ckpt.7");
  CHECK_FALSE(one.sharded());
  REQUIRE(one.sources().size() == 1);
  CHECK(one.sources()[0].path == dir / "ckpt.7/model.safetensors");
  CHECK(io::snapshot::read_header(dir / "ckpt.7").sources == std::vector<std::string>{dir / "ckpt.7/model.safetensors"});
  io::write_safetensors(dir / "ckpt.7/model.safetensors", {{"w", dtype::f32, {4, 1, 1, 1}, v}}, {{"step", "70"}});
  CHECK(io::snapshot::step_of(dir / "ckpt.7") == 70);
  write_raw(dir / "ckpt.7/trainer_state.json", std::string(R"({"global_step": 700})"));
  CHECK(io::snapshot(dir / "ckpt.7").step() == 700);

  // A directory that is no checkpoint, opened as a snapshot.
  fs::create_directory(dir.path / "plain");
  check_message(error_of([&] { io::snapshot x(dir / "plain"); }),
                {dir / "plain", "not a checkpoint", "model.safetensors.index.json"});
}

TEST_CASE("make_series: checkpoint-N directories are a series, ordered by step", "[io][checkpoint]") {
  auto r = fevo_test::rng_for("checkpoint series");
  temp_dir dir;
  const std::string out = dir / "output";
  for (int step : {1000, 200, 30}) write_sharded(out + "/checkpoint-" + std::to_string(step), three_shards, r);
  write_raw(out + "/checkpoint-30/trainer_state.json", std::string(R"({"global_step": 3000})"));  // wins
  write_raw(out + "/README.md", std::string("not a snapshot"));
  fs::create_directory(out + "/runs");  // the Trainer's TensorBoard directory: not a checkpoint
  const auto s = io::make_series({out});
  REQUIRE(s.size() == 3);
  CHECK(s[0].path == out + "/checkpoint-200");
  CHECK(s[0].step == 200);
  CHECK(s[1].path == out + "/checkpoint-1000");
  CHECK(s[2].path == out + "/checkpoint-30");
  CHECK(s[2].step == 3000);
  // A checkpoint directory named alone is one snapshot; with another, a series.
  const auto two = io::make_series({out + "/checkpoint-1000", out + "/checkpoint-200"});
  REQUIRE(two.size() == 2);
  CHECK(two[0].step == 200);
  // Two checkpoints with one step.
  write_raw(out + "/checkpoint-200/trainer_state.json", std::string(R"({"global_step": 1000})"));
  check_message(error_of([&] { io::make_series({out}); }), {"step 1000 is also the step of"});
  // A checkpoint directory without a step.
  write_sharded(dir / "final", three_shards, r);
  check_message(error_of([&] { io::make_series({dir / "final"}); }),
                {dir / "final", "cannot tell its training step", "global_step"});
  // A directory with neither.
  fs::create_directory(dir.path / "empty");
  check_message(error_of([&] { io::make_series({dir / "empty"}); }),
                {dir / "empty", "no snapshot file", "no checkpoint directory"});
}

TEST_CASE("sharded checkpoint: every malformed index is refused, naming the file", "[io][checkpoint]") {
  auto r = fevo_test::rng_for("malformed index");
  temp_dir dir;
  const std::string shard1 = "model-00001-of-00002.safetensors", shard2 = "model-00002-of-00002.safetensors";
  const std::vector<tensor_spec> two = {{"a.weight", dtype::f32, {2, 2, 1, 1}, shard1},
                                        {"b.weight", dtype::bf16, {3, 2, 1, 1}, shard2}};
  int n = 0;
  // Opening the snapshot, reading its header alone: both refuse, with the same message.
  const auto refused = [&](const std::string& ck, std::initializer_list<std::string> parts) {
    const std::string m = error_of([&] { io::snapshot s(ck); });
    check_message(m, parts);
    CHECK(error_of([&] { io::snapshot::read_header(ck); }) == m);
  };
  const auto fresh = [&](const std::map<std::string, std::string>* map = nullptr, long long total = -1) {
    const std::string ck = dir / ("ck_" + std::to_string(++n));
    write_sharded(ck, two, r, map, total);
    return ck;
  };
  const auto index_of = [](const std::string& ck) { return ck + "/model.safetensors.index.json"; };

  SECTION("shard names that leave the directory") {
    for (const std::string& bad : std::vector<std::string>{"../" + shard1, "/etc/passwd", "sub/" + shard1, "..", ".", "", "a\\b.safetensors"}) {
      INFO("shard name '" << bad << "'");
      const std::map<std::string, std::string> map = {{"a.weight", bad}, {"b.weight", shard2}};
      const std::string ck = fresh(&map);
      refused(ck, {index_of(ck), "tensor 'a.weight' maps to '" + bad + "'", "not a plain file name"});
    }
    // A link out of the directory; a link inside it is fine.
    const std::string ck = fresh();
    fs::rename(ck + "/" + shard1, dir / "outside.safetensors");
    fs::create_symlink(dir / "outside.safetensors", ck + "/" + shard1);
    refused(ck, {index_of(ck), "shard '" + shard1 + "' is a link out of the checkpoint directory"});
    fs::remove(ck + "/" + shard1);
    fs::rename(dir / "outside.safetensors", ck + "/real.safetensors");
    fs::create_symlink("real.safetensors", ck + "/" + shard1);
    CHECK(io::snapshot(ck).entries().size() == 2);
  }
  SECTION("a shard the index names is missing, or not a file") {
    const std::string ck = fresh();
    fs::remove(ck + "/" + shard2);
    refused(ck, {index_of(ck), "shard '" + shard2 + "' (of tensor 'b.weight') is missing"});
    fs::create_directory(ck + "/" + shard2);
    refused(ck, {index_of(ck), "shard '" + shard2 + "' is not a regular file"});
  }
  SECTION("a tensor the index maps to a shard that lacks it") {
    const std::map<std::string, std::string> map = {{"a.weight", shard1}, {"b.weight", shard2}, {"c.weight", shard1}};
    const std::string ck = fresh(&map);
    refused(ck, {ck + "/" + shard1, "tensor 'c.weight' is missing", index_of(ck), "maps it to this shard"});
  }
  SECTION("a tensor in two shards") {
    const std::string ck = fresh();
    // shard 2 also holds a.weight (and the index maps a.weight to shard 1)
    const float v[4] = {1, 2, 3, 4};
    const std::uint16_t w[6] = {1, 2, 3, 4, 5, 6};
    io::write_safetensors(ck + "/" + shard2, {{"a.weight", dtype::f32, {2, 2, 1, 1}, v},
                                               {"b.weight", dtype::bf16, {3, 2, 1, 1}, w}});
    refused(ck, {ck + "/" + shard2, "holds tensor 'a.weight'", "maps to " + ck + "/" + shard1,
                 "in its own shard and in no other"});
  }
  SECTION("a tensor in a shard that the index does not list") {
    const std::map<std::string, std::string> map = {{"a.weight", shard1}};  // b.weight's shard not in the map
    const std::string ck = fresh(&map);
    // shard2 is not named by the index: never opened. Put b.weight next to a.weight instead.
    const float v[4] = {1, 2, 3, 4};
    const std::uint16_t w[6] = {1, 2, 3, 4, 5, 6};
    io::write_safetensors(ck + "/" + shard1, {{"a.weight", dtype::f32, {2, 2, 1, 1}, v},
                                               {"b.weight", dtype::bf16, {3, 2, 1, 1}, w}});
    refused(ck, {ck + "/" + shard1, "holds tensor 'b.weight'", "does not list"});
  }
  SECTION("a total_size that lies") {
    const std::string ck = fresh(nullptr, 17);
    refused(ck, {index_of(ck), "metadata total_size is 17 bytes, but the tensors of its 2 shards hold 28 bytes"});
    // Absent or null: nothing to check.
    write_raw(index_of(ck), std::string(R"({"weight_map": {"a.weight": ")" + shard1 + R"(", "b.weight": ")" + shard2 + R"("}})"));
    CHECK(io::snapshot(ck).entries().size() == 2);
    write_raw(index_of(ck), std::string(R"({"metadata": {"total_size": null}, "weight_map": {"a.weight": ")" + shard1 +
                                        R"(", "b.weight": ")" + shard2 + R"("}})"));
    CHECK(io::snapshot::read_header(ck).entries.size() == 2);
    write_raw(index_of(ck), std::string(R"({"metadata": {"total_size": "28"}, "weight_map": {"a.weight": ")" + shard1 +
                                        R"(", "b.weight": ")" + shard2 + R"("}})"));
    refused(ck, {index_of(ck), "metadata total_size is \"28\", not a non-negative integer"});
  }
  SECTION("the index itself: not JSON, no weight_map, a tensor listed twice, a name that is no string") {
    const std::string ck = fresh();
    const auto with_index = [&](const std::string& text, std::initializer_list<std::string> parts) {
      write_raw(index_of(ck), text);
      refused(ck, parts);
    };
    with_index("{\"weight_map\": ", {index_of(ck), "not valid JSON"});
    with_index("[1, 2]", {index_of(ck), "not a JSON object"});
    with_index(R"({"metadata": {}})", {index_of(ck), "no \"weight_map\""});
    with_index(R"({"weight_map": []})", {index_of(ck), "\"weight_map\" is not an object"});
    with_index(R"({"weight_map": {}})", {index_of(ck), "\"weight_map\" is empty"});
    with_index(R"({"weight_map": {"a.weight": ")" + shard1 + R"(", "a.weight": ")" + shard2 + R"(", "b.weight": ")" +
                   shard2 + R"("}})",
               {index_of(ck), "key 'a.weight' appears twice"});
    with_index(R"({"weight_map": {"a.weight": 3}})", {index_of(ck), "tensor 'a.weight' maps to 3, not a file name"});
    with_index(R"({"metadata": [], "weight_map": {"a.weight": "x"}})", {index_of(ck), "\"metadata\" is not an object"});
    with_index(std::string("{\"weight_map\": {\"a\xff\": \"x\"}}"), {index_of(ck), "not valid JSON"});
  }
  SECTION("a shard that is not a valid safetensors file") {
    const std::string ck = fresh();
    bytes cut = read_raw(ck + "/" + shard2);
    cut.resize(cut.size() - 1);
    write_raw(ck + "/" + shard2, cut);
    refused(ck, {ck + "/" + shard2});
    write_raw(ck + "/" + shard2, std::string("\x80\x02}q\x00.", 6));
    refused(ck, {ck + "/" + shard2, "pickle"});
  }
}
