// fevo_paper: trains VGG-16 or ResNet-50 and records how their conv filters evolve (the paper's
// section IV). See README.md ("The paper driver") for the flags and the files of a run.
//
//   fevo_paper --model vgg16|resnet50 --data fashion-mnist|DIR --out RUNDIR [--width 0.125]
//              [--size 32] [--steps N | --epochs E] [--batch 64] [--lr 2e-4]
//              [--lr-halve-steps a,b,...|none] [--record-every 10] [--tau T] [--seed S]
//              [--device cpu|cuda] [--train-images N] [--test-images N] [--snapshot-every K]
//              [--zero-draws 5] [--threads N]
//
// Exit status 0 on success; 2 on bad input or usage, with one line on stderr; 1 on other failures.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include <fevo/error.hpp>

#include "driver.hpp"

namespace {

std::vector<std::int64_t> parse_steps(const std::string& text) {
  std::vector<std::int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 1)
      throw fevo_paper::usage_error("--lr-halve-steps: '" + item + "' is not a positive step number");
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fevo_paper::run_options o;
  CLI::App app{"fevo_paper: train VGG-16 or ResNet-50 and record how their conv filters evolve"};
  std::string halve_text;
  app.add_option("--model", o.model, "vgg16 or resnet50")->required();
  app.add_option("--data", o.data, "fashion-mnist, or an ImageFolder directory (one folder per class)")->required();
  app.add_option("--out", o.out, "the run directory (must not hold a run)")->required();
  app.add_option("--fashion-mnist-dir", o.fashion_mnist_dir, "where the Fashion-MNIST .gz files are");
  app.add_option("--width", o.width, "channel multiplier (filters = round(count * width), at least 8)");
  app.add_option("--size", o.size, "input size in pixels (default 32 for Fashion-MNIST, 224 for a folder)");
  auto* steps = app.add_option("--steps", o.steps, "training steps");
  app.add_option("--epochs", o.epochs, "training epochs when --steps is not given (default 40)")->excludes(steps);
  app.add_option("--batch", o.batch, "batch size (default 64)");
  app.add_option("--lr", o.lr, "initial learning rate of Adam (default 2e-4)");
  app.add_option("--lr-halve-steps", halve_text,
                 "steps after which the learning rate is halved, comma-separated, or none "
                 "(default: after 25 epochs, then every 10)");
  app.add_option("--record-every", o.record_every, "record D, S, Z every N steps (default 10)");
  app.add_option("--tau", o.tau, "threshold of S and Z (default: the initial learning rate)");
  app.add_option("--seed", o.seed, "seed of every random choice (default 1)");
  app.add_option("--device", o.device, "cpu or cuda");
  app.add_option("--threads", o.threads, "CPU threads (default: all)");
  app.add_option("--train-images", o.train_images, "use at most N training images (default: all)");
  app.add_option("--test-images", o.test_images, "use at most N test images (default: all)");
  app.add_option("--snapshot-every", o.snapshot_every, "save the conv weights every K steps as safetensors");
  app.add_option("--zero-draws", o.zero_draws, "random draws per layer in Table IV (default 5)");
  app.add_option("--eval-batch", o.eval_batch, "batch size of test-set evaluation (default 64)");
  app.add_flag("--quiet", o.quiet, "no progress lines");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "fevo_paper: %s (see --help)\n", e.what());
    return 2;
  }
  try {
    if (halve_text == "none")
      o.no_lr_halving = true;
    else if (!halve_text.empty())
      o.lr_halve_steps = parse_steps(halve_text);
    return fevo_paper::run(o);
  } catch (const fevo_paper::input_error& e) {  // usage, data or model: the user's input
    std::fprintf(stderr, "fevo_paper: %s\n", e.what());
    return 2;
  } catch (const fevo::error& e) {
    std::fprintf(stderr, "fevo_paper: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fevo_paper: %s\n", e.what());
    return 1;
  }
}
