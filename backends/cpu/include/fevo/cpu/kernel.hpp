// The CPU backend's fused pass over a block of filters, for one instruction set: included by
// <fevo/cpu.hpp> once per kernel namespace (FEVO_CPU_KERNEL_NS), after that namespace's vector
// primitives (simd.hpp) and inside the same target region. Not a header to include on its own.
//
// One kernel per layout family (walk.hpp):
//   packed  (OIHW)  each filter is contiguous: runs of whole channels, 64 weights per step, each
//                   step's changed bits stored as one 64-bit word; S counts bits, Z and R_ic
//                   take whole channels out of the words.
//   lanes   (HWIO)  the filter axis is contiguous: vector lanes are filters, up to 64 filters per
//                   pass over the (row, col, channel) positions; per-lane counts, and one word
//                   of "changed" bits per channel ORed over its positions for Z.
//   rows, general   any other strides: runs of contiguous rows, or element by element.
// Float compute types (f32, f16, bf16) sum at most 8 float squares per lane before adding them to
// double accumulators (fevo::cpu::D_relative_error); double data sums exact squares in double.
// A float sum that overflowed, or one so small (< 2^-90) that float squares may have lost
// subnormal bits while some change is non-zero, is recomputed exactly; the same test finds the
// non-finite changes, so they are counted only then.
#if !defined(FEVO_CPU_KERNEL_NS) || !defined(FEVO_CPU_KERNEL_ISA)
#error "fevo/cpu/kernel.hpp is included by <fevo/cpu.hpp> only"
#endif

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {
namespace detail {
namespace FEVO_CPU_KERNEL_NS {

/// Float vectors per 64-weight step.
inline constexpr std::size_t step_vectors = 64 / simd::L;
/// Float vectors per lanes-walk pass: as many accumulators as the registers hold.
inline constexpr std::size_t lane_vectors = FEVO_CPU_KERNEL_ISA == 2 ? 4 : 2;
static_assert(lane_vectors * simd::L <= max_lane_group, "scratch_words() sizes R counters by max_lane_group");

/// A float sum of squares below this is recomputed exactly if any change is non-zero: float
/// squares of changes below 2^-63 lose bits to underflow, at most 2^-150 each, so above it the
/// loss over a run (< 2^12 * 2^-150) is below 2^-48 relative.
inline constexpr double tiny_sum = 0x1p-90;

template <class T>
inline constexpr bool float_compute = std::is_same_v<compute_t<T>, float>;

struct run_totals {
  double sum_sq;
  std::uint64_t changed;
  std::uint64_t nonfinite;
};

/// Exact sum of squares and non-finite count of a run (the accumulator's fold, element by element).
template <class T>
inline run_totals exact_sums(const T* a, const T* b, std::size_t len) {
  double sum_sq = 0;
  std::uint64_t nonfinite = 0;
  for (std::size_t j = 0; j < len; ++j) {
    const compute_t<T> d = load(b[j]) - load(a[j]);
    nonfinite += rule::nonfinite(rule::magnitude(d));
    sum_sq += rule::square(d);
  }
  return {sum_sq, 0, nonfinite};
}

/// One step of the packed walk: 64 weights; their changed bits (bit k = weight k) are returned
/// and each lane's square is added to sq.
template <class T>
inline std::uint64_t step(const T* a, const T* b, simd::vf tau, simd::vf (&sq)[step_vectors]) {
  std::uint64_t w = 0;
  for (std::size_t v = 0; v < step_vectors; ++v) {
    const simd::vf d = simd::sub(simd::load(b + simd::L * v), simd::load(a + simd::L * v));
    w |= simd::bits(simd::changed(simd::abs(d), tau)) << (simd::L * v);
    sq[v] = simd::square_add(d, sq[v]);
  }
  return w;
}

/// A step over the first n (< 64) weights at a and b; nothing past them is read.
template <class T>
inline std::uint64_t step_first(const T* a, const T* b, std::size_t n, simd::vf tau,
                                simd::vf (&sq)[step_vectors]) {
  std::uint64_t w = 0;
  for (std::size_t v = 0; v < step_vectors && simd::L * v < n; ++v) {
    const std::size_t m = n - simd::L * v;
    const simd::vf d = m >= simd::L ? simd::sub(simd::load(b + simd::L * v), simd::load(a + simd::L * v))
                                    : simd::sub(simd::load_first(b + simd::L * v, m), simd::load_first(a + simd::L * v, m));
    w |= simd::bits(simd::changed(simd::abs(d), tau)) << (simd::L * v);
    sq[v] = simd::square_add(d, sq[v]);
  }
  return w;
}

/// True when some change of the run is not zero (or not a number).
template <class T>
inline bool any_change(const T* a, const T* b, std::size_t len) {
  std::size_t j = 0;
  if constexpr (float_compute<T>) {
    simd::vi nz = simd::zero_i();
    for (; j + simd::L <= len; j += simd::L)
      nz = simd::or_bits(nz, simd::abs(simd::sub(simd::load(b + j), simd::load(a + j))));
    if (simd::any_lanes(nz)) return true;
  }
  for (; j < len; ++j)
    if (!(load(b[j]) - load(a[j]) == 0)) return true;
  return false;
}

/// Folds a contiguous run of `len` weights (at most run_length). With Bits, its changed bits go to
/// bits[0 .. ceil(len / 64)) followed by one zero word (read by window()).
template <bool Bits, class T>
inline run_totals fold_run(const T* a, const T* b, std::size_t len, compute_t<T> tau, std::uint64_t* bits) {
  const std::size_t steps = len / 64, tail = len % 64;
  run_totals r{0, 0, 0};
  if constexpr (float_compute<T>) {
    const simd::vf tv = simd::splat(tau);
    simd::vf sq[step_vectors];
    for (auto& s : sq) s = simd::zero();
    simd::vd2 acc = simd::zero_d();
    for (std::size_t s = 0; s < steps;) {
      const std::size_t end = s + 8 < steps ? s + 8 : steps;  // <= 8 float squares per lane
      for (; s < end; ++s) {
        const std::uint64_t w = step(a + 64 * s, b + 64 * s, tv, sq);
        r.changed += static_cast<std::uint64_t>(__builtin_popcountll(w));
        if constexpr (Bits) bits[s] = w;
      }
      for (auto& s2 : sq) {
        simd::widen_add(acc, s2);
        s2 = simd::zero();
      }
    }
    if (tail) {
      // The last weights as if padded with zeros (a zero change is not changed and adds nothing).
      const std::uint64_t w = step_first(a + 64 * steps, b + 64 * steps, tail, tv, sq);
      r.changed += static_cast<std::uint64_t>(__builtin_popcountll(w));
      if constexpr (Bits) bits[steps] = w;
      for (std::size_t v = 0; v * simd::L < tail; ++v) simd::widen_add(acc, sq[v]);  // the rest are 0
    }
    r.sum_sq = simd::sum(acc);
    // Rare: some d is NaN or Inf, a square overflowed float, or squares underflowed.
    if (!(r.sum_sq <= rule::max_finite<double>()) || (r.sum_sq < tiny_sum && any_change(a, b, len))) {
      const run_totals e = exact_sums(a, b, len);
      r.sum_sq = e.sum_sq;
      r.nonfinite = e.nonfinite;
    }
  } else {
    // Double data: exact squares in double, 64 weights per word.
    for (std::size_t s = 0; s * 64 < len; ++s) {
      const std::size_t n = len - 64 * s < 64 ? len - 64 * s : 64;
      const T* pa = a + 64 * s;
      const T* pb = b + 64 * s;
      std::uint64_t w = 0;
      double sum = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const compute_t<T> d = load(pb[j]) - load(pa[j]);
        w |= std::uint64_t(rule::changed(rule::magnitude(d), tau)) << j;
        sum += rule::square(d);
      }
      r.sum_sq += sum;
      r.changed += static_cast<std::uint64_t>(__builtin_popcountll(w));
      if constexpr (Bits) bits[s] = w;
    }
    if (!(r.sum_sq <= rule::max_finite<double>())) r.nonfinite = exact_sums(a, b, len).nonfinite;
  }
  if constexpr (Bits) bits[steps + (tail ? 1 : 0)] = 0;
  return r;
}

/// The 64 bits starting at bit `at` (the zero word after a run keeps the read in bounds).
inline std::uint64_t window(const std::uint64_t* words, std::size_t at) {
  const std::size_t w = at / 64, sh = at % 64;
  return sh ? (words[w] >> sh) | (words[w + 1] << (64 - sh)) : words[w];
}

/// Masks to test k = 64 / hw channels of hw <= 64 bits at once (zero_channels): with L the low
/// hw-1 bits and H the top bit of each hw-bit group, ((x & L) + L | x) & H has a group's top bit
/// set exactly when the group is not all zero, and no carry crosses into the next group.
struct channel_masks {
  std::size_t hw = 0, k = 0;
  std::uint64_t group = 0, low = 0, top = 0;
};
inline channel_masks masks_for(std::size_t hw) {
  channel_masks z;
  z.hw = hw;
  if (hw == 0 || hw > 64) return z;
  z.k = 64 / hw;
  z.group = hw == 64 ? ~0ULL : (1ULL << hw) - 1;
  for (std::size_t g = 0; g < z.k; ++g) {
    z.low |= (z.group >> 1) << (g * hw);
    z.top |= (1ULL << (hw - 1)) << (g * hw);
  }
  return z;
}

/// Channels with R_ic == 0 among `nc` consecutive channels of z.hw bits each, and R_ic into r
/// when it is not null.
inline std::uint64_t zero_channels(const std::uint64_t* words, std::size_t nc, const channel_masks& z,
                                   std::uint32_t* r) {
  const std::size_t hw = z.hw;
  std::uint64_t zeros = 0;
  if (hw == 1 && r) {
    for (std::size_t c = 0; c < nc; c += 16) {
      const std::uint32_t m = static_cast<std::uint32_t>(window(words, c)) & 0xffffu;
      if (nc - c >= 16) {
        for (std::size_t o = 0; o < 16; o += simd::L) simd::expand_bits(m >> o, r + c + o);
      } else {
        for (std::size_t k = 0; k < nc - c; ++k) r[c + k] = (m >> k) & 1u;
      }
      zeros += static_cast<std::uint64_t>(__builtin_popcount(~m & (nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1)));
    }
    return zeros;
  }
  if (r || hw > 64) {
    for (std::size_t c = 0; c < nc; ++c) {
      std::uint32_t rc = 0;
      for (std::size_t o = 0; o < hw; o += 64) {
        const std::size_t take = hw - o < 64 ? hw - o : 64;
        const std::uint64_t x = window(words, c * hw + o);
        rc += static_cast<std::uint32_t>(__builtin_popcountll(take == 64 ? x : x & ((1ULL << take) - 1)));
      }
      zeros += (rc == 0);
      if (r) r[c] = rc;
    }
    return zeros;
  }
  std::size_t c = 0;
  for (; c + z.k <= nc; c += z.k) {
    const std::uint64_t x = window(words, c * hw);
    zeros += z.k - static_cast<std::uint64_t>(__builtin_popcountll((((x & z.low) + z.low) | x) & z.top));
  }
  for (; c < nc; ++c) zeros += (window(words, c * hw) & z.group) == 0;
  return zeros;
}

/// Whole channels per run of a packed filter: a multiple of 64 / gcd(hw, 64) channels where that
/// fits, so that runs are whole 64-weight steps.
inline std::size_t channels_per_run(std::size_t hw) {
  std::size_t g = 64;
  while (hw % g) g /= 2;
  const std::size_t q = 64 / g;
  return hw * q <= run_length ? run_length / (hw * q) * q : run_length / hw;
}

/// What the packed walk computes once per block rather than per filter.
struct packed_plan {
  std::size_t C, HW, per_run;
  bool need_channels;
  channel_masks z;
};
template <class Task>
inline packed_plan plan_packed(const Task& t) {
  packed_plan p;
  p.C = t.prev.channels();
  p.HW = t.prev.rows() * t.prev.cols();
  p.per_run = p.HW <= run_length ? channels_per_run(p.HW) : 1;
  p.need_channels = (t.want & (want_Z | want_R)) != 0;
  p.z = masks_for(p.HW);
  return p;
}

/// Folds filter i of a packed task into `out`; writes R_ic into r_row when it is not null.
template <class T>
inline void fold_packed(const layer_task<T, host_space>& t, const packed_plan& p, std::size_t i,
                        partial& out, std::uint32_t* r_row, std::uint64_t* bits) {
  const T* pa = t.prev.data_handle() + i * t.prev.stride(0);
  const T* pb = t.next.data_handle() + i * t.next.stride(0);
  const std::size_t C = p.C, HW = p.HW;
  partial f;
  if (HW <= run_length) {
    for (std::size_t c0 = 0; c0 < C; c0 += p.per_run) {
      const std::size_t nc = C - c0 < p.per_run ? C - c0 : p.per_run;
      const std::size_t off = c0 * HW, len = nc * HW;
      run_totals r;
      if (!p.need_channels || (HW == 1 && !r_row)) {
        r = fold_run<false>(pa + off, pb + off, len, t.tau, bits);
        // One weight per channel: the zero channels are the unchanged weights.
        if (p.need_channels) f.zero_channels += nc - r.changed;
      } else {
        r = fold_run<true>(pa + off, pb + off, len, t.tau, bits);
        f.zero_channels += zero_channels(bits, nc, p.z, r_row ? r_row + c0 : nullptr);
      }
      f.sum_sq += r.sum_sq;
      f.changed += r.changed;
      f.nonfinite += r.nonfinite;
      f.weights += len;
      f.channels += nc;
    }
  } else {
    // Channels longer than a run: sum the runs of each channel.
    for (std::size_t c = 0; c < C; ++c) {
      std::uint64_t rc = 0;
      for (std::size_t o = 0; o < HW; o += run_length) {
        const std::size_t len = HW - o < run_length ? HW - o : run_length;
        const run_totals r = fold_run<false>(pa + c * HW + o, pb + c * HW + o, len, t.tau, bits);
        f.sum_sq += r.sum_sq;
        rc += r.changed;
        f.nonfinite += r.nonfinite;
      }
      f.changed += rc;
      f.weights += HW;
      if (r_row) r_row[c] = static_cast<std::uint32_t>(rc);
      close_channel(f, rc);
    }
  }
  out = f;
}

/// Folds filter i of a task with any strides: runs of contiguous rows, or element by element.
template <class T>
inline void fold_strided(const layer_task<T, host_space>& t, walk how, std::size_t i, partial& out,
                         std::uint32_t* r_row) {
  const auto& a = t.prev;
  const auto& b = t.next;
  const std::size_t C = a.channels(), H = a.rows(), W = a.cols();
  partial f;
  for (std::size_t c = 0; c < C; ++c) {
    partial ch;
    for (std::size_t h = 0; h < H; ++h) {
      const T* pa = &a(i, c, h, 0);
      const T* pb = &b(i, c, h, 0);
      if (how == walk::rows) {
        for (std::size_t o = 0; o < W; o += run_length) {
          const std::size_t len = W - o < run_length ? W - o : run_length;
          const run_totals r = fold_run<false>(pa + o, pb + o, len, t.tau, nullptr);
          ch.sum_sq += r.sum_sq;
          ch.changed += r.changed;
          ch.nonfinite += r.nonfinite;
          ch.weights += len;
        }
      } else {
        const std::size_t sa = a.stride(3), sb = b.stride(3);
        for (std::size_t w = 0; w < W; ++w) fold(ch, pa[w * sa], pb[w * sb], t.tau);
      }
    }
    if (r_row) r_row[c] = static_cast<std::uint32_t>(ch.changed);
    close_channel(ch, ch.changed);
    merge(f, ch);
  }
  out = f;
}

/// Filters [g0, g0 + m) of a lanes-walk task (m <= NV * L; m < L when Copy), one pass over all
/// positions: lane j is filter g0 + j. With Copy the m filters of a position are copied into a
/// zero-padded vector (a last group narrower than a vector).
template <class T, std::size_t NV, bool Copy>
inline void fold_lane_group(const layer_task<T, host_space>& t, std::size_t g0, std::size_t m,
                            partial* out, std::uint32_t* r, std::uint64_t* scratch) {
  constexpr std::size_t L = simd::L, G = NV * L;
  const auto& a = t.prev;
  const auto& b = t.next;
  const std::size_t C = a.channels(), H = a.rows(), W = a.cols();
  const std::size_t a1 = a.stride(1), a2 = a.stride(2), a3 = a.stride(3);
  const std::size_t b1 = b.stride(1), b2 = b.stride(2), b3 = b.stride(3);
  const bool need_channels = (t.want & (want_Z | want_R)) != 0;
  std::uint64_t* any = scratch;  // per channel: bit j set when filter g0 + j changed in it
  std::uint32_t* rc = r ? reinterpret_cast<std::uint32_t*>(scratch + C) : nullptr;  // [C][G]
  if (need_channels) std::memset(any, 0, C * sizeof(std::uint64_t));
  if (rc) std::memset(rc, 0, C * G * sizeof(std::uint32_t));
  const T* pa = a.data_handle() + g0;  // stride(0) == 1
  const T* pb = b.data_handle() + g0;
  const simd::vf tv = simd::splat(t.tau);
  simd::vf sq[NV];
  simd::vd2 acc[NV];
  simd::vi cnt[NV], nz[NV];
  for (std::size_t v = 0; v < NV; ++v) {
    sq[v] = simd::zero();
    acc[v] = simd::zero_d();
    cnt[v] = simd::zero_i();
    nz[v] = simd::zero_i();
  }
  [[maybe_unused]] T ta[L] = {}, tb[L] = {};
  unsigned pending = 0;  // squares per lane in sq: flushed at 8
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t w = 0; w < W; ++w) {
      const T* ra = pa + h * a2 + w * a3;
      const T* rb = pb + h * b2 + w * b3;
      for (std::size_t c = 0; c < C; ++c) {
        const T* xa = ra + c * a1;
        const T* xb = rb + c * b1;
        if constexpr (Copy) {
          std::memcpy(ta, xa, m * sizeof(T));
          std::memcpy(tb, xb, m * sizeof(T));
          xa = ta;
          xb = tb;
        }
        std::uint64_t word = 0;
        for (std::size_t v = 0; v < NV; ++v) {
          const simd::vf d = simd::sub(simd::load(xb + L * v), simd::load(xa + L * v));
          const simd::vf ad = simd::abs(d);
          const simd::cmp k = simd::changed(ad, tv);
          word |= simd::bits(k) << (L * v);
          sq[v] = simd::square_add(d, sq[v]);
          cnt[v] = simd::count(cnt[v], k);
          nz[v] = simd::or_bits(nz[v], ad);
          if (rc) simd::store(rc + c * G + L * v, simd::count(simd::load_u32(rc + c * G + L * v), k));
        }
        if (need_channels) any[c] |= word;
        if (++pending == 8) {
          for (std::size_t v = 0; v < NV; ++v) {
            simd::widen_add(acc[v], sq[v]);
            sq[v] = simd::zero();
          }
          pending = 0;
        }
      }
    }
  for (std::size_t v = 0; v < NV; ++v) simd::widen_add(acc[v], sq[v]);

  double sums[G];
  std::uint32_t counts[G], zeros[G];
  std::uint64_t nonzero = 0;
  for (std::size_t v = 0; v < NV; ++v) {
    simd::store(sums + L * v, acc[v]);
    simd::store(counts + L * v, cnt[v]);
    nonzero |= std::uint64_t(simd::any_lanes(nz[v])) << (L * v);
  }
  if (need_channels) {
    simd::vi zc[NV];
    for (auto& z : zc) z = simd::zero_i();
    for (std::size_t c = 0; c < C; ++c) {
      const std::uint64_t unchanged = ~any[c];
      for (std::size_t v = 0; v < NV; ++v)
        zc[v] = simd::count_bits(zc[v], static_cast<std::uint32_t>(unchanged >> (L * v)) & ((1u << L) - 1));
    }
    for (std::size_t v = 0; v < NV; ++v) simd::store(zeros + L * v, zc[v]);
  }
  for (std::size_t j = 0; j < m; ++j) {
    partial f;
    f.sum_sq = sums[j];
    f.changed = counts[j];
    f.weights = C * H * W;
    f.channels = C;
    f.zero_channels = need_channels ? zeros[j] : 0;
    if (!(f.sum_sq <= rule::max_finite<double>()) || (f.sum_sq < tiny_sum && ((nonzero >> j) & 1))) {
      // Rare (see fold_run): filter g0 + j summed exactly.
      double sum_sq = 0;
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t w = 0; w < W; ++w)
          for (std::size_t c = 0; c < C; ++c) {
            const compute_t<T> d = load(pb[h * b2 + w * b3 + c * b1 + j]) - load(pa[h * a2 + w * a3 + c * a1 + j]);
            f.nonfinite += rule::nonfinite(rule::magnitude(d));
            sum_sq += rule::square(d);
          }
      f.sum_sq = sum_sq;
    }
    out[j] = f;
    if (rc)
      for (std::size_t c = 0; c < C; ++c) r[(g0 + j) * C + c] = rc[c * G + j];
  }
}

/// Filters [first, first + count) of a lanes-walk task: groups of lane_vectors vectors, then
/// one of fewer whole vectors, then the last filters padded to a vector.
template <class T>
inline void fold_lanes(const layer_task<T, host_space>& t, std::size_t first, std::size_t count,
                       partial* out, std::uint32_t* r, std::uint64_t* scratch) {
  constexpr std::size_t L = simd::L, G = lane_vectors * L;
  std::size_t g = first;
  const std::size_t end = first + count;
  for (; end - g >= G; g += G) fold_lane_group<T, lane_vectors, false>(t, g, G, out + (g - first), r, scratch);
  const std::size_t whole = (end - g) / L;
  if (whole) {
    if constexpr (lane_vectors > 3) {
      if (whole == 3) fold_lane_group<T, 3, false>(t, g, 3 * L, out + (g - first), r, scratch);
    }
    if constexpr (lane_vectors > 2) {
      if (whole == 2) fold_lane_group<T, 2, false>(t, g, 2 * L, out + (g - first), r, scratch);
    }
    if (whole == 1) fold_lane_group<T, 1, false>(t, g, L, out + (g - first), r, scratch);
    g += whole * L;
  }
  if (g < end) fold_lane_group<T, 1, true>(t, g, end - g, out + (g - first), r, scratch);
}

/// Folds filters [first, first + count) of task t into out[0 .. count).
template <class T>
inline void fold_block(const layer_task<T, host_space>& t, walk how, std::size_t first,
                       std::size_t count, partial* out, std::uint64_t* scratch) {
  std::uint32_t* r =
      t.per_filter && (t.want & want_R) ? t.per_filter->channel_changed.data() : nullptr;
  const std::size_t C = t.prev.channels();
  if constexpr (float_compute<T>) {
    if (how == walk::lanes) {
      fold_lanes(t, first, count, out, r, scratch);
      return;
    }
  }
  if (how == walk::packed) {
    const packed_plan p = plan_packed(t);
    for (std::size_t i = first; i < first + count; ++i)
      fold_packed(t, p, i, out[i - first], r ? r + i * C : nullptr, scratch);
    return;
  }
  for (std::size_t i = first; i < first + count; ++i)
    fold_strided(t, how, i, out[i - first], r ? r + i * C : nullptr);
}

}  // namespace FEVO_CPU_KERNEL_NS
}  // namespace detail
}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
