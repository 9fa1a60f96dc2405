// The CPU backend's fused pass over a block of filters, for one instruction set: included by
// <fevo/cpu.hpp> once per kernel namespace (FEVO_CPU_KERNEL_NS), after that namespace's vector
// primitives (simd.hpp) and inside the same target region. Not a header to include on its own.
//
// One kernel per layout family (walk.hpp):
//   packed  (OIHW)  each filter is contiguous: runs of whole channels, 64 weights per step, each
//                   step's changed bits stored as one 64-bit word; S counts bits, Z and R_ic
//                   take whole channels out of the words; filters of at most 64 weights one
//                   filter per word (fold_small).
//   lanes   (HWIO)  the filter axis is contiguous: vector lanes are filters, up to 64 filters per
//                   pass over the (row, col, channel) positions; per-lane counts, and one word
//                   of "changed" bits per channel ORed over its positions for Z.
//   interleaved (OHWI) each filter is contiguous, channel fastest: the packed walk's runs, their
//                   changed bits ORed into a bit per channel.
//   rows, general   any other strides: runs of contiguous rows, or element by element.
// Float compute types (f32, f16, bf16) sum at most 8 float squares per lane before adding them to
// double accumulators (fevo::cpu::D_relative_error); double data sums exact squares in double.
// A float sum that overflowed, or one so small (< 2^-90) that float squares may have lost
// subnormal bits while some change is non-zero, is recomputed exactly; the same test finds the
// non-finite changes, so they are counted only then.
// config.hpp first, as in every fevo header (its include guard makes this a no-op inside
// <fevo/cpu.hpp>'s target regions; it defines macros only).
#include <fevo/config.hpp>

#if !defined(FEVO_CPU_KERNEL_NS) || !defined(FEVO_CPU_KERNEL_ISA)
#error "fevo/cpu/kernel.hpp is included by <fevo/cpu.hpp> only"
#endif

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {
namespace detail {
namespace FEVO_CPU_KERNEL_NS {

/// Float vectors per 64-weight step.
inline constexpr std::size_t step_vectors = 64 / simd::L;
/// The accumulators of squares a packed step adds to (sq[0 .. n)), each lane taking
/// step_vectors / n squares per step; fold_run widens them to double every flush_steps steps, so
/// that a lane sums at most 8 float squares (fevo::cpu::D_relative_error). With AVX2, four of two
/// squares per step: eight accumulators, with tau, the masks and a step's temporaries, outgrow the
/// 16 registers, and GCC kept some on the stack (a load and a store each per step). One thread on
/// a 3x3 layer of 128 x 128 filters in cache (2 GHz Zen 1): f32 5.5 -> 4.7 cycles per 8 weights.
inline constexpr std::size_t step_accumulators = FEVO_CPU_KERNEL_ISA == 1 ? step_vectors / 2 : step_vectors;
inline constexpr std::size_t flush_steps = 8 * step_accumulators / step_vectors;
/// Float vectors per lanes-walk pass: as many accumulators as the registers hold.
inline constexpr std::size_t lane_vectors = FEVO_CPU_KERNEL_ISA == 2 ? 4 : 2;
static_assert(lane_vectors * simd::L == lane_group_width(static_cast<isa>(FEVO_CPU_KERNEL_ISA)),
              "scratch_words() sizes the scratch by lane_group_width()");
/// Groups of lanes in a block of at most max_lane_block filters (fold_lanes).
inline constexpr std::size_t max_lane_groups = max_lane_block / (lane_vectors * simd::L) + 2;

/// The packed walk's software prefetch: each step fetches the lines `stream_ahead<T>` bytes past it
/// in both snapshots, non-temporal (prefetchnta): its weights are read once, so they need not stay
/// in L2 or L3. On a Zen 2 (AVX2 kernel, 2026-12-07) a 3x3 2048 x 2048 f32 layer from DRAM took
/// 0.68x the time (two threads; one thread the same), and layers that fit in L2 or L3, called
/// over and over, 0.99-1.03x; the same fetch with a temporal hint (into L1 or L2) gave nothing at
/// 1024 to 16384 bytes ahead, and the non-temporal one less the further ahead (1024: 0.82-0.87x,
/// 2048: 0.93-0.96x): docs/benchmarks-log.md. Not in the AVX-512 kernel: on a Zen 4 (2026-12-08)
/// it took 1.07-1.12x the time on OIHW f32 layers from 3x3 256 x 256 to 3x3 2048 x 2048 (two
/// threads), whose pass already read from DRAM as fast as the plain read. Not measured off x86-64,
/// where the kernels do without it.
#if defined(__x86_64__) || defined(_M_X64)
inline constexpr bool stream_prefetch = FEVO_CPU_KERNEL_ISA != 2;
#else
inline constexpr bool stream_prefetch = false;
#endif
/// 16-bit types 1024 bytes ahead: 1.00-1.17x the f16 and bf16 rates of 512 in bench_cpu (but
/// ResNet-50 f16 from DRAM, 0.98-1.00x); 2048 bytes ahead 0.92-1.01x the rates of 1024.
template <class T>
inline constexpr std::size_t stream_ahead = sizeof(T) == 2 ? 1024 : 512;

/// Prefetches, non-temporal, the `bytes` bytes (whole 64-byte lines) that start stream_ahead<T>
/// bytes past p. Past the end of the data it fetches nothing harmful: a prefetch never faults.
template <class T>
inline void prefetch_stream(const T* p, std::size_t bytes) {
  const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(p) + stream_ahead<T>;
  for (std::size_t o = 0; o < bytes; o += 64) __builtin_prefetch(reinterpret_cast<const void*>(at + o), 0, 0);
}

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
  constexpr std::size_t per = step_vectors / step_accumulators;  // vectors per accumulator
  for (std::size_t v = 0; v < step_vectors; ++v) {
    const simd::vf d = simd::sub(simd::load(b + simd::L * v), simd::load(a + simd::L * v));
    w |= simd::bits(simd::changed(simd::abs(d), tau)) << (simd::L * v);
    sq[v / per] = simd::square_add(d, sq[v / per]);
  }
  return w;
}

#if FEVO_CPU_KERNEL_ISA == 1
/// bit k of x at bit 2k: the changed bits of the even (or, shifted by one, odd) weights of 16.
struct spread_table {
  std::uint16_t bits[256];
  constexpr spread_table() : bits{} {
    for (unsigned x = 0; x < 256; ++x)
      for (unsigned k = 0; k < 8; ++k) bits[x] |= static_cast<std::uint16_t>(((x >> k) & 1u) << (2 * k));
  }
};
inline constexpr spread_table spread{};

/// The step for bf16 with AVX2: 16 weights per 32-byte load, widened without a widening load:
/// in each 32-bit lane the even weight shifted up by 16 bits and the odd one masked in place are
/// both exact floats: two vector operations per 16 weights instead of four (Zen 1 splits each
/// 256-bit operation in two, and its vector pipes bound this loop). The even and odd changed
/// bits go back into weight order through spread_table.
inline std::uint64_t step(const bfloat16* a, const bfloat16* b, simd::vf tau, simd::vf (&sq)[step_vectors]) {
  static_assert(step_accumulators == step_vectors / 2, "two squares per accumulator and step");
  const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  std::uint64_t w = 0;
  for (std::size_t v = 0; v < step_vectors; v += 2) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + simd::L * v));
    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + simd::L * v));
    const simd::vf de =
        simd::sub(_mm256_castsi256_ps(_mm256_slli_epi32(y, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
    const simd::vf dodd =
        simd::sub(_mm256_castsi256_ps(_mm256_and_si256(y, odd)), _mm256_castsi256_ps(_mm256_and_si256(x, odd)));
    const std::uint64_t be = simd::bits(simd::changed(simd::abs(de), tau));
    const std::uint64_t bo = simd::bits(simd::changed(simd::abs(dodd), tau));
    w |= static_cast<std::uint64_t>(spread.bits[be] | (spread.bits[bo] << 1)) << (simd::L * v);
    sq[v / 2] = simd::square_add(dodd, simd::square_add(de, sq[v / 2]));
  }
  return w;
}
#endif

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

/// A float pass's sum of squares of a run, recomputed exactly, with the run's non-finite count,
/// where it cannot be trusted (rare): some d is NaN or Inf, a square overflowed float, or squares
/// underflowed.
template <class T>
inline void settle(double& sum_sq, std::uint64_t& nonfinite, const T* a, const T* b, std::size_t len) {
  if (!(sum_sq <= rule::max_finite<double>()) || (sum_sq < tiny_sum && any_change(a, b, len))) {
    const run_totals e = exact_sums(a, b, len);
    sum_sq = e.sum_sq;
    nonfinite = e.nonfinite;
  }
}

/// The 64 bits starting at bit `at` (the zero word after the last one written keeps the read in
/// bounds and defined).
inline std::uint64_t window(const std::uint64_t* words, std::size_t at) {
  const std::size_t w = at / 64, sh = at % 64;
  return sh ? (words[w] >> sh) | (words[w + 1] << (64 - sh)) : words[w];
}

/// Masks to test k = 64 / hw channels of hw <= 64 bits at once (channel_windows::zeros_in): L
/// the low hw-1 bits and H the top bit of each hw-bit group.
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

/// What fold_run does with each word of changed bits it makes: take() sees every word as it is
/// made (bit k = weight k of the 64, n <= 64 of them valid, the rest zero); with `store`, the
/// words also go to memory.
struct no_bits {  // nothing: S needs only their count
  static constexpr bool store = false;
  void take(std::uint64_t, std::size_t) {}
};
struct keep_bits {  // store them, for the caller to take R_ic out of
  static constexpr bool store = true;
  void take(std::uint64_t, std::size_t) {}
};
/// The changed bits of a run of whole channels (of hw <= 64 bits each) in windows of k = 64 / hw
/// channels, in order, as fold_run makes their words: the bits not yet in a window stay in a
/// register (fewer than k * hw of them), never in memory, where a store and reload per word cost
/// more than the counting itself.
struct channel_windows {
  std::uint64_t low, top, group;  ///< channel_masks (copies, so that they stay in registers)
  std::size_t hw, k, span;
  std::uint64_t pending = 0;  ///< bits not yet in a window, in the low `held` bits
  std::size_t held = 0;
  explicit channel_windows(const channel_masks& z)
      : low(z.low), top(z.top), group(z.group), hw(z.hw), k(z.k), span(z.k * z.hw) {}
  /// Calls f(x) for each window completed by the n bits of w (the rest of w zero): its k channels
  /// are the low k * hw bits of x, channel j at bit j * hw.
  template <class F>
  void take(std::uint64_t w, std::size_t n, F&& f) {
    // The held bits then w's: a 128-bit value (hi:lo) of held + n bits (held < span <= 64).
    std::uint64_t lo = pending | (w << held);
    std::uint64_t hi = held ? w >> (64 - held) : 0;
    std::size_t total = held + n;
    for (; total >= span; total -= span) {
      f(lo);
      if (span == 64) {
        lo = hi;
        hi = 0;
      } else {
        lo = (lo >> span) | (hi << (64 - span));
        hi >>= span;
      }
    }
    pending = lo;  // total < span <= 64: all of it is in lo, and hi is 0
    held = total;
  }
  /// How many of the k channels in x have no changed weight: with L the low hw-1 bits and H the
  /// top bit of each channel, ((x & L) + L | x) & H has a channel's top bit set exactly when the
  /// channel is not all zero, and no carry crosses into the next channel.
  std::uint64_t zeros_in(std::uint64_t x, std::uint64_t tops) const {
    return static_cast<std::uint64_t>(__builtin_popcountll(tops)) -
           static_cast<std::uint64_t>(__builtin_popcountll((((x & low) + low) | x) & tops));
  }
};

/// Counts the channels (of hw <= 64 bits) without a changed weight, k at a time, as soon as their
/// bits are known: inside the loop that loads the weights, so that this work overlaps the memory
/// reads instead of following them.
struct zero_counter {
  static constexpr bool store = false;
  channel_windows cw;
  std::uint64_t zeros = 0;
  explicit zero_counter(const channel_masks& z) : cw(z) {}
  void take(std::uint64_t w, std::size_t n) {
    cw.take(w, n, [this](std::uint64_t x) { zeros += cw.zeros_in(x, cw.top); });
  }
  /// Counts the channels after the last whole window (held is a multiple of hw at the end of a
  /// run, below 64); returns the run's zero channels.
  std::uint64_t finish() {
    zeros += cw.zeros_in(cw.pending, cw.top & ((std::uint64_t{1} << cw.held) - 1));
    return zeros;
  }
};

/// R_ic of each channel (of 1..64 bits) as soon as its bits are known, and the zero channels.
struct r_counter {
  static constexpr bool store = false;
  channel_windows cw;
  std::uint32_t* r;  ///< R_ic of the next channel
  std::uint64_t zeros = 0;
  r_counter(const channel_masks& z, std::uint32_t* r_row) : cw(z), r(r_row) {}
  void take(std::uint64_t w, std::size_t n) {
    if (cw.hw == 1) {
      // One weight per channel: R_ic is the bit itself, 16 channels at a time.
      std::size_t o = 0;
      for (; o + 16 <= n; o += 16, r += 16)
        for (std::size_t v = 0; v < 16; v += simd::L) simd::expand_bits(static_cast<std::uint32_t>(w >> (o + v)), r + v);
      for (; o < n; ++o) *r++ = static_cast<std::uint32_t>(w >> o) & 1u;
      zeros += n - static_cast<std::uint64_t>(__builtin_popcountll(w));  // w is 0 past n
      return;
    }
#if FEVO_CPU_KERNEL_ISA == 2
    if (cw.k >= 2) {
      // The window's k channels at once: channel j shifted down into qword j, masked, and
      // counted by a nibble table and a sum of bytes (AVX-512 BW; VPOPCNTQ is not in the
      // kernel's x86-64-v4), the k counts narrowed and stored together. (Masked forms: GCC 12
      // warns that the unmasked ones read an uninitialised register.)
      const __m512i shifts = _mm512_mullo_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
                                                _mm512_set1_epi64(static_cast<long long>(cw.hw)));
      const __m512i group = _mm512_set1_epi64(static_cast<long long>(cw.group));
      const __m512i nibble = _mm512_set1_epi8(0x0f);
      const __m512i table = _mm512_maskz_broadcast_i32x4(0xffff, _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
      const __m512i step = _mm512_set1_epi64(static_cast<long long>(8 * cw.hw));
      cw.take(w, n, [&](std::uint64_t x) {
        zeros += cw.zeros_in(x, cw.top);
        const __m512i xs = _mm512_set1_epi64(static_cast<long long>(x));
        __m512i sh = shifts;
        // Eight channels a pass (k is 2 to 32); the qwords past the k-th are not stored (vpsrlvq
        // makes those shifted by 64 or more zero).
        for (std::size_t j = 0; j < cw.k; j += 8, sh = _mm512_add_epi64(sh, step)) {
          const __m512i v = _mm512_and_si512(_mm512_maskz_srlv_epi64(0xff, xs, sh), group);
          const __m512i c = _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(v, nibble)),
                                            _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_maskz_srli_epi64(0xff, v, 4), nibble)));
          const std::size_t m = cw.k - j < 8 ? cw.k - j : 8;
          _mm256_mask_storeu_epi32(r, static_cast<__mmask8>((1u << m) - 1),
                                   _mm512_maskz_cvtepi64_epi32(0xff, _mm512_sad_epu8(c, _mm512_setzero_si512())));
          r += m;
        }
      });
      return;
    }
#endif
    cw.take(w, n, [this](std::uint64_t x) {
      zeros += cw.zeros_in(x, cw.top);
      for (std::size_t j = 0; j < cw.k; ++j)  // j * hw < 64 (a shift by 64 would be undefined)
        *r++ = static_cast<std::uint32_t>(__builtin_popcountll((x >> (j * cw.hw)) & cw.group));
    });
  }
  /// The channels after the last whole window; returns the run's zero channels.
  std::uint64_t finish() {
    for (; cw.held; cw.held -= cw.hw, cw.pending >>= cw.hw) {  // a multiple of hw, below 64
      const auto rc = static_cast<std::uint32_t>(__builtin_popcountll(cw.pending & cw.group));
      *r++ = rc;
      zeros += rc == 0;
    }
    return zeros;
  }
};

/// Folds a contiguous run of `len` weights (at most run_length). When Bits::store, its changed
/// bits go to bits[0 .. ceil(len / 64)) followed by one zero word; bits_of.take() sees each as it is made.
template <class Bits, class T>
inline run_totals fold_run(const T* a, const T* b, std::size_t len, compute_t<T> tau,
                           std::uint64_t* bits, Bits& bits_of) {
  const std::size_t steps = len / 64, tail = len % 64;
  run_totals r{0, 0, 0};
  if constexpr (float_compute<T>) {
    const simd::vf tv = simd::splat(tau);
    simd::vf sq[step_vectors];
    for (auto& s : sq) s = simd::zero();
    simd::vd2 acc = simd::zero_d();
    for (std::size_t s = 0; s < steps;) {
      const std::size_t end = s + flush_steps < steps ? s + flush_steps : steps;  // <= 8 float squares per lane
      for (; s < end; ++s) {
        if constexpr (stream_prefetch) {
          prefetch_stream(a + 64 * s, 64 * sizeof(T));
          prefetch_stream(b + 64 * s, 64 * sizeof(T));
        }
        const std::uint64_t w = step(a + 64 * s, b + 64 * s, tv, sq);
        r.changed += static_cast<std::uint64_t>(__builtin_popcountll(w));
        bits_of.take(w, 64);
        if constexpr (Bits::store) {
          bits[s] = w;
          bits[s + 1] = 0;
        }
      }
      for (std::size_t v = 0; v < step_accumulators; ++v) {
        simd::widen_add(acc, sq[v]);
        sq[v] = simd::zero();
      }
    }
    if (tail) {
      // The last weights as if padded with zeros (a zero change is not changed and adds nothing).
      const std::uint64_t w = step_first(a + 64 * steps, b + 64 * steps, tail, tv, sq);
      r.changed += static_cast<std::uint64_t>(__builtin_popcountll(w));
      bits_of.take(w, tail);
      if constexpr (Bits::store) {
        bits[steps] = w;
        bits[steps + 1] = 0;
      }
      for (std::size_t v = 0; v * simd::L < tail; ++v) simd::widen_add(acc, sq[v]);  // the rest are 0
    }
    r.sum_sq = simd::sum(acc);
    settle(r.sum_sq, r.nonfinite, a, b, len);
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
      bits_of.take(w, n);
      if constexpr (Bits::store) {
        bits[s] = w;
        bits[s + 1] = 0;
      }
    }
    if (!(r.sum_sq <= rule::max_finite<double>())) r.nonfinite = exact_sums(a, b, len).nonfinite;
  }
  return r;
}
/// fold_run without the bits: S needs only their count.
template <class T>
inline run_totals fold_run(const T* a, const T* b, std::size_t len, compute_t<T> tau) {
  no_bits none;
  return fold_run(a, b, len, tau, nullptr, none);
}

/// R_ic of `nc` consecutive channels of hw > 64 bits each (stored by keep_bits) into r when it is
/// not null, and how many of them are zero.
inline std::uint64_t zero_channels(const std::uint64_t* words, std::size_t nc, std::size_t hw, std::uint32_t* r) {
  std::uint64_t zeros = 0;
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
        r = fold_run(pa + off, pb + off, len, t.tau);
        // One weight per channel: the zero channels are the unchanged weights.
        if (p.need_channels) f.zero_channels += nc - r.changed;
      } else if (!r_row && HW <= 64) {
        zero_counter zc(p.z);
        r = fold_run(pa + off, pb + off, len, t.tau, bits, zc);
        f.zero_channels += zc.finish();
      } else if (HW <= 64) {
        r_counter rc(p.z, r_row + c0);
        r = fold_run(pa + off, pb + off, len, t.tau, bits, rc);
        f.zero_channels += rc.finish();
      } else {
        keep_bits keep;
        r = fold_run(pa + off, pb + off, len, t.tau, bits, keep);
        f.zero_channels += zero_channels(bits, nc, HW, r_row ? r_row + c0 : nullptr);
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
        const run_totals r = fold_run(pa + c * HW + o, pb + c * HW + o, len, t.tau);
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

/// Folds filters [first, first + count) of a packed task whose filters have 1 to 64 weights
/// (C * H * W, as in a first 3x3 layer of 3 channels or a 1x1 layer of 64) into out, with R_ic
/// into r + i * C when r is not null. One filter per pass of at most 64 / L vectors, its squares
/// in one accumulator per 8 vectors (a lane sums at most 8 float squares), its changed bits one
/// word in which all of its channels lie, counted at once. Where the filters are contiguous, the
/// last vector reads on into the next filter's weights and keeps only its own lanes: a masked
/// load only in the layer's last filters. (fold_packed per filter spent most of a 3x3x3x64 call
/// on the per-run work around 27 weights: the masked load, eight accumulators on the stack, the
/// channel windows.) An interleaved filter (OHWI) of 1 to 64 weights is folded here too, its
/// bits position by position (bit q * C + c: position q, channel c): channel_bits[c] has the bits
/// of channel c (fold_interleaved per filter took 2.7-4.9x the time on a 3x3x3x64 layer).
template <class T>
inline void fold_small(const layer_task<T, host_space>& t, const packed_plan& p, std::size_t first,
                       std::size_t count, partial* out, std::uint32_t* r,
                       const std::uint64_t* channel_bits = nullptr) {
  constexpr std::size_t L = simd::L, A = step_vectors > 8 ? step_vectors / 8 : 1;
  const std::size_t C = p.C, HW = p.HW, len = C * HW, nv = (len + L - 1) / L;
  const std::size_t m = len - L * (nv - 1);  // lanes of the last vector: 1 .. L
  const simd::lanes last = simd::first_lanes(m);
  // Filters [0, whole) read their last vector whole: it ends inside the view.
  const std::size_t N = t.prev.filters();
  std::size_t whole = 0;
  if (m == L)
    whole = N;
  else if (t.prev.stride(0) == len && t.next.stride(0) == len && N * len >= L * nv)
    whole = (N * len - L * nv) / len + 1;
  const std::uint64_t tops = p.z.top & (len == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << len) - 1);
  const channel_windows cw(p.z);
  const simd::vf tv = simd::splat(t.tau);
  for (std::size_t i = first; i < first + count; ++i) {
    const T* pa = t.prev.data_handle() + i * t.prev.stride(0);
    const T* pb = t.next.data_handle() + i * t.next.stride(0);
    simd::vf sq[A];
    for (auto& s : sq) s = simd::zero();
    std::uint64_t w = 0;
    std::size_t v = 0;
    for (; v + 1 < nv; ++v) {
      const simd::vf d = simd::sub(simd::load(pb + L * v), simd::load(pa + L * v));
      w |= simd::bits(simd::changed(simd::abs(d), tv)) << (L * v);
      sq[v % A] = simd::square_add(d, sq[v % A]);
    }
    const simd::vf d = i < whole ? simd::keep(simd::sub(simd::load(pb + L * v), simd::load(pa + L * v)), last)
                                 : simd::sub(simd::load_first(pb + L * v, m), simd::load_first(pa + L * v, m));
    w |= simd::bits(simd::changed(simd::abs(d), tv)) << (L * v);
    sq[v % A] = simd::square_add(d, sq[v % A]);
    simd::vd2 acc = simd::zero_d();
    for (const auto& s : sq) simd::widen_add(acc, s);
    partial f;
    f.sum_sq = simd::sum(acc);
    settle(f.sum_sq, f.nonfinite, pa, pb, len);
    f.changed = static_cast<std::uint64_t>(__builtin_popcountll(w));
    f.weights = len;
    f.channels = C;
    if (channel_bits) {
      if (p.need_channels && C <= HW) {
        for (std::size_t c = 0; c < C; ++c) f.zero_channels += (w & channel_bits[c]) == 0;
      } else if (p.need_channels) {
        std::uint64_t any = 0;  // bit c: channel c changed somewhere
        for (std::size_t q = 0; q < HW; ++q) any |= w >> (q * C);  // q * C < 64
        const std::uint64_t channels = C < 64 ? (std::uint64_t{1} << C) - 1 : ~std::uint64_t{0};
        f.zero_channels = C - static_cast<std::uint64_t>(__builtin_popcountll(any & channels));
      }
      if (r)
        for (std::size_t c = 0; c < C; ++c)
          r[i * C + c] = static_cast<std::uint32_t>(__builtin_popcountll(w & channel_bits[c]));
    } else {
      if (p.need_channels) f.zero_channels = cw.zeros_in(w, tops);
      if (r)
        for (std::size_t c = 0; c < C; ++c)  // c * HW < 64
          r[i * C + c] = static_cast<std::uint32_t>(__builtin_popcountll((w >> (c * HW)) & p.z.group));
    }
    out[i - first] = f;
  }
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
          const run_totals r = fold_run(pa + o, pb + o, len, t.tau);
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

/// The running totals of one group of lanes (G filters) of a lanes walk, kept in scratch memory
/// between chunks of positions: per lane, the double sum of squares, the changed count and the
/// OR of |d| bits (non-zero when some change is).
struct lane_totals {
  double* acc;
  std::uint32_t* cnt;
  std::uint32_t* nz;
  float* sq;  ///< squares not yet added to acc (when a chunk ends before 8 positions)
};

/// How a lanes walk cuts its positions: positions per chunk, and which lines each group fetches
/// ahead while it walks a chunk: its own part of the next chunk (ahead_groups == 0), or the part of
/// the group ahead_groups after it in the walk (of this chunk or the next).
struct lane_chunking {
  std::size_t positions;
  std::size_t ahead_groups;
};

/// Positions per chunk: 32, or fewer where the block is wide. The AVX2 and generic kernels fetch
/// into L1: a block's part of a chunk of both snapshots and of the next chunk, fetched meanwhile,
/// fits in 32 KiB. (Against chunks of at most 8, each group's totals leave registers a quarter as
/// often.) A block wider than 2 KiB a position (more than 512 f32 filters) would get chunks of 2:
/// there, chunks of 4 with each group fetching the part of the group 512 bytes on in the walk,
/// which stays in L1 because it is read soon after (1x1 and 3x3 HWIO f32 layers of 1024 to 3072
/// filters in 0.72-0.91x the time on two threads with AVX2, 0.68-0.73x generic, in cache and from
/// DRAM; blocks of 512 filters, chunks of 4 or 8 so, from DRAM 1.09-1.16x).
/// The AVX-512 kernel fetches each group's own part of the next chunk into L2, and its chunks hold
/// up to 64 KiB of each snapshot for blocks of at most 2 KiB a position (512 f32 filters: chunks
/// of 32), 16 KiB for wider ones (1024 f32 filters: chunks of 4). On a Zen 4 (HWIO f32 layers from
/// 3x3 128 x 256 to 1x1 2048 x 512; docs/benchmarks-log.md), against chunks within 16 KiB of each
/// snapshot: in cache 0.73-1.01x the time on one or two threads, with per-filter results
/// 0.76-1.01x, with R_ic 0.80-1.03x, bf16 0.78-1.01x; from DRAM 0.87-1.05x. Blocks of 4 KiB a
/// position read from DRAM 1.2-1.3x slower in chunks of 16 or 32 (64 KiB and more of each
/// snapshot), as does the same walk with no arithmetic, hence their 16 KiB.
inline lane_chunking lane_chunks(std::size_t block_bytes, std::size_t group_bytes) {
  std::size_t p = 32;
#if FEVO_CPU_KERNEL_ISA == 2
  (void)group_bytes;
  const std::size_t cap = block_bytes <= 2048 ? 65536 : 16384;
  while (p > 1 && p * block_bytes > cap) p /= 2;
  return {p, 0};
#else
  while (p > 1 && p * block_bytes * 4 > 32768) p /= 2;
  if (p >= 4) return {p, 0};
  return {4, group_bytes < 512 ? 512 / group_bytes : 1};
#endif
}

/// The lines a group fetches while it walks a chunk: at element offsets da, db from each of its
/// first n positions, in prev and next.
struct lane_fetch {
  std::ptrdiff_t da = 0, db = 0;
  std::size_t n = 0;
};

/// One chunk of positions: consecutive channels of one (row, col), or of several where the layer
/// is contiguous (fold_lanes), so that a position is the last one's plus the channel stride in
/// each snapshot. oa, ob: element offsets of the first position in prev and next; c: its channel
/// (of the segment); flush_at: the first position of the chunk after which the squares go to
/// double (every 8 positions of the segment, so that a lane sums at most 8 float squares, however
/// the positions are chunked).
struct lane_chunk {
  std::size_t n = 0;
  std::size_t oa = 0, ob = 0, c = 0;
  std::size_t flush_at = 0;
};

/// Adds bit k of w to row[k] for the lanes k of a group (byte counters of R_ic, lanes walk).
inline void count_bytes(std::uint8_t* row, std::uint64_t w) {
#if FEVO_CPU_KERNEL_ISA == 2
  static_assert(lane_vectors * simd::L == 64, "one 64-bit mask for 64 byte lanes");
  const __m512i v = _mm512_loadu_si512(row);
  _mm512_storeu_si512(row, _mm512_mask_sub_epi8(v, w, v, _mm512_set1_epi8(-1)));
#elif FEVO_CPU_KERNEL_ISA == 1
  static_assert(lane_vectors * simd::L == 16, "16 bits to 16 bytes");
  const __m128i sel = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const __m128i spread = _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(w & 0xffffu)),
                                          _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(spread, sel), sel);  // -1 where the bit is set
  _mm_storeu_si128(reinterpret_cast<__m128i*>(row),
                   _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)), set));
#else
  for (std::size_t k = 0; k < lane_vectors * simd::L; ++k) row[k] = static_cast<std::uint8_t>(row[k] + ((w >> k) & 1u));
#endif
}

/// One group of lanes over one chunk: lane j is filter g0 + j (the pointers are at filter g0), NV
/// vectors; with Copy the group has m < L filters, copied into a zero-padded vector first. sa, sb:
/// the channel strides. Z: the "any changed" word of each channel is kept (any: the group's word of
/// channel 0, the next channels' any_stride apart); R: a counter per channel and lane, of type RC
/// (bytes when no channel has more than 255 weights). first: the totals start at zero; last: the
/// squares go to double at the end.
template <class T, std::size_t NV, bool Copy, bool Z, bool R, class RC>
FEVO_CPU_ALWAYS_INLINE void fold_lane_chunk(const T* pa, const T* pb, std::size_t m, std::size_t sa, std::size_t sb,
                            std::size_t C, const lane_chunk& ch, const lane_fetch& fetch, bool first, bool last,
                            simd::vf tv, lane_totals tot, std::uint64_t* any, std::size_t any_stride, RC* rc) {
  constexpr std::size_t L = simd::L, G = lane_vectors * L;  // rc rows are G long in every group
  static_assert(!R || Z, "R_ic are counted from the changed bits of Z");
  simd::vf sq[NV];
  simd::vd2 acc[NV];
  simd::vi cnt[NV], nz[NV];
  // (if/else, not one ?: per total: GCC 12.2 at -O2 with -fsanitize=address,undefined compiled
  // the ?: form of the generic kernel so that vector 0's counts went to vector 1.)
  for (std::size_t v = 0; v < NV; ++v) {
    if (first) {
      sq[v] = simd::zero();
      acc[v] = simd::zero_d();
      cnt[v] = simd::zero_i();
      nz[v] = simd::zero_i();
    } else {
      sq[v] = simd::load(tot.sq + L * v);
      acc[v] = simd::load_d(tot.acc + L * v);
      cnt[v] = simd::load_u32(tot.cnt + L * v);
      nz[v] = simd::load_u32(tot.nz + L * v);
    }
  }
  [[maybe_unused]] T ta[L] = {}, tb[L] = {};
  const T* xa = pa + ch.oa;
  const T* xb = pb + ch.ob;
  // The hardware prefetchers do not follow a walk that reads a part of each position, group by
  // group: fetch the lines the walk reads next at that position (lane_chunks), at xa + da, xb + db,
  // into L1 (AVX2, as measured on Zen 1) or into L2 (AVX-512: on a Zen 4, one thread, HWIO f32
  // layers from 3x3 128x128 to 3x3 512x512 in 0.81-0.89x the time of fetching into L1, bf16 0.99x;
  // bench_cpu's 48 HWIO rows 0.59-0.91x, geometric mean 0.74x; docs/benchmarks-log.md).
  constexpr int locality = FEVO_CPU_KERNEL_ISA == 2 ? 2 : 3;
  const std::ptrdiff_t da = fetch.da, db = fetch.db;
  [[maybe_unused]] std::uint64_t* word_at = nullptr;
  [[maybe_unused]] RC* row = nullptr;
  std::size_t flush_at = ch.flush_at;
  // AVX-512, f32, a whole group: the channel word from the four compare masks joined in mask
  // registers (kunpckwd, kunpckdq) rather than moved out, shifted and ORed one by one. One thread,
  // HWIO f32 layers from 3x3 128x128 to 1x1 1024x256 (Zen 4, two sets of four rounds in turn):
  // 3-5% less time, 1-13% with R_ic; two threads 0-10%. bf16 measured 4% slower so and keeps the
  // shifts, as does the packed walk's step (-3% to +4%); docs/benchmarks-log.md.
  constexpr bool join_masks = FEVO_CPU_KERNEL_ISA == 2 && NV == 4 && std::is_same_v<T, float>;
  // A chunk that goes on to the next (row, col)s is walked as runs of the channels of each.
  for (std::size_t j = 0, c = ch.c; j < ch.n; c = 0) {
    if constexpr (Z) {
      word_at = any + c * any_stride;
      if constexpr (R) row = rc + c * G;
    }
    for (const std::size_t end = ch.n - j < C - c ? ch.n : j + (C - c); j < end; ++j) {
      if (j < fetch.n) {
        for (std::size_t o = 0; o < NV * L * sizeof(T); o += 64) {
          __builtin_prefetch(reinterpret_cast<const char*>(xa + da) + o, 0, locality);
          __builtin_prefetch(reinterpret_cast<const char*>(xb + db) + o, 0, locality);
        }
      }
      const T* ya = xa;
      const T* yb = xb;
      if constexpr (Copy) {
        std::memcpy(ta, xa, m * sizeof(T));
        std::memcpy(tb, xb, m * sizeof(T));
        ya = ta;
        yb = tb;
      }
      xa += sa;
      xb += sb;
      [[maybe_unused]] std::uint64_t word = 0;
      [[maybe_unused]] simd::cmp ks[NV];
      for (std::size_t v = 0; v < NV; ++v) {
        const simd::vf d = simd::sub(simd::load(yb + L * v), simd::load(ya + L * v));
        const simd::vf ad = simd::abs(d);
        const simd::cmp k = simd::changed(ad, tv);
        if constexpr (Z && join_masks) ks[v] = k;
        if constexpr (Z && !join_masks) word |= simd::bits(k) << (L * v);
        sq[v] = simd::square_add(d, sq[v]);
        cnt[v] = simd::count(cnt[v], k);
        nz[v] = simd::or_bits(nz[v], ad);
        if constexpr (R && !std::is_same_v<RC, std::uint8_t>) simd::store(row + L * v, simd::count(simd::load_u32(row + L * v), k));
      }
#if FEVO_CPU_KERNEL_ISA == 2
      if constexpr (Z && join_masks)
        word = _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(ks[3], ks[2]), _mm512_kunpackw(ks[1], ks[0])));
#endif
      if constexpr (R && std::is_same_v<RC, std::uint8_t>) count_bytes(row, word);
      if constexpr (Z) {
        *word_at |= word;
        word_at += any_stride;
        if constexpr (R) row += G;
      }
      if (j == flush_at) {
        for (std::size_t v = 0; v < NV; ++v) {
          simd::widen_add(acc[v], sq[v]);
          sq[v] = simd::zero();
        }
        flush_at += 8;
      }
    }
  }
  for (std::size_t v = 0; v < NV; ++v) {
    if (last) {
      simd::widen_add(acc[v], sq[v]);
      sq[v] = simd::zero();
    }
    simd::store(tot.sq + L * v, sq[v]);
    simd::store(tot.acc + L * v, acc[v]);
    simd::store(tot.cnt + L * v, cnt[v]);
    simd::store(tot.nz + L * v, nz[v]);
  }
}

/// i (0-15) with its four bits reversed: after the four rounds of unpacks in store_lane_counts,
/// the register of index i holds the counts of lane bit_reversed4(i) (in each 128-bit lane).
constexpr std::size_t bit_reversed4(std::size_t i) {
  return ((i & 1) << 3) | ((i & 2) << 1) | ((i & 4) >> 1) | ((i & 8) >> 3);
}
static_assert(bit_reversed4(1) == 8 && bit_reversed4(6) == 6 && bit_reversed4(11) == 13, "4-bit reversal");

/// R_ic of a group's lanes from its counters (bytes or 32-bit): row cc of rc (G counters) counts
/// channel cc for each lane; r[j * r_stride + cc] gets lane j's count for j < m, cc < C.
template <class RC>
inline void store_lane_counts(const RC* rc, std::size_t C, std::size_t m, std::uint32_t* r, std::size_t r_stride) {
  constexpr std::size_t G = lane_vectors * simd::L;
#if FEVO_CPU_KERNEL_ISA == 2
  if constexpr (std::is_same_v<RC, std::uint8_t>) {
    // 16 channels at a time: their 16 rows of 64 bytes are four 16x16 byte blocks, one per 128-bit
    // lane, transposed together by four rounds of unpacks; each lane's 16 counts are then widened
    // and stored at once (against copying count by count: HWIO with R_ic 1.07-1.12x on VGG-16,
    // 1.02-1.05x on ResNet-50). 32-bit counters, and the generic kernel's, are copied count by count.
    static_assert(G == 64, "rows of 64 byte counters");
    for (std::size_t c0 = 0; c0 < C; c0 += 16) {
      const std::size_t n = C - c0 < 16 ? C - c0 : 16;
      __m512i x[16], y[16];
      for (std::size_t i = 0; i < 16; ++i) x[i] = i < n ? _mm512_loadu_si512(rc + (c0 + i) * G) : _mm512_setzero_si512();
      for (std::size_t i = 0; i < 8; ++i) {
        y[i] = _mm512_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
        y[i + 8] = _mm512_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        x[i] = _mm512_unpacklo_epi16(y[2 * i], y[2 * i + 1]);
        x[i + 8] = _mm512_unpackhi_epi16(y[2 * i], y[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        y[i] = _mm512_maskz_unpacklo_epi32(0xffff, x[2 * i], x[2 * i + 1]);
        y[i + 8] = _mm512_maskz_unpackhi_epi32(0xffff, x[2 * i], x[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        x[i] = _mm512_maskz_unpacklo_epi64(0xff, y[2 * i], y[2 * i + 1]);
        x[i + 8] = _mm512_maskz_unpackhi_epi64(0xff, y[2 * i], y[2 * i + 1]);
      }
      // x[i] now holds, in 128-bit lane q, the 16 channels' counts of lane 16 q + (i bit-reversed).
      const __mmask16 keep = static_cast<__mmask16>((1u << n) - 1);
      for (std::size_t i = 0; i < 16; ++i) {
        const std::size_t col = bit_reversed4(i);
        // (masked forms: GCC 12 warns that the unmasked ones read an uninitialised register)
        const __m128i q[4] = {_mm512_maskz_extracti32x4_epi32(0xf, x[i], 0), _mm512_maskz_extracti32x4_epi32(0xf, x[i], 1),
                              _mm512_maskz_extracti32x4_epi32(0xf, x[i], 2), _mm512_maskz_extracti32x4_epi32(0xf, x[i], 3)};
        for (std::size_t l = 0; l < 4; ++l) {
          const std::size_t j = 16 * l + col;
          if (j < m) _mm512_mask_storeu_epi32(r + j * r_stride + c0, keep, _mm512_maskz_cvtepu8_epi32(0xffff, q[l]));
        }
      }
    }
    return;
  }
#elif FEVO_CPU_KERNEL_ISA == 1
  if constexpr (std::is_same_v<RC, std::uint8_t>) {
    // The same with 16-byte rows: 16 channels x 16 lanes, one 16x16 byte block, transposed by four
    // rounds of unpacks; each lane's 16 counts widened and stored 8 at a time. Against copying
    // count by count (one thread, HWIO layers in L2, a 2 GHz Zen 1, best of 5 runs in turn):
    // with R_ic 1.12x on a 1x1 layer of 256 x 128, 1.01-1.03x on 3x3 layers.
    static_assert(G == 16, "rows of 16 byte counters");
    for (std::size_t c0 = 0; c0 < C; c0 += 16) {
      const std::size_t n = C - c0 < 16 ? C - c0 : 16;
      __m128i x[16], y[16];
      for (std::size_t i = 0; i < 16; ++i)
        x[i] = i < n ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rc + (c0 + i) * G)) : _mm_setzero_si128();
      for (std::size_t i = 0; i < 8; ++i) {
        y[i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
        y[i + 8] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        x[i] = _mm_unpacklo_epi16(y[2 * i], y[2 * i + 1]);
        x[i + 8] = _mm_unpackhi_epi16(y[2 * i], y[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        y[i] = _mm_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
        y[i + 8] = _mm_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
      }
      for (std::size_t i = 0; i < 8; ++i) {
        x[i] = _mm_unpacklo_epi64(y[2 * i], y[2 * i + 1]);
        x[i + 8] = _mm_unpackhi_epi64(y[2 * i], y[2 * i + 1]);
      }
      // x[i] now holds the 16 channels' counts of lane (i bit-reversed).
      for (std::size_t i = 0; i < 16; ++i) {
        const std::size_t j = bit_reversed4(i);
        if (j >= m) continue;
        std::uint32_t* out = r + j * r_stride + c0;
        if (n == 16) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_cvtepu8_epi32(x[i]));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_cvtepu8_epi32(_mm_srli_si128(x[i], 8)));
        } else {
          alignas(16) std::uint8_t t[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(t), x[i]);
          for (std::size_t cc = 0; cc < n; ++cc) out[cc] = t[cc];
        }
      }
    }
    return;
  }
#endif
  for (std::size_t j = 0; j < m; ++j)
    for (std::size_t cc = 0; cc < C; ++cc) r[j * r_stride + cc] = rc[cc * G + j];
}

/// The word type of a group's changed bits given to store_lane_bits: 32-bit where a group has at
/// most 32 lanes (AVX2, generic), so that its loop vectorises with the 32-bit lanes of R_ic (1x1
/// HWIO layers with R_ic, two threads, AVX2: 0.90-0.97x the time against 64-bit words;
/// docs/benchmarks-log.md).
using lane_word = std::conditional_t<lane_vectors * simd::L <= 32, std::uint32_t, std::uint64_t>;
static_assert(lane_vectors * simd::L <= 8 * sizeof(lane_word), "a lane_word holds a bit per lane of a group");

/// R_ic of a group's lanes where every channel has one weight (H * W == 1): R_ic is lane j's bit
/// in channel cc's changed word w[cc]; r[j * r_stride + cc] gets it for j < m, cc < C. Lane by
/// lane, so that each lane's row of R_ic is written in order.
inline void store_lane_bits(const lane_word* w, std::size_t C, std::size_t m, std::uint32_t* r,
                            std::size_t r_stride) {
  for (std::size_t j = 0; j < m; ++j) {
    std::uint32_t* out = r + j * r_stride;
    std::size_t cc = 0;
#if FEVO_CPU_KERNEL_ISA == 2
    const __m512i bit = _mm512_set1_epi64(static_cast<long long>(std::uint64_t{1} << j));
    const __m512i one = _mm512_set1_epi32(1);
    for (; cc + 16 <= C; cc += 16) {
      const __mmask8 lo = _mm512_test_epi64_mask(_mm512_loadu_si512(w + cc), bit);
      const __mmask8 hi = _mm512_test_epi64_mask(_mm512_loadu_si512(w + cc + 8), bit);
      _mm512_storeu_si512(out + cc, _mm512_maskz_mov_epi32(_mm512_kunpackb(hi, lo), one));
    }
#endif
    for (; cc < C; ++cc) out[cc] = static_cast<std::uint32_t>((w[cc] >> j) & 1u);
  }
}

/// A group of lanes: filters [g0, g0 + m) in nv vectors, or (copy) fewer than one vector's.
struct lane_group {
  std::size_t g0, m, nv;
  bool copy;
};

template <class T, bool Z, bool R, class RC>
FEVO_CPU_ALWAYS_INLINE void fold_lane_chunk(const lane_group& g, const T* pa, const T* pb, std::size_t sa, std::size_t sb,
                            std::size_t C, const lane_chunk& ch, const lane_fetch& fetch, bool first, bool last,
                            simd::vf tv, lane_totals tot, std::uint64_t* any, std::size_t any_stride, RC* rc) {
  pa += g.g0;  // stride(0) == 1
  pb += g.g0;
#define FEVO_LANE_ARGS pa, pb, g.m, sa, sb, C, ch, fetch, first, last, tv, tot, any, any_stride, rc
  if (g.copy) return fold_lane_chunk<T, 1, true, Z, R>(FEVO_LANE_ARGS);
  switch (g.nv) {
    case lane_vectors: return fold_lane_chunk<T, lane_vectors, false, Z, R>(FEVO_LANE_ARGS);
#if FEVO_CPU_KERNEL_ISA == 2
    case 3: return fold_lane_chunk<T, 3, false, Z, R>(FEVO_LANE_ARGS);
    case 2: return fold_lane_chunk<T, 2, false, Z, R>(FEVO_LANE_ARGS);
#endif
    default: return fold_lane_chunk<T, 1, false, Z, R>(FEVO_LANE_ARGS);
  }
#undef FEVO_LANE_ARGS
}

/// Filters [first, first + count) of a lanes-walk task (stride(0) == 1 in both snapshots), over
/// channels [c0, c1) (a segment of the layer, lane_segments; out gets the segment's totals, r its
/// channels' R_ic): lane j of a group is one filter. The positions (row, col, channel) are walked
/// in chunks of consecutive channels (lane_chunk), and each chunk is done for every group of the
/// block before the next: the block's bytes of a position are read together, whatever the stride
/// between positions. Each lane's arithmetic depends only on its own filter and the positions'
/// order, so the results do not depend on how filters are grouped or positions chunked.
template <class T>
inline void fold_lanes(const layer_task<T, host_space>& t, std::size_t first, std::size_t count,
                       std::size_t c0, std::size_t c1, partial* out, std::uint32_t* r,
                       std::uint64_t* scratch) {
  constexpr std::size_t L = simd::L, G = lane_vectors * L;
  const auto& a = t.prev;
  const auto& b = t.next;
  const std::size_t C = c1 - c0, C_all = a.channels(), H = a.rows(), W = a.cols();
  const bool need_channels = (t.want & (want_Z | want_R)) != 0;
  // Where every channel has one weight (1x1 layers) and R_ic is not asked for, a lane's zero
  // channels are its unchanged weights, C minus its changed count: no "any changed" words are
  // kept (as in the packed walk's runs).
  const bool count_only = need_channels && H * W == 1 && !r;

  // Groups: whole ones of G filters, one of fewer whole vectors, the rest padded to a vector.
  lane_group groups[max_lane_groups];
  std::size_t n_groups = 0;
  {
    std::size_t g = first;
    const std::size_t end = first + count;
    for (; end - g >= G; g += G) groups[n_groups++] = {g, G, lane_vectors, false};
    if ((end - g) / L) {
      groups[n_groups++] = {g, (end - g) / L * L, (end - g) / L, false};
      g += (end - g) / L * L;
    }
    if (g < end) groups[n_groups++] = {g, end - g, 1, true};
  }
  // Scratch (scratch_words): totals of every group, "any changed" bits [C][groups], and with
  // R_ic a counter per channel and lane [groups][C][G] (or, H * W == 1, one group's words).
  std::uint64_t* words = scratch;
  lane_totals tot[max_lane_groups];
  for (std::size_t k = 0; k < n_groups; ++k) {
    tot[k] = {reinterpret_cast<double*>(words), reinterpret_cast<std::uint32_t*>(words + G),
              reinterpret_cast<std::uint32_t*>(words + G) + G, reinterpret_cast<float*>(words + 2 * G)};
    words += 2 * G + G / 2;
  }
  std::uint64_t* any = need_channels && !count_only ? words : nullptr;
  if (any) {
    std::memset(any, 0, C * n_groups * sizeof(std::uint64_t));
    words += C * n_groups;
  }
  // R_ic counters: none where every channel has one weight (R_ic is then the channel's bit in the
  // "any changed" word: store_lane_bits), bytes when no channel has more than 255 weights, else
  // 32-bit.
  const bool bits_only = r && H * W == 1;
  // The "any changed" words of group k and channel c: any[k * group_stride + c * channel_stride].
  // [C][groups], so that a chunk's words of every group lie together; where every channel has one
  // weight (R_ic then comes from the words), [groups][C], so that each group's words are read in
  // order when R_ic is written (1x1 HWIO layers with R_ic 0.82-0.98x the time; [groups][C] for
  // VGG-16's 3x3 layers, whose groups' words lie 4 KiB apart, 1.01-1.09x: docs/benchmarks-log.md).
  const std::size_t group_stride = bits_only ? C : 1, channel_stride = bits_only ? 1 : n_groups;
  const bool byte_counters = H * W <= 255;
  std::uint32_t* rc = r && !byte_counters ? reinterpret_cast<std::uint32_t*>(words) : nullptr;
  std::uint8_t* rc8 = r && byte_counters && !bits_only ? reinterpret_cast<std::uint8_t*>(words) : nullptr;
  if (rc) std::memset(rc, 0, n_groups * C * G * sizeof(std::uint32_t));
  if (rc8) std::memset(rc8, 0, n_groups * C * G);

  const simd::vf tv = simd::splat(t.tau);
  const lane_chunking cut = lane_chunks(count * sizeof(T), G * sizeof(T));
  const std::size_t P = cut.positions;
  // Chunks of at most P consecutive positions (row, col, channel order) of one (row, col), or,
  // where the next (row, col)'s first channel follows the last one's by the channel stride in both
  // snapshots (a whole contiguous HWIO layer), across (row, col), so that layers of few channels
  // get long chunks too. Position p of the segment flushes its squares after p % 8 == 7, whatever
  // the chunks.
  std::size_t hw = 0, c = 0, p = 0;
  const std::size_t positions = H * W * C;
  const bool span = a.stride(3) == C * a.stride(1) && a.stride(2) == W * a.stride(3) &&
                    b.stride(3) == C * b.stride(1) && b.stride(2) == W * b.stride(3);
  const auto next_chunk = [&](lane_chunk& ch) {
    if (hw == H * W) {
      ch.n = 0;
      return;
    }
    const std::size_t y = hw / W, x = hw % W;
    ch.n = span ? (positions - p < P ? positions - p : P) : (C - c < P ? C - c : P);
    ch.oa = y * a.stride(2) + x * a.stride(3) + (c0 + c) * a.stride(1);
    ch.ob = y * b.stride(2) + x * b.stride(3) + (c0 + c) * b.stride(1);
    ch.c = c;
    ch.flush_at = 7 - p % 8;
    p += ch.n;
    for (c += ch.n; c >= C; c -= C) ++hw;
  };
  const T* pa = a.data_handle();
  const T* pb = b.data_handle();
  const std::size_t sa = a.stride(1), sb = b.stride(1);
  // The walk, once for each kind of count it keeps (Kind: 0 none, 1 the "any changed" words, 2
  // those and R_ic counters), each with its chunk code inlined (FEVO_CPU_ALWAYS_INLINE): GCC 12
  // left the chunk code of the walk without words out of line, a call per group and chunk whose
  // totals went through the stack (AVX-512 on a Zen 4, one thread, HWIO f32 1x1 layers of 512 x
  // 512 to 512 x 2048 in 0.54-0.56x the time); with every kind inlined into one function, the R_ic
  // walk ran 1.18-1.46x slower, so each kind is a loop of its own (docs/benchmarks-log.md).
  const auto walk_chunks = [&](auto kind, auto* counters) {
    constexpr int Kind = decltype(kind)::value;
    lane_chunk chunks[2];
    next_chunk(chunks[0]);
    for (std::size_t cur = 0, first_chunk = 1; chunks[cur].n; cur ^= 1, first_chunk = 0) {
      const lane_chunk& ch = chunks[cur];
      const lane_chunk& nx = chunks[cur ^ 1];
      next_chunk(chunks[cur ^ 1]);
      const bool last = nx.n == 0;
      for (std::size_t k = 0; k < n_groups; ++k) {
        // What group k fetches: the part of group f of chunk fc.
        const std::size_t f = cut.ahead_groups ? k + cut.ahead_groups : k + n_groups;
        const bool this_chunk = f < n_groups;
        const lane_chunk& fc = this_chunk ? ch : nx;
        const std::size_t fg = this_chunk ? f : f - n_groups < n_groups ? f - n_groups : n_groups - 1;
        const auto at = [](std::size_t x) { return static_cast<std::ptrdiff_t>(x); };
        const std::ptrdiff_t shift = at(groups[fg].g0) - at(groups[k].g0);
        const lane_fetch fetch{at(fc.oa) - at(ch.oa) + shift, at(fc.ob) - at(ch.ob) + shift, fc.n};
        fold_lane_chunk<T, (Kind >= 1), (Kind == 2)>(groups[k], pa, pb, sa, sb, C, ch, fetch, first_chunk, last, tv, tot[k],
                                                     Kind >= 1 ? any + k * group_stride : nullptr, channel_stride,
                                                     Kind == 2 ? counters + k * C * G : nullptr);
      }
    }
  };
  if (rc8)
    walk_chunks(std::integral_constant<int, 2>{}, rc8);
  else if (rc)
    walk_chunks(std::integral_constant<int, 2>{}, rc);
  else if (any)
    walk_chunks(std::integral_constant<int, 1>{}, rc);
  else
    walk_chunks(std::integral_constant<int, 0>{}, rc);

  for (std::size_t k = 0; k < n_groups; ++k) {
    const lane_group& g = groups[k];
    std::uint32_t zeros[G];
    if (any) {
      // Per lane, the channels in which it never changed: byte counters, 255 channels at a time.
      for (std::size_t j = 0; j < G; ++j) zeros[j] = 0;
      for (std::size_t cc = 0; cc < C;) {
        alignas(64) std::uint8_t zc[G] = {};
        for (const std::size_t end = C - cc < 255 ? C : cc + 255; cc < end; ++cc) count_bytes(zc, ~any[k * group_stride + cc * channel_stride]);
        for (std::size_t j = 0; j < G; ++j) zeros[j] += zc[j];
      }
    }
    for (std::size_t j = 0; j < g.m; ++j) {
      partial f;
      f.sum_sq = tot[k].acc[j];
      f.changed = tot[k].cnt[j];
      f.weights = C * H * W;
      f.channels = C;
      f.zero_channels = any ? zeros[j] : count_only ? C - f.changed : 0;
      if (!(f.sum_sq <= rule::max_finite<double>()) || (f.sum_sq < tiny_sum && tot[k].nz[j] != 0)) {
        // Rare (see fold_run): this filter summed exactly.
        const T* pa = a.data_handle() + g.g0 + j;
        const T* pb = b.data_handle() + g.g0 + j;
        double sum_sq = 0;
        for (std::size_t y = 0; y < H; ++y)
          for (std::size_t x = 0; x < W; ++x)
            for (std::size_t cc = c0; cc < c1; ++cc) {
              const compute_t<T> d = load(pb[y * b.stride(2) + x * b.stride(3) + cc * b.stride(1)]) -
                                     load(pa[y * a.stride(2) + x * a.stride(3) + cc * a.stride(1)]);
              f.nonfinite += rule::nonfinite(rule::magnitude(d));
              sum_sq += rule::square(d);
            }
        f.sum_sq = sum_sq;
      }
      out[g.g0 - first + j] = f;
    }
    if (bits_only) {
      // The group's words, channel by channel, into the C words of scratch left for them.
      lane_word* w = reinterpret_cast<lane_word*>(words);
      for (std::size_t cc = 0; cc < C; ++cc) w[cc] = static_cast<lane_word>(any[k * group_stride + cc * channel_stride]);
      store_lane_bits(w, C, g.m, r + g.g0 * C_all + c0, C_all);
    }
    if (rc) store_lane_counts(rc + k * C * G, C, g.m, r + g.g0 * C_all + c0, C_all);
    if (rc8) store_lane_counts(rc8 + k * C * G, C, g.m, r + g.g0 * C_all + c0, C_all);
  }
}

/// Adds one to counts[k] for each set bit k of w, visiting the set bits: the R_ic of up to 64
/// channels from their changed bits (no bit set past the last counter).
inline void count_each_set_bit(std::uint64_t w, std::uint32_t* counts) {
  for (; w; w &= w - 1) ++counts[__builtin_ctzll(w)];
}

/// The same for 64 counters: AVX-512 and AVX2 add to all 64 at once (subtracting -1 where a bit is
/// set), whatever the number of set bits. OHWI 3x3 layers with R_ic, one thread, on a Zen 4:
/// 0.18-0.34x the time with AVX-512, 0.25-0.38x with AVX2 (docs/benchmarks-log.md).
inline void count_set_bits(std::uint64_t w, std::uint32_t* counts) {
#if FEVO_CPU_KERNEL_ISA == 2
  const __m512i minus_one = _mm512_set1_epi32(-1);
  for (std::size_t q = 0; q < 4; ++q) {
    const auto k = static_cast<__mmask16>(w >> (16 * q));
    const __m512i v = _mm512_loadu_si512(counts + 16 * q);
    _mm512_storeu_si512(counts + 16 * q, _mm512_mask_sub_epi32(v, k, v, minus_one));
  }
#elif FEVO_CPU_KERNEL_ISA == 1
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (std::size_t q = 0; q < 8; ++q) {
    const __m256i byte = _mm256_set1_epi32(static_cast<int>((w >> (8 * q)) & 0xffu));
    const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(byte, bit), bit);  // -1 where set
    auto* p = reinterpret_cast<__m256i*>(counts + 8 * q);
    _mm256_storeu_si256(p, _mm256_sub_epi32(_mm256_loadu_si256(p), set));
  }
#else
  count_each_set_bit(w, counts);
#endif
}

/// What fold_run does with the words of an interleaved run whose positions are whole words (C a
/// multiple of 64): ORs each into its channel word, and counts its bits per channel for R_ic.
struct channel_words {
  static constexpr bool store = false;
  std::uint64_t* anyc;
  std::uint32_t* r;  ///< R_ic of the filter's channels, or null
  std::size_t words, k;  ///< channel words a position, the next word's
  void take(std::uint64_t w, std::size_t) {
    anyc[k] |= w;
    if (r) count_set_bits(w, r + 64 * k);
    if (++k == words) k = 0;
  }
};

/// Folds filter i of an interleaved task (each filter's H*W*C weights contiguous, channel fastest:
/// OHWI, PyTorch's channels_last) into `out`, with R_ic into r_row when it is not null. The filter
/// is one contiguous run, as in the packed walk, cut into runs of whole positions (or, where a
/// position has more than run_length channels, into parts of one at multiples of run_length, so
/// of 64 channels); each position's changed bits are ORed into a bit per channel (`anyc`, C bits)
/// for Z, and for R_ic counted per channel: word by word as they are made where a position is
/// whole words (channel_words: 0.65-0.97x the time of storing the words and taking each position's
/// bits out of them, 0.69-0.78x with R_ic, on a Zen 2), out of the stored words otherwise.
/// (Element by element, as every layout that is neither OIHW nor HWIO was walked before, 3x3
/// layers took 4-14x the time: docs/benchmarks-log.md.)
template <class T>
inline void fold_interleaved(const layer_task<T, host_space>& t, std::size_t i, partial& out,
                             std::uint32_t* r_row, std::uint64_t* bits, std::uint64_t* anyc) {
  const T* pa = t.prev.data_handle() + i * t.prev.stride(0);
  const T* pb = t.next.data_handle() + i * t.next.stride(0);
  const std::size_t C = t.prev.channels(), n = C * t.prev.rows() * t.prev.cols();
  const bool need_channels = (t.want & (want_Z | want_R)) != 0;
  const std::size_t words = (C + 63) / 64;
  if (need_channels) std::memset(anyc, 0, words * sizeof(std::uint64_t));
  if (r_row) std::memset(r_row, 0, C * sizeof(std::uint32_t));
  const std::size_t per = C <= run_length ? run_length / C * C : run_length;
  partial f;
  for (std::size_t off = 0, len = 0; off < n; off += len) {
    const std::size_t c0 = C <= run_length ? 0 : off % C;  // the run's first channel
    len = C <= run_length ? (n - off < per ? n - off : per) : (C - c0 < run_length ? C - c0 : run_length);
    run_totals r;
    if (!need_channels) {
      r = fold_run(pa + off, pb + off, len, t.tau);
    } else if (C % 64 == 0) {
      // Whole words per position: word s of the run is channel word (c0 / 64 + s) % (C / 64).
      channel_words cw{anyc, r_row, words, c0 / 64};
      r = fold_run(pa + off, pb + off, len, t.tau, nullptr, cw);
    } else {
      keep_bits keep;
      r = fold_run(pa + off, pb + off, len, t.tau, bits, keep);
      // Bit j of the run is channel (c0 + j) % C; c0 is 0, or (C > run_length) a multiple of
      // run_length, so a multiple of 64 either way.
      for (std::size_t j = 0, c = c0; j < len; c = 0) {
        const std::size_t take = C - c < len - j ? C - c : len - j;  // channels c .. c + take
        for (std::size_t k = 0; k < take; k += 64) {
          std::uint64_t x = window(bits, j + k);
          if (take - k < 64) x &= (std::uint64_t{1} << (take - k)) - 1;
          anyc[(c + k) / 64] |= x;
          if (r_row && take - k >= 64)
            count_set_bits(x, r_row + c + k);
          else if (r_row)
            count_each_set_bit(x, r_row + c + k);
        }
        j += take;
      }
    }
    f.sum_sq += r.sum_sq;
    f.changed += r.changed;
    f.nonfinite += r.nonfinite;
  }
  f.weights = n;
  f.channels = C;
  if (need_channels) {
    std::uint64_t any = 0;
    for (std::size_t w = 0; w < words; ++w) any += static_cast<std::uint64_t>(__builtin_popcountll(anyc[w]));
    f.zero_channels = C - any;
  }
  out = f;
}

/// Folds filters [first, first + count) of task t into out[0 .. count); a lanes walk only the
/// channels [c0, c1) (the other walks take every channel: c0 == 0, c1 == channels()).
template <class T>
inline void fold_block(const layer_task<T, host_space>& t, walk how, std::size_t first,
                       std::size_t count, std::size_t c0, std::size_t c1, partial* out,
                       std::uint64_t* scratch) {
  std::uint32_t* r =
      t.per_filter && (t.want & want_R) ? t.per_filter->channel_changed.data() : nullptr;
  const std::size_t C = t.prev.channels();
  if constexpr (float_compute<T>) {
    if (how == walk::lanes) {
      fold_lanes(t, first, count, c0, c1, out, r, scratch);
      return;
    }
  }
  if (how == walk::packed) {
    const packed_plan p = plan_packed(t);
    if constexpr (float_compute<T>) {
      if (p.C * p.HW >= 1 && p.C * p.HW <= 64) {
        fold_small(t, p, first, count, out, r);
        return;
      }
    }
    for (std::size_t i = first; i < first + count; ++i)
      fold_packed(t, p, i, out[i - first], r ? r + i * C : nullptr, scratch);
    return;
  }
  if (how == walk::interleaved) {
    if constexpr (float_compute<T>) {
      const packed_plan p = plan_packed(t);
      if (p.C * p.HW >= 1 && p.C * p.HW <= 64) {
        std::uint64_t channel_bits[64] = {};
        for (std::size_t k = 0; k < p.C * p.HW; ++k) channel_bits[k % p.C] |= std::uint64_t{1} << k;
        fold_small(t, p, first, count, out, r, channel_bits);
        return;
      }
    }
    for (std::size_t i = first; i < first + count; ++i)
      fold_interleaved(t, i, out[i - first], r ? r + i * C : nullptr, scratch, scratch + run_length / 64 + 2);
    return;
  }
  for (std::size_t i = first; i < first + count; ++i)
    fold_strided(t, how, i, out[i - first], r ? r + i * C : nullptr);
}

}  // namespace FEVO_CPU_KERNEL_NS
}  // namespace detail
}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
