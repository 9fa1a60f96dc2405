// weight_change.csv: the relative weight change of Agrawal et al. per conv layer and record (see
// weight_change_log in driver.hpp).
#include <charconv>
#include <cmath>
#include <cstdio>

#include <fevo/io/atomic_write.hpp>
#include <fevo/record/detail/csv.hpp>

#include "driver.hpp"

namespace fevo_paper {

namespace {

/// The shortest decimal that reads back to the same double; "nan" for every NaN (0/0 is a
/// negative NaN on x86), "inf", "-inf".
void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "nan";
    return;
  }
  char b[32];
  const auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

}  // namespace

weight_change_log::weight_change_log(std::vector<std::pair<std::string, torch::Tensor>> layers, std::int64_t step)
    : layers_(std::move(layers)), prev_step_(step) {
  torch::NoGradGuard ng;
  for (const auto& l : layers_) {
    prev_.push_back(l.second.detach().to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true));
    cur_.push_back(torch::empty_like(prev_.back()));
    prev_norm_.push_back(l1(prev_.back()));
  }
}

double weight_change_log::l1(const torch::Tensor& t) {
  return torch::linalg_vector_norm(t, 1).item<double>();
}

void weight_change_log::record(std::int64_t step) {
  torch::NoGradGuard ng;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    // Four torch ops per layer and no allocation: the weights copied into the layer's second
    // float64 buffer, their L1 norm (the next record's L1_prev), the difference in place in the
    // previous copy, its L1 norm; the two buffers then trade places. Each difference of two float32
    // values is exact in float64.
    cur_[i].copy_(layers_[i].second.detach());
    const double norm = prev_norm_[i];
    const double next_norm = l1(cur_[i]);
    const double change = l1(prev_[i].sub_(cur_[i]));
    std::swap(prev_[i], cur_[i]);
    prev_norm_[i] = next_norm;
    // IEEE division: a layer whose weights were all zero gives inf when they moved, nan (0/0) when
    // they did not; non-finite weights give nan.
    const double relative = change / norm;
    text_ += std::to_string(prev_step_);
    text_ += ',';
    text_ += std::to_string(step);
    text_ += ',';
    // The recorder's CSV quoting (its layer names never hold a line break: the recorder refuses
    // them, and these are the layers it records).
    fevo::record::detail::csv::put_field(text_, layers_[i].first);
    text_ += ',';
    append_number(text_, change);
    text_ += ',';
    append_number(text_, norm);
    text_ += ',';
    append_number(text_, relative);
    text_ += '\n';
    ++rows_;
  }
  prev_step_ = step;
}

void weight_change_log::write(const std::string& path) const {
  fevo::io::atomic_write(path, [&](std::FILE* f) {
    fevo::io::write_text(f, header, path);
    fevo::io::write_text(f, text_, path);
  });
}

}  // namespace fevo_paper
