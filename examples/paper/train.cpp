// The training run: data, model, Adam with the paper's schedule, fevo's recorder on every conv
// layer, the relative weight change of every conv layer (weight_change.csv), the first-layer
// series, snapshots, Fig. 3, Table IV and the run directory's files.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/version.h>

#include <fevo/cpu.hpp>
#include <fevo/io/atomic_write.hpp>
#include <fevo/io/npy.hpp>
#include <fevo/io/safetensors.hpp>
#include <fevo/record/recorder.hpp>
#include <fevo/torch.hpp>

#include "driver.hpp"

namespace fevo_paper {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

void write_text_file(const std::string& path, const std::string& text) {
  fevo::io::atomic_write(path, [&](std::FILE* f) { fevo::io::write_bytes(f, text.data(), text.size(), path); });
}

std::string fevo_version() {
  return std::to_string(FEVO_VERSION_MAJOR) + "." + std::to_string(FEVO_VERSION_MINOR) + "." +
         std::to_string(FEVO_VERSION_PATCH);
}

std::string clock_text(double s) {
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else
    std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  return b;
}

/// Conv weights as safetensors (layer names, float32, on the host), with __metadata__ step.
void write_weights(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                   std::int64_t step) {
  std::vector<torch::Tensor> host;  // keeps the copies alive while writing
  std::vector<fevo::io::named_tensor> out;
  for (const auto& [name, t] : tensors) {
    torch::Tensor h = t.detach().to(torch::kCPU).contiguous();
    fevo::io::named_tensor n;
    n.name = name;
    switch (h.scalar_type()) {
      case torch::kFloat32: n.type = fevo::io::dtype::f32; break;
      case torch::kFloat64: n.type = fevo::io::dtype::f64; break;
      case torch::kInt64: n.type = fevo::io::dtype::i64; break;
      default: h = h.to(torch::kFloat32); n.type = fevo::io::dtype::f32; break;
    }
    for (auto d : h.sizes()) n.shape.push_back(std::uint64_t(d));
    n.data = h.data_ptr();
    host.push_back(h);
    out.push_back(n);
  }
  fevo::io::write_safetensors(path, out, {{"step", std::to_string(step)}});
}

/// One feature map (H x W floats) min-max normalised to 8 bits.
std::vector<std::uint8_t> to_gray8(const torch::Tensor& map) {
  torch::Tensor m = map.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const float lo = m.min().item<float>(), hi = m.max().item<float>();
  std::vector<std::uint8_t> out(std::size_t(m.numel()), 0);
  const float* p = m.data_ptr<float>();
  if (hi > lo)
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::uint8_t(std::lround(255.0f * (p[i] - lo) / (hi - lo)));
  return out;
}

/// Fig. 3: feature maps after ReLU of the chosen first-layer filters on one test image.
void write_fig3(paper_net& net, const torch::Tensor& image, const std::vector<int>& filters, std::int64_t step,
                const std::string& dir, std::string& index) {
  torch::NoGradGuard ng;
  const bool was = net.is_training();
  net.eval();
  const torch::Tensor maps = net.first_feature_maps(image)[0];  // O x H x W
  net.train(was);
  for (int f : filters) {
    const auto px = to_gray8(maps[f]);
    const std::string name = "step_" + std::to_string(step) + "_filter_" + std::to_string(f) + ".png";
    write_png(dir + "/" + name, int(maps.size(2)), int(maps.size(1)), 1, px.data());
    index += std::to_string(step) + "," + std::to_string(f) + "," + name + "\n";
  }
}

}  // namespace

int run(const run_options& o_in) {
  run_options o = o_in;
  const auto wall0 = clock_type::now();
  // ---- settings -------------------------------------------------------------------------------
  if (o.out.empty()) throw usage_error("--out RUNDIR is required");
  if (o.batch < 1 || o.batch > 65536) throw usage_error("--batch " + std::to_string(o.batch) + " is not in [1, 65536]");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) throw usage_error("--lr must be positive and finite");
  if (o.record_every < 1) throw usage_error("--record-every must be at least 1");
  if (o.snapshot_every < 0) throw usage_error("--snapshot-every must be 0 (off) or positive");
  if (o.zero_draws < 2) throw usage_error("--zero-draws must be at least 2 (a standard deviation needs two draws)");
  if (o.steps < 0 || o.epochs < 1) throw usage_error("--steps must be positive, --epochs at least 1");
  if (o.eval_batch < 1) throw usage_error("--eval-batch must be at least 1");
  if (o.threads < 0) throw usage_error("--threads must be 0 (all) or positive");
  if (o.tau < 0) o.tau = o.lr;
  if (!std::isfinite(o.tau)) throw usage_error("--tau must be finite");
  if (o.device != "cpu" && o.device != "cuda") throw usage_error("--device '" + o.device + "' is not cpu or cuda");
  if (o.device == "cuda" && !torch::cuda::is_available())
    throw usage_error("--device cuda: this LibTorch build has no CUDA (or no GPU is visible); use --device cpu");
  const bool folder = o.data != "fashion-mnist";
  if (o.size == 0) o.size = folder ? 224 : 32;
  {
    // The architecture check comes first: a bad model or size is reported before data is read.
    model_config probe;
    probe.arch = o.model;
    probe.width = o.width;
    probe.input_size = o.size;
    probe.in_channels = folder ? 3 : 1;
    probe.classes = 10;
    (void)make_model(probe);
  }
  std::error_code ec;
  if (fs::exists(fs::path(o.out) / "config.json", ec) || fs::exists(fs::path(o.out) / "metrics.csv", ec))
    throw usage_error(o.out + ": already holds a run (config.json or metrics.csv); choose another --out or remove it");
  fs::create_directories(fs::path(o.out) / "fig3", ec);
  if (ec) throw usage_error(o.out + ": cannot create the run directory: " + ec.message());
  if (o.snapshot_every > 0) {
    fs::create_directories(fs::path(o.out) / "snapshots", ec);
    if (ec) throw usage_error(o.out + "/snapshots: cannot create: " + ec.message());
  }
  // Subnormal floats flushed to zero (PyTorch's torch.set_flush_denormal(True)), set before the
  // first parallel region so that every worker thread inherits it: the Adam moments of filters
  // that stop learning decay into subnormal numbers, which make CPU steps many times slower.
  const bool flush_denormal = at::globalContext().setFlushDenormal(true);
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  torch::manual_seed(o.seed);
  const torch::Device device(o.device == "cuda" ? torch::kCUDA : torch::kCPU);
  std::printf("fevo_paper: model %s, width %g, input %d, seed %llu, device %s, %d threads\n", o.model.c_str(),
              o.width, o.size, static_cast<unsigned long long>(o.seed), o.device.c_str(), threads);

  // ---- data -----------------------------------------------------------------------------------
  const dataset data = folder ? load_image_folder(o.data, std::size_t(o.size), o.train_images, o.test_images, o.seed)
                              : load_fashion_mnist(o.fashion_mnist_dir, std::size_t(o.size), o.train_images,
                                                   o.test_images, o.seed);
  const std::size_t n_train = data.train.count();
  if (n_train == 0 || data.test.count() == 0) throw usage_error(o.data + ": no training or no test image");
  std::printf("fevo_paper: %s: %zu training and %zu test images, %zu classes\n", data.name.c_str(), n_train,
              data.test.count(), data.classes());

  // ---- model and schedule ---------------------------------------------------------------------
  model_config mc;
  mc.arch = o.model;
  mc.width = o.width;
  mc.input_size = o.size;
  mc.in_channels = int(data.train.channels);
  mc.classes = int(data.classes());
  std::shared_ptr<paper_net> net = make_model(mc);
  net->to(device);
  net->train();

  const std::int64_t per_epoch = std::max<std::int64_t>(1, std::int64_t(n_train) / o.batch);
  const std::int64_t steps = o.steps > 0 ? o.steps : per_epoch * o.epochs;
  std::vector<std::int64_t> halve = o.lr_halve_steps;
  if (halve.empty() && !o.no_lr_halving)  // the paper: after 25 epochs, then every 10
    for (std::int64_t e = o.halve_after_epochs; e * per_epoch < steps; e += o.halve_every_epochs)
      halve.push_back(e * per_epoch);
  for (auto h : halve)
    if (h < 1) throw usage_error("--lr-halve-steps: step " + std::to_string(h) + " is not positive");
  std::sort(halve.begin(), halve.end());
  halve.erase(std::unique(halve.begin(), halve.end()), halve.end());
  std::vector<std::int64_t> halve_done;
  for (auto h : halve)
    if (h < steps) halve_done.push_back(h);
  const std::set<std::int64_t> halve_set(halve_done.begin(), halve_done.end());

  // ---- config.json ----------------------------------------------------------------------------
  nlohmann::json cfg;
  cfg["model"] = o.model;
  cfg["width"] = o.width;
  cfg["input_size"] = o.size;
  cfg["dataset"] = data.name;
  cfg["classes"] = data.classes();
  cfg["class_names"] = data.class_names;
  cfg["in_channels"] = data.train.channels;
  cfg["train_images"] = n_train;
  cfg["test_images"] = data.test.count();
  cfg["steps"] = steps;
  cfg["steps_per_epoch"] = per_epoch;
  cfg["epochs"] = double(steps) / double(per_epoch);
  cfg["batch"] = o.batch;
  cfg["optimizer"] = "adam";
  cfg["lr"] = o.lr;
  cfg["lr_halve_steps"] = halve_done;
  cfg["tau"] = o.tau;
  cfg["record_every"] = o.record_every;
  cfg["snapshot_every"] = o.snapshot_every;
  cfg["zero_draws"] = o.zero_draws;
  cfg["seed"] = o.seed;
  cfg["device"] = o.device;
  cfg["threads"] = threads;
  cfg["flush_denormal"] = flush_denormal;
  cfg["versions"] = {{"fevo", fevo_version()}, {"libtorch", TORCH_VERSION}};
  cfg["table3"] = net->table3();
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& c : net->convs())
    layers.push_back({{"name", c.name}, {"shape", c.conv->weight.sizes().vec()}});
  cfg["conv_layers"] = layers;
  cfg["data_dir"] = folder ? o.data : o.fashion_mnist_dir;
  write_text_file(o.out + "/config.json", cfg.dump(2) + "\n");

  // ---- the recorder: every conv layer, views of the live weights ------------------------------
  // CUDA weights are recorded from host mirrors refreshed before each record (the recorder here is
  // the host one); CPU weights are watched in place, zero-copy.
  const bool mirror = device.is_cuda();
  std::vector<torch::Tensor> mirrors;
  fevo::record::recorder_options ro;
  ro.out_dir = o.out;
  ro.tau = o.tau;
  ro.per_filter_series = true;
  ro.tensorboard = true;
  ro.resume = false;
  fevo::record::recorder<float> rec(ro, fevo::cpu::par.threads(threads));
  for (const auto& c : net->convs()) {
    torch::Tensor w = c.conv->weight;
    if (mirror) {
      mirrors.push_back(w.detach().to(torch::kCPU).contiguous());
      w = mirrors.back();
    }
    rec.add_layer(c.name, fevo::from_torch<const float>(w));
  }
  auto refresh_mirrors = [&] {
    if (!mirror) return;
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < mirrors.size(); ++i) mirrors[i].copy_(net->convs()[i].conv->weight.detach());
  };
  std::map<std::string, filter_stats> stats;
  for (const auto& c : net->convs()) {
    filter_stats s;
    s.D_sum.assign(std::size_t(c.conv->weight.size(0)), 0.0);
    s.Z_one.assign(s.D_sum.size(), 0);
    stats[c.name] = s;
  }

  // First-layer series (Fig. 1) and snapshots.
  const torch::Tensor& w1 = net->convs().front().conv->weight;
  const std::size_t w1_size = std::size_t(w1.numel());
  std::vector<float> first_series;
  std::vector<std::int64_t> first_steps;
  auto keep_first = [&](std::int64_t step) {
    const torch::Tensor h = w1.detach().to(torch::kCPU).contiguous();
    first_series.insert(first_series.end(), h.data_ptr<float>(), h.data_ptr<float>() + w1_size);
    first_steps.push_back(step);
  };
  std::vector<std::pair<std::string, torch::Tensor>> conv_weights;
  for (const auto& c : net->convs()) conv_weights.emplace_back(c.name, c.conv->weight);
  double snapshot_seconds = 0;
  auto snapshot = [&](std::int64_t step) {
    const auto t = clock_type::now();
    write_weights(o.out + "/snapshots/step_" + std::to_string(step) + ".safetensors", conv_weights, step);
    snapshot_seconds += seconds_since(t);
  };

  // Fig. 3: one seeded test image and five seeded first-layer filters.
  std::mt19937_64 fig_rng(o.seed ^ 0xf163ULL);
  const std::size_t fig_image = std::uniform_int_distribution<std::size_t>(0, data.test.count() - 1)(fig_rng);
  std::vector<int> fig_filters(std::size_t(w1.size(0)));
  std::iota(fig_filters.begin(), fig_filters.end(), 0);
  std::shuffle(fig_filters.begin(), fig_filters.end(), fig_rng);
  fig_filters.resize(std::min<std::size_t>(5, fig_filters.size()));
  const torch::Tensor fig_x = make_batch(data.test, {fig_image}, device).first;
  const std::string fig_dir = o.out + "/fig3";
  std::string fig_index = "step,filter,file\n";
  {
    const std::size_t c = data.test.channels, s = data.test.size;
    std::vector<std::uint8_t> hwc(c * s * s);
    const std::uint8_t* chw = data.test.image(fig_image);
    for (std::size_t ch = 0; ch < c; ++ch)
      for (std::size_t p = 0; p < s * s; ++p) hwc[p * c + ch] = chw[ch * s * s + p];
    write_png(fig_dir + "/input.png", int(s), int(s), int(c), hwc.data());
  }
  write_fig3(*net, fig_x, fig_filters, 0, fig_dir, fig_index);

  // ---- training -------------------------------------------------------------------------------
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(o.lr));
  double lr = o.lr;
  std::FILE* log = std::fopen((o.out + "/train_log.csv").c_str(), "w");
  if (!log) throw usage_error(o.out + "/train_log.csv: cannot create");
  std::fputs("step,epoch,loss,accuracy,lr,time_s\n", log);

  rec.start(0);
  keep_first(0);
  // Agrawal et al.'s relative weight change, in the driver's own pass over the conv weights.
  weight_change_log weight_change(conv_weights, 0);
  double weight_change_seconds = 0;
  if (o.snapshot_every > 0) snapshot(0);

  std::mt19937_64 rng(o.seed);
  std::vector<std::size_t> order(n_train);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::size_t cursor = n_train;  // start a new epoch at once
  double train_seconds = 0, record_seconds = 0;
  const auto t_begin = clock_type::now();
  const std::int64_t print_every = std::max<std::int64_t>(1, steps / 20);
  std::vector<std::size_t> idx;
  const bool tty = isatty(fileno(stdout));
  for (std::int64_t step = 1; step <= steps; ++step) {
    const auto t0 = clock_type::now();
    if (cursor + std::size_t(o.batch) > n_train) {  // new epoch (the last partial batch is dropped)
      std::shuffle(order.begin(), order.end(), rng);
      cursor = 0;
    }
    idx.assign(order.begin() + std::ptrdiff_t(cursor),
               order.begin() + std::ptrdiff_t(std::min(n_train, cursor + std::size_t(o.batch))));
    cursor += idx.size();
    auto [x, y] = make_batch(data.train, idx, device);
    opt.zero_grad();
    const torch::Tensor logits = net->forward(x);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
    loss.backward();
    opt.step();
    const double loss_v = loss.item<double>();
    const double acc = logits.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
    train_seconds += seconds_since(t0);
    const double used_lr = lr;
    if (halve_set.count(step)) {
      lr *= 0.5;
      for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
    }

    if (step % o.record_every == 0 || step == steps) {
      const auto tr = clock_type::now();
      refresh_mirrors();
      rec.record(step);
      for (std::size_t l = 0; l < net->convs().size(); ++l) {
        const fevo::filter_results& fr = rec.last_filters()[l];
        filter_stats& s = stats[net->convs()[l].name];
        for (std::size_t i = 0; i < fr.size(); ++i) {
          s.D_sum[i] += fr.D[i];
          if (fr.zero_channels[i] == fr.channels) ++s.Z_one[i];
        }
        ++s.records;
      }
      const auto tw = clock_type::now();
      weight_change.record(step);
      weight_change_seconds += seconds_since(tw);
      keep_first(step);
      record_seconds += seconds_since(tr);
    }
    if (o.snapshot_every > 0 && (step % o.snapshot_every == 0 || step == steps)) snapshot(step);

    const double elapsed = seconds_since(t_begin);
    const std::int64_t epoch = (step - 1) / per_epoch + 1;
    std::fprintf(log, "%lld,%lld,%.9g,%.9g,%.9g,%.6f\n", static_cast<long long>(step), static_cast<long long>(epoch),
                 loss_v, acc, used_lr, elapsed);
    if (!o.quiet && (step % print_every == 0 || step == steps || step == 1)) {
      const double left = elapsed / double(step) * double(steps - step);
      std::printf("%sstep %lld/%lld  epoch %lld  loss %.4f  acc %.3f  lr %.3g  left %s%s", tty ? "\r" : "",
                  static_cast<long long>(step), static_cast<long long>(steps), static_cast<long long>(epoch), loss_v,
                  acc, used_lr, clock_text(left).c_str(), tty ? "   " : "\n");
      std::fflush(stdout);
    }
  }
  if (tty && !o.quiet) std::printf("\n");
  if (std::fclose(log) != 0) throw usage_error(o.out + "/train_log.csv: write failed");
  rec.close();
  weight_change.write(o.out + "/weight_change.csv");

  // ---- outputs after training -----------------------------------------------------------------
  {
    const auto& sz = w1.sizes();
    fevo::io::write_npy(o.out + "/first_layer.npy", fevo::io::dtype::f32,
                        {std::uint64_t(first_steps.size()), std::uint64_t(sz[0]), std::uint64_t(sz[1]),
                         std::uint64_t(sz[2]), std::uint64_t(sz[3])},
                        first_series.data());
    fevo::io::write_npy(o.out + "/first_layer_steps.npy", fevo::io::dtype::i64, {std::uint64_t(first_steps.size())},
                        first_steps.data());
  }
  write_fig3(*net, fig_x, fig_filters, steps, fig_dir, fig_index);
  write_text_file(fig_dir + "/index.csv", fig_index);
  write_weights(o.out + "/final.safetensors", named_tensors(*net), steps);

  const auto t4 = clock_type::now();
  const double baseline = evaluate(*net, data.test, device, o.eval_batch);
  std::printf("fevo_paper: test accuracy %.4f; Table IV (%d random draws per layer)...\n", baseline, o.zero_draws);
  std::fflush(stdout);
  const auto rows = run_table4(*net, data.test, device, stats, o.zero_draws, o.seed, o.eval_batch, baseline);
  write_table4(o.out, rows);
  const double table4_seconds = seconds_since(t4);

  const double overhead = train_seconds > 0 ? record_seconds / train_seconds : 0.0;
  nlohmann::json sum;
  sum["final_test_accuracy"] = baseline;
  sum["train_seconds"] = train_seconds;
  sum["record_seconds"] = record_seconds;
  sum["recording_overhead"] = overhead;
  sum["steps"] = steps;
  sum["records"] = rec.records();
  sum["train_seconds_with_recording"] = train_seconds + record_seconds;
  sum["seconds_per_step"] = train_seconds / double(steps);
  sum["seconds_per_record"] = rec.records() ? record_seconds / double(rec.records()) : 0.0;
  sum["weight_change_seconds"] = weight_change_seconds;  // part of record_seconds
  sum["snapshot_seconds"] = snapshot_seconds;
  sum["table4_seconds"] = table4_seconds;
  sum["wall_seconds"] = seconds_since(wall0);
  write_text_file(o.out + "/summary.json", sum.dump(2) + "\n");
  std::printf("fevo_paper: %lld steps: training %.2f s without recording, %.2f s with recording (%llu records, "
              "%.2f ms each, %.2f ms of it the relative weight change): overhead %.3f%% of training time\n",
              static_cast<long long>(steps), train_seconds, train_seconds + record_seconds,
              static_cast<unsigned long long>(rec.records()), rec.records() ? 1e3 * record_seconds / double(rec.records()) : 0.0,
              rec.records() ? 1e3 * weight_change_seconds / double(rec.records()) : 0.0, 100.0 * overhead);
  std::printf("fevo_paper: Table IV in %.1f s; run written to %s\n", table4_seconds, o.out.c_str());
  return 0;
}

}  // namespace fevo_paper
