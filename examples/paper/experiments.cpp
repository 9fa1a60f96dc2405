// Section IV-E (Table IV): zeroing the filters that changed least, against random filters.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include <fevo/io/atomic_write.hpp>

#include "driver.hpp"

namespace fevo_paper {

std::vector<int> least_D_filters(const filter_stats& s, std::size_t k) {
  std::vector<int> idx(s.D_sum.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto key = [&](int i) {  // NaN sorts last: it is not "changed least"
    const double d = s.D_mean(std::size_t(i));
    return std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  };
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key(a) < key(b); });
  idx.resize(std::min(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<int> most_Z_filters(const filter_stats& s, std::size_t k) {
  std::vector<int> idx(s.D_sum.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto d = [&](int i) {
    const double v = s.D_mean(std::size_t(i));
    return std::isnan(v) ? std::numeric_limits<double>::infinity() : v;
  };
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
    const double za = s.frac_Z_one(std::size_t(a)), zb = s.frac_Z_one(std::size_t(b));
    if (za != zb) return za > zb;
    return d(a) < d(b);
  });
  idx.resize(std::min(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::size_t zero_count(std::size_t table3_index, std::size_t filters) {
  static const std::array<double, 5> ratio = {7.0 / 64, 15.0 / 128, 68.0 / 256, 45.0 / 512, 272.0 / 512};
  if (filters < 2) return 0;
  const double r = ratio.at(table3_index);
  const auto n = std::size_t(std::llround(r * double(filters)));
  return std::clamp<std::size_t>(n, 1, filters - 1);
}

model_state::model_state(const paper_net& net) {
  torch::NoGradGuard ng;
  for (const auto& [name, t] : named_tensors(net)) saved_.push_back(t.detach().clone());
}

void model_state::restore(paper_net& net) const {
  torch::NoGradGuard ng;
  const auto now = named_tensors(net);
  for (std::size_t i = 0; i < now.size(); ++i) now[i].second.copy_(saved_.at(i));
}

bool model_state::equals(const paper_net& net) const {
  torch::NoGradGuard ng;
  const auto now = named_tensors(net);
  if (now.size() != saved_.size()) return false;
  for (std::size_t i = 0; i < now.size(); ++i) {
    const torch::Tensor a = now[i].second.detach().cpu().contiguous(), b = saved_[i].cpu().contiguous();
    if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
    if (std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) != 0) return false;
  }
  return true;
}

void zero_filters(paper_net& net, const std::string& layer, const std::vector<int>& filters) {
  torch::NoGradGuard ng;
  auto c = net.conv(layer);
  const std::int64_t n = c->weight.size(0);
  for (int f : filters) {
    if (f < 0 || f >= n)
      throw model_error("zero_filters: filter " + std::to_string(f) + " is not in layer " + layer + " (" +
                        std::to_string(n) + " filters)");
    c->weight[f].zero_();
    if (c->bias.defined()) c->bias[f].zero_();
  }
}

std::pair<torch::Tensor, torch::Tensor> make_batch(const image_set& s, const std::vector<std::size_t>& idx,
                                                   const torch::Device& device) {
  const auto n = std::int64_t(idx.size());
  torch::Tensor px = torch::empty({n, std::int64_t(s.channels), std::int64_t(s.size), std::int64_t(s.size)}, torch::kUInt8);
  torch::Tensor lb = torch::empty({n}, torch::kInt64);
  auto* p = px.data_ptr<std::uint8_t>();
  auto* l = lb.data_ptr<std::int64_t>();
  for (std::int64_t k = 0; k < n; ++k) {
    std::memcpy(p + std::size_t(k) * s.image_bytes(), s.image(idx[std::size_t(k)]), s.image_bytes());
    l[k] = s.labels[idx[std::size_t(k)]];
  }
  torch::Tensor x = px.to(torch::kFloat32).div_(127.5).sub_(1.0);
  return {x.to(device), lb.to(device)};
}

double evaluate(paper_net& net, const image_set& s, const torch::Device& device, int batch) {
  torch::NoGradGuard ng;
  const bool was_training = net.is_training();
  net.eval();
  std::int64_t correct = 0;
  std::vector<std::size_t> idx;
  for (std::size_t first = 0; first < s.count(); first += std::size_t(batch)) {
    idx.clear();
    for (std::size_t i = first; i < std::min(s.count(), first + std::size_t(batch)); ++i) idx.push_back(i);
    auto [x, y] = make_batch(s, idx, device);
    correct += net.forward(x).argmax(1).eq(y).sum().item<std::int64_t>();
  }
  net.train(was_training);
  return s.count() ? double(correct) / double(s.count()) : 0.0;
}

std::vector<table4_row> run_table4(paper_net& net, const image_set& test, const torch::Device& device,
                                   const std::map<std::string, filter_stats>& stats, int draws,
                                   std::uint64_t seed, int eval_batch, double baseline, const trial_hook& hook) {
  const model_state state(net);
  std::mt19937_64 rng(seed ^ 0x7ab1e4ULL);
  std::vector<table4_row> rows;
  auto trial = [&](const std::string& layer, const std::string& criterion, const std::vector<int>& f) {
    zero_filters(net, layer, f);
    if (hook) hook(layer, criterion, f);
    const double a = evaluate(net, test, device, eval_batch);
    state.restore(net);
    return a;
  };
  for (std::size_t k = 0; k < net.table3().size(); ++k) {
    const std::string& layer = net.table3()[k];
    const std::size_t n = std::size_t(net.conv(layer)->weight.size(0));
    const std::size_t z = zero_count(k, n);
    const auto it = stats.find(layer);
    if (it == stats.end()) throw model_error("table4: no recorded statistics for layer " + layer);
    auto add = [&](const std::string& criterion, const std::vector<double>& acc) {
      table4_row r;
      r.layer = layer;
      r.criterion = criterion;
      r.filters = n;
      r.zeroed = z;
      r.draws = int(acc.size());
      r.baseline = baseline;
      double m = 0;
      for (double a : acc) m += a;
      m /= double(acc.size());
      double v = 0;
      for (double a : acc) v += (a - m) * (a - m);
      const double sd = acc.size() > 1 ? std::sqrt(v / double(acc.size() - 1)) : 0.0;
      r.acc_mean = m;
      r.acc_std = sd;
      double dm = 0;
      for (double a : acc) dm += baseline - a;
      dm /= double(acc.size());
      r.drop_mean = dm;
      r.drop_std = sd;  // drop = baseline - accuracy: same spread
      rows.push_back(r);
    };
    add("least_D", {trial(layer, "least_D", least_D_filters(it->second, z))});
    add("most_Z", {trial(layer, "most_Z", most_Z_filters(it->second, z))});
    std::vector<double> acc;
    for (int d = 0; d < draws; ++d) {
      std::vector<int> all(n);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      all.resize(z);
      std::sort(all.begin(), all.end());
      acc.push_back(trial(layer, "random", all));
    }
    add("random", acc);
  }
  return rows;
}

void write_table4(const std::string& dir, const std::vector<table4_row>& rows) {
  auto num = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.17g", v);
    return std::string(b);
  };
  std::string csv = "layer,filters,zeroed,criterion,draws,baseline_accuracy,accuracy_mean,accuracy_std,drop_mean,drop_std\n";
  for (const auto& r : rows)
    csv += r.layer + "," + std::to_string(r.filters) + "," + std::to_string(r.zeroed) + "," + r.criterion + "," +
           std::to_string(r.draws) + "," + num(r.baseline) + "," + num(r.acc_mean) + "," + num(r.acc_std) + "," +
           num(r.drop_mean) + "," + num(r.drop_std) + "\n";
  std::string md =
      "| layer | filters | zeroed | criterion | draws | baseline accuracy | accuracy (mean) | accuracy (std) | "
      "drop (mean) | drop (std) |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
  auto pct = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f%%", 100.0 * v);
    return std::string(b);
  };
  for (const auto& r : rows)
    md += "| " + r.layer + " | " + std::to_string(r.filters) + " | " + std::to_string(r.zeroed) + " | " + r.criterion +
          " | " + std::to_string(r.draws) + " | " + pct(r.baseline) + " | " + pct(r.acc_mean) + " | " + pct(r.acc_std) +
          " | " + pct(r.drop_mean) + " | " + pct(r.drop_std) + " |\n";
  // (Not a structured binding: C++17 does not let the lambda below capture one.)
  for (const auto& file : {std::pair<std::string, std::string>{"table4.csv", csv}, {"table4.md", md}}) {
    const std::string path = dir + "/" + file.first;
    const std::string& text = file.second;
    fevo::io::atomic_write(path, [&](std::FILE* f) { fevo::io::write_bytes(f, text.data(), text.size(), path); });
  }
}

}  // namespace fevo_paper
