// The paper driver: training with fevo's recorder, and the experiments of section IV
// (Fig. 3 feature maps, Table IV filter zeroing). main.cpp is its command line; the tests call
// these functions directly. The files of a run directory are listed in README.md
// ("The paper driver").
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data.hpp"
#include "models.hpp"

#include "errors.hpp"

namespace fevo_paper {

/// Bad settings (the command line's usage errors): exit status 2.
class usage_error : public input_error {
 public:
  using input_error::input_error;
};

/// Every setting of a run. Defaults are the paper's (section IV-B).
struct run_options {
  std::string model = "vgg16";
  std::string data = "fashion-mnist";  ///< "fashion-mnist" or an ImageFolder directory
  std::string fashion_mnist_dir = fashion_mnist_default_dir;
  std::string out;                     ///< the run directory
  double width = 1.0;
  int size = 0;                        ///< 0: 32 for Fashion-MNIST, 224 for an ImageFolder
  std::int64_t steps = 0;              ///< 0: epochs * steps per epoch
  int epochs = 40;
  int batch = 64;
  double lr = 2e-4;
  std::vector<std::int64_t> lr_halve_steps;  ///< empty: after 25 epochs, then every 10
  bool no_lr_halving = false;                ///< a constant learning rate
  int halve_after_epochs = 25, halve_every_epochs = 10;
  std::int64_t record_every = 10;
  double tau = -1;                     ///< < 0: the initial learning rate
  std::uint64_t seed = 1;
  std::string device = "cpu";
  int threads = 0;                     ///< 0: all hardware threads
  std::size_t train_images = 0, test_images = 0;  ///< 0: all
  std::int64_t snapshot_every = 0;     ///< 0: no snapshots
  int zero_draws = 5;
  int eval_batch = 64;
  bool quiet = false;                  ///< no progress lines
};

/// Per-filter statistics of a layer over all records (the recorder's filter_summary.csv).
struct filter_stats {
  std::vector<double> D_sum;
  std::vector<std::uint64_t> Z_one;  ///< records with Z_i == 1
  std::uint64_t records = 0;
  double D_mean(std::size_t i) const { return records ? D_sum[i] / double(records) : 0.0; }
  double frac_Z_one(std::size_t i) const { return records ? double(Z_one[i]) / double(records) : 0.0; }
};

/// Filters of a layer chosen for zeroing: the k with the lowest mean D_i (ties: lower index).
std::vector<int> least_D_filters(const filter_stats& s, std::size_t k);
/// The k with the highest fraction of records with Z_i == 1 (ties: lower mean D_i, lower index).
std::vector<int> most_Z_filters(const filter_stats& s, std::size_t k);
/// Table IV's ratios of a layer's filters (7/64, 15/128, 68/256, 45/512, 272/512), applied to a
/// Table III layer's filter count: round(ratio * filters), at least 1 and at most filters - 1.
std::size_t zero_count(std::size_t table3_index, std::size_t filters);

/// A copy of every parameter and buffer, to put the model back after a trial.
class model_state {
 public:
  explicit model_state(const paper_net& net);
  void restore(paper_net& net) const;
  /// True when every tensor of `net` equals the saved copy bit for bit.
  bool equals(const paper_net& net) const;

 private:
  std::vector<torch::Tensor> saved_;
};

/// Zeroes filters (output channels) of a conv layer: their weights and bias.
void zero_filters(paper_net& net, const std::string& layer, const std::vector<int>& filters);

/// The images `idx` of a set as a float batch (N x C x S x S, scaled to [-1, 1]) on `device`, and their labels.
std::pair<torch::Tensor, torch::Tensor> make_batch(const image_set& s, const std::vector<std::size_t>& idx,
                                                   const torch::Device& device);

/// Top-1 accuracy of the model on a set, in eval mode (the mode is put back).
double evaluate(paper_net& net, const image_set& s, const torch::Device& device, int batch = 256);

struct table4_row {
  std::string layer, criterion;
  std::size_t filters = 0, zeroed = 0;
  int draws = 1;
  double baseline = 0, acc_mean = 0, acc_std = 0, drop_mean = 0, drop_std = 0;
};

/// Called after the filters of a trial are zeroed, before it is evaluated (tests check the model).
using trial_hook = std::function<void(const std::string& layer, const std::string& criterion,
                                      const std::vector<int>& zeroed)>;

/// Table IV: for each Table III layer, zero the filters chosen by least_D, most_Z and at random
/// (`draws` seeded draws), measure the test accuracy, and restore the model after each trial.
std::vector<table4_row> run_table4(paper_net& net, const image_set& test, const torch::Device& device,
                                   const std::map<std::string, filter_stats>& stats, int draws,
                                   std::uint64_t seed, int eval_batch, double baseline,
                                   const trial_hook& hook = {});

/// Writes table4.csv and table4.md into `dir`.
void write_table4(const std::string& dir, const std::vector<table4_row>& rows);

/// The per-layer relative weight change of Agrawal et al. (arXiv 2011.06735) between records:
///     relative_change = ||W_t - W_prev||_1 / ||W_prev||_1,
/// W_prev the layer's weights at the previous record. Computed by the driver in its own pass over
/// the conv weights (torch ops on the weights' device), not in fevo's fused D, S, Z pass. Each
/// layer keeps a detached float64 copy of its weights at the last record, on their device, that
/// copy's L1 norm and a second float64 buffer that the next record's weights are copied into. Both sums accumulate in float64 over float64 values: for float32 weights
/// each |w_t - w_prev| is exact (to half an ulp of a double), so the sums differ from any other
/// float64 summation only in their order.
class weight_change_log {
 public:
  /// The layers in depth order, as (name, live weight); copies their weights as the step-0 state.
  weight_change_log(std::vector<std::pair<std::string, torch::Tensor>> layers, std::int64_t step);
  /// One row per layer, (step_prev, step, layer, L1_change, L1_prev, relative_change), in the
  /// order of metrics.csv; the copies then hold the weights at `step`.
  void record(std::int64_t step);
  /// weight_change.csv: the header and every row so far, written atomically.
  void write(const std::string& path) const;
  std::size_t rows() const { return rows_; }
  const std::string& text() const { return text_; }
  static constexpr const char* header = "step_prev,step,layer,L1_change,L1_prev,relative_change\n";

 private:
  std::vector<std::pair<std::string, torch::Tensor>> layers_;
  static double l1(const torch::Tensor& t);  ///< sum |t| in float64 (t is float64)
  std::vector<torch::Tensor> prev_;        ///< float64 copies of the weights at the last record
  std::vector<torch::Tensor> cur_;         ///< float64 buffers of the same shapes, for the next
  std::vector<double> prev_norm_;          ///< their L1 norms
  std::int64_t prev_step_ = 0;
  std::string text_;
  std::size_t rows_ = 0;
};

/// The whole run: data, model, training with the recorder, Fig. 3, Table IV and every file of
/// the run directory. Returns the process exit status (0).
int run(const run_options& o);

}  // namespace fevo_paper
