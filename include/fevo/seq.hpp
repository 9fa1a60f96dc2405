// fevo::seq, the serial reference backend: one plainly written loop per axis, every element folded
// with the accumulator's fold(). Every other backend is tested against it.
#pragma once

#include "config.hpp"

#include <cstddef>

#include "accumulator.hpp"
#include "compute.hpp"

namespace fevo {

struct sequential_policy {};
inline constexpr sequential_policy seq{};

template <class T>
void evaluate(const sequential_policy&, layer_task<T, host_space>* tasks, std::size_t n_tasks) {
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const layer_task<T, host_space>& t = tasks[k];
    const auto& a = t.prev;
    const auto& b = t.next;
    partial layer;
    for (std::size_t i = 0; i < a.filters(); ++i) {
      partial filter;
      for (std::size_t c = 0; c < a.channels(); ++c) {
        partial channel;
        for (std::size_t h = 0; h < a.rows(); ++h)
          for (std::size_t w = 0; w < a.cols(); ++w) fold(channel, a(i, c, h, w), b(i, c, h, w), t.tau);
        close_channel(channel, channel.changed);
        if (t.per_filter && (t.want & want_R))
          t.per_filter->channel_changed[i * a.channels() + c] = static_cast<std::uint32_t>(channel.changed);
        merge(filter, channel);
      }
      if (t.per_filter) t.per_filter->store(i, filter);
      merge(layer, filter);
    }
    *t.total = layer;
  }
}

}  // namespace fevo
