// fevo analyze over the ranks of an MPI job (mpirun -np K fevo analyze, or srun); docs/scale.md.
//
// The analysed layers, in their order, are cut into one contiguous share per rank of about the
// same bytes (plan_shares); a layer a cut falls inside is split by filter ranges. Each rank reads
// only its share of every snapshot (the shards that hold it), computes the per-filter totals of
// its pieces for a window of pairs, and rank 0 gathers them, merges each layer's filters in filter
// order (as one process does) and writes the run, so the files are byte for byte those of one
// process. Every input is checked first, the checks spread over the ranks: rank 0 reads the base
// snapshot's headers and sends them to all; each rank checks the shards it will read (and a share
// of those nobody reads), and the shards' bytes are summed over the ranks against each index's
// total_size.
#include "analyze.hpp"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <fevo/detail/little_endian.hpp>
#include <fevo/io/checkpoint.hpp>

namespace fevo_cli {
namespace {

using fevo::detail::fail;

/// Filters [first, first + count) of layer `layer`: what a rank computes of it.
struct piece {
  std::size_t layer, first, count;
};

/// The pieces of each of `ranks` ranks: byte-balanced contiguous shares of the layers in order.
/// Each cut at r/K of the bytes goes to the nearest filter boundary, or to a layer boundary when
/// one is within 1/64 of a share (so that a layer is split only where that balances the shares;
/// a layer larger than a share always is).
std::vector<std::vector<piece>> plan_shares(const std::vector<snapshot::entry>& layers,
                                            const std::vector<fevo::layer_info>& descs, int ranks) {
  std::vector<std::uint64_t> start(layers.size() + 1, 0);
  for (std::size_t j = 0; j < layers.size(); ++j) start[j + 1] = start[j] + layers[j].nbytes;
  const std::uint64_t K = std::uint64_t(ranks), total = start.back(), slack = total / K / 64;
  // A cut is a position (layer, filter), normalised so that filter < N.
  using pos = std::pair<std::size_t, std::size_t>;
  std::vector<pos> cut = {{0, 0}};
  for (std::uint64_t r = 1; r < K; ++r) {
    // r/K of the bytes, without overflow: (total / K) r + (total % K) r / K.
    const std::uint64_t t = total / K * r + total % K * r / K;
    const std::size_t j = std::size_t(std::upper_bound(start.begin(), start.end(), t) - start.begin()) - 1;
    pos c = {layers.size(), 0};
    if (j < layers.size()) {
      const std::uint64_t n = descs[j].filters(), fb = layers[j].nbytes / n;
      const std::uint64_t f = std::min<std::uint64_t>(n, (t - start[j] + fb / 2) / fb);
      if (t - start[j] <= slack || f == 0) c = {j, 0};
      else if (start[j + 1] - t <= slack || f == n) c = {j + 1, 0};
      else c = {j, std::size_t(f)};
    }
    cut.push_back(std::max(c, cut.back()));
  }
  cut.push_back({layers.size(), 0});
  std::vector<std::vector<piece>> out(static_cast<std::size_t>(ranks));
  for (std::size_t r = 0; r < out.size(); ++r) {
    const pos a = cut[r], b = cut[r + 1];
    for (std::size_t j = a.first; j < layers.size() && pos{j, 0} < b; ++j) {
      const std::size_t from = j == a.first ? a.second : 0;
      const std::size_t to = j == b.first ? b.second : descs[j].filters();
      if (to > from) out[r].push_back({j, from, to - from});
    }
  }
  return out;
}

/// The bytes of a piece.
std::uint64_t piece_bytes(const piece& p, const std::vector<snapshot::entry>& layers,
                          const std::vector<fevo::layer_info>& descs) {
  return layers[p.layer].nbytes / descs[p.layer].filters() * p.count;
}

/// Little-endian fields, for what travels between ranks.
using writer_bytes = fevo::detail::byte_writer;
struct reader_bytes {
  const std::vector<unsigned char>& b;
  std::size_t at = 0;
  std::uint64_t u64() {
    FEVO_EXPECTS(at + 8 <= b.size(), "internal: a message between ranks is cut short");
    const std::uint64_t v = fevo::detail::get_u64(b.data() + at);
    at += 8;
    return v;
  }
  double f64() {
    const std::uint64_t u = u64();
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }
  std::string text() {
    const std::uint64_t n = u64();
    FEVO_EXPECTS(n <= b.size() - at, "internal: a message between ranks is cut short");
    std::string s(reinterpret_cast<const char*>(b.data() + at), std::size_t(n));
    at += std::size_t(n);
    return s;
  }
};

std::vector<unsigned char> header_bytes(const snapshot::header& h) {
  writer_bytes w;
  w.text(h.path);
  w.u64(std::uint64_t(h.format));
  w.u64(h.entries.size());
  for (const auto& e : h.entries) {
    w.text(e.name);
    w.u64(std::uint64_t(e.type));
    w.u64(e.shape.size());
    for (auto d : e.shape) w.u64(d);
    w.u64(e.nbytes);
    w.u64(e.source);
  }
  return w.b;
}
snapshot::header header_from(const std::vector<unsigned char>& b) {
  reader_bytes r{b};
  snapshot::header h;
  h.path = r.text();
  h.format = io::file_format(r.u64());
  h.entries.resize(std::size_t(r.u64()));
  for (auto& e : h.entries) {
    e.name = r.text();
    e.type = io::dtype(r.u64());
    e.shape.resize(std::size_t(r.u64()));
    for (auto& d : e.shape) d = r.u64();
    e.nbytes = r.u64();
    e.source = std::size_t(r.u64());
  }
  return h;
}

/// The per-filter totals of `pieces` for each pair of a window, computed as compute_chunk does
/// for whole layers: per[pair][piece].
void compute_pieces(backend b, const std::vector<pair_job>& jobs, const std::vector<snapshot::entry>& layers,
                    const std::vector<piece>& pieces, const std::vector<std::size_t>& chunk, const analyze_options& o,
                    std::vector<std::vector<fevo::filter_results>>& per) {
  compute_by_type(
      b, jobs, layers, chunk, o, [&](std::size_t q) { return pieces[q].layer; },
      [&](std::size_t q, const auto& v) { return v.filter_slice(pieces[q].first, pieces[q].count); },
      [&](std::size_t p, std::size_t q, const fevo::layer_metrics&, fevo::filter_results& f) {
        per[p][q] = std::move(f);
      });
}

/// Drops the pages of a piece from a snapshot's mapping: the whole tensor's, or, for a filter
/// range of an [O, I, H, W] tensor, those of its bytes.
void evict_piece(const snapshot& s, const piece& p, const std::vector<snapshot::entry>& layers,
                 const std::vector<fevo::layer_info>& descs, io::layout lay) {
  const std::string& name = layers[p.layer].name;
  if (p.count == descs[p.layer].filters() || lay != io::layout::oihw) {
    s.evict(name);
    return;
  }
  const std::uint64_t fb = layers[p.layer].nbytes / descs[p.layer].filters();
  s.evict(name, p.first * fb, p.count * fb);
}

}  // namespace

int analyze_distributed(const analyze_options& o, const fevo_cli::world& w) {
  const progress clock(0);
  const std::size_t K = std::size_t(w.size());
  backend b = backend::cpu;
  series_plan sp;
  std::vector<io::file_format> formats;
  std::vector<unsigned char> base_bytes;
  // 1. Options, the series (every rank lists it), each snapshot's format; rank 0 reads the headers
  //    of the snapshot the layers are chosen in.
  w.step([&] {
    b = setup(o);
    sp = plan_series(o);
    for (const auto& item : sp.series)
      formats.push_back(io::detail::is_directory(item.path) ? io::file_format::safetensors : io::detect_format(item.path));
    if (w.root()) base_bytes = header_bytes(snapshot::read_header(sp.series[sp.first].path));
  });
  w.broadcast(base_bytes);
  const snapshot::header base = header_from(base_bytes);
  const auto& series = sp.series;

  // 2. The layers, the shares, and the checks of every other snapshot, spread over the ranks.
  std::vector<snapshot::entry> layers;
  std::vector<fevo::layer_info> descs;
  std::string dtypes;
  std::vector<std::vector<piece>> plan;
  std::vector<std::optional<io::shard_index>> index(series.size());
  std::vector<std::uint64_t> shard_bytes(series.size(), 0);  // the bytes of the shards this rank owns
  w.step([&] {
    layers = choose_layers(base, o.sel);
    describe(layers, o, descs, dtypes);
    plan = plan_shares(layers, descs, w.size());
    const auto& mine = plan[std::size_t(w.rank())];
    std::vector<snapshot::entry> my_layers;
    for (const piece& p : mine)
      if (my_layers.empty() || my_layers.back().name != layers[p.layer].name) my_layers.push_back(layers[p.layer]);
    std::unordered_map<std::string, std::size_t> layer_of;
    for (std::size_t j = 0; j < layers.size(); ++j) layer_of.emplace(layers[j].name, j);
    for (std::size_t s = 0; s < series.size(); ++s) {
      if (s == sp.first) continue;
      const std::string& path = series[s].path;
      if (io::checkpoint_kind_of(path) != io::checkpoint_kind::sharded) {
        // A file, or a checkpoint of one file: checked by every rank that reads some of it.
        if (!mine.empty()) check_layers(snapshot::read_header(path), base, my_layers);
        continue;
      }
      index[s] = io::read_shard_index(path);
      const io::shard_index& ix = *index[s];
      // Who reads each shard: the ranks whose pieces it holds; the lowest of them owns it (checks
      // it, counts its bytes). A shard nobody reads is checked by rank k % K.
      std::vector<int> owner(ix.shards.size(), -1);
      std::vector<bool> read_by_me(ix.shards.size(), false);
      for (std::size_t r = 0; r < K; ++r)
        for (const piece& p : plan[r]) {
          const auto it = ix.shard_of.find(layers[p.layer].name);
          if (it == ix.shard_of.end()) {
            if (r == std::size_t(w.rank()))
              fail(ix.path, ": tensor '", layers[p.layer].name, "' is missing (it is in ", base.path, ")");
            continue;
          }
          if (owner[it->second] < 0) owner[it->second] = int(r);
          if (r == std::size_t(w.rank())) read_by_me[it->second] = true;
        }
      for (std::size_t k = 0; k < ix.shards.size(); ++k) {
        if (owner[k] < 0) owner[k] = int(k % K);
        if (!read_by_me[k] && owner[k] != w.rank()) continue;
        const std::vector<snapshot::entry> entries = snapshot::read_shard(ix, k);
        for (const auto& e : entries) {
          const auto it = layer_of.find(e.name);
          if (it == layer_of.end()) continue;
          const snapshot::entry& l = layers[it->second];
          FEVO_EXPECTS(e.type == l.type && e.shape == l.shape, ix.shards[k], ": tensor '", l.name, "' is ",
                       io::dtype_name(e.type), " ", shape_text(e.shape), ", but ", io::dtype_name(l.type), " ",
                       shape_text(l.shape), " in ", base.path);
        }
        if (owner[k] == w.rank())
          for (const auto& e : entries) shard_bytes[s] += e.nbytes;
      }
    }
  });
  // Every shard of every sharded checkpoint was counted by one rank: their sum against total_size.
  const std::vector<std::uint64_t> bytes_of = w.sum(shard_bytes);
  w.step([&] {
    for (std::size_t s = 0; s < series.size(); ++s)
      if (index[s]) io::check_total_size(*index[s], bytes_of[s]);
  });

  // 3. Rank 0 opens the run (or reopens it: --resume); every rank learns where it stands.
  std::unique_ptr<output_dir> od;
  std::unique_ptr<fevo::record::run_writer> writer;
  std::vector<unsigned char> last_bytes;
  const auto fail_root = [&] {
    if (od) od->clean_up(o);
  };
  try {
    w.step([&] {
      if (!w.root()) return;
      od = std::make_unique<output_dir>(o);
      writer = std::make_unique<fevo::record::run_writer>(od->ro, descs, dtypes);
      writer->open();
      writer_bytes lb;
      lb.u64(writer->last_step() ? 1 : 0);
      lb.u64(std::uint64_t(writer->last_step().value_or(0)));
      last_bytes = lb.b;
    });
    w.broadcast(last_bytes);
    reader_bytes lr{last_bytes};
    std::optional<std::int64_t> last;
    if (lr.u64()) last = std::int64_t(lr.u64());

    // 4. The pairs, in windows, as one process computes them (analyze_single), each rank on its
    //    share; rank 0 writes each window's records.
    const std::vector<piece>& mine = plan[std::size_t(w.rank())];
    std::vector<std::string> wanted;
    for (const piece& p : mine)
      if (wanted.empty() || wanted.back() != layers[p.layer].name) wanted.push_back(layers[p.layer].name);
    const auto open = [&](std::size_t s) {
      return std::make_shared<const snapshot>(series[s].path, wanted);
    };
    std::size_t first_next = sp.first + 1, skipped = 0, done = 0;
    if (last)
      while (first_next < series.size() && series[first_next].step <= *last) ++first_next, ++skipped;
    const std::size_t pairs = series.size() - first_next;
    const bool all_mapped = std::all_of(formats.begin() + std::ptrdiff_t(sp.first), formats.end(),
                                        [](io::file_format f) { return f == io::file_format::safetensors; });
    // The window is the same on every rank (each window is one gather): the smallest of theirs.
    std::size_t window = stream_window;
    std::vector<std::uint64_t> share_bytes(K, 0);
    for (std::size_t r = 0; r < K; ++r) {
      std::uint64_t largest = 0;
      for (const piece& p : plan[r]) {
        const std::uint64_t pb = piece_bytes(p, layers, descs);
        share_bytes[r] += pb;
        largest = std::max(largest, pb);
      }
      if (largest) window = std::min<std::size_t>(window, std::clamp<std::uint64_t>(share_bytes[r] / largest, 1, stream_window));
    }
    if (!all_mapped) window = 1;
    const std::uint64_t my_bytes = share_bytes[std::size_t(w.rank())];
    std::vector<std::vector<std::size_t>> chunks;  // of my pieces, at most my_bytes / window each
    {
      std::uint64_t acc = 0;
      for (std::size_t q = 0; q < mine.size(); ++q) {
        const std::uint64_t pb = piece_bytes(mine[q], layers, descs);
        if (chunks.empty() || acc + pb > my_bytes / window) {
          chunks.emplace_back();
          acc = 0;
        }
        chunks.back().push_back(q);
        acc += pb;
      }
    }
    std::uint64_t snapshot_bytes = 0;
    for (const auto& l : layers) snapshot_bytes += l.nbytes;
    const double pair_bytes = 2.0 * double(snapshot_bytes);
    double bytes = 0;
    io_report me;
    me.tensors = mine.size();
    for (const piece& p : mine) me.split += p.count != descs[p.layer].filters();
    const progress loop(0);
    progress prog(pairs, w.root());

    const std::size_t start = sp.ref_step ? sp.first : first_next - 1;
    std::shared_ptr<const snapshot> prev;
    std::int64_t prev_step = series[start].step;
    w.step([&] {
      if (pairs && !mine.empty()) {
        prev = open(start);
        me.bytes += my_bytes;
      }
    });
    std::uint64_t window_no = 0;
    for (std::size_t k = first_next; k < series.size();) {
      const std::size_t wn = std::min(window, series.size() - k);
      std::vector<pair_job> jobs;
      std::vector<std::vector<fevo::filter_results>> per(wn, std::vector<fevo::filter_results>(mine.size()));
      writer_bytes out;
      w.step([&] {
        for (std::size_t p = 0; p < wn; ++p) {
          auto next = mine.empty() ? nullptr : open(k + p);
          jobs.push_back({prev, next, prev_step, series[k + p].step});
          if (!sp.ref_step) {
            prev = next;
            prev_step = series[k + p].step;
          }
        }
        const progress busy(0);
        if (!mine.empty())
          for (const auto& chunk : chunks) {
            compute_pieces(b, jobs, layers, mine, chunk, o, per);
            for (const auto& j : jobs)
              if (j.next != prev)
                for (std::size_t q : chunk) evict_piece(*j.next, mine[q], layers, descs, o.sel.lay);
            if (!sp.ref_step)
              for (std::size_t q : chunk) evict_piece(*jobs.front().prev, mine[q], layers, descs, o.sel.lay);
          }
        me.busy += busy.seconds();
        if (!mine.empty()) me.bytes += wn * my_bytes;
        out.u64(window_no);
        for (std::size_t p = 0; p < wn; ++p)
          for (std::size_t q = 0; q < mine.size(); ++q)
            for (std::size_t i = 0; i < mine[q].count; ++i) {
              const fevo::filter_results& f = per[p][q];
              out.f64(f.D[i]);
              out.u64(f.changed[i]);
              out.u64(f.zero_channels[i]);
              out.u64(f.nonfinite[i]);
            }
      });
      const std::vector<std::vector<unsigned char>> got = w.gather(out.b);
      w.step([&] {
        if (!w.root()) return;
        // Every layer's filters from the ranks that hold them, then each layer's totals merged
        // in filter order, as the backends do for a whole layer.
        std::vector<std::vector<fevo::filter_results>> all(wn, std::vector<fevo::filter_results>(layers.size()));
        for (std::size_t p = 0; p < wn; ++p)
          for (std::size_t j = 0; j < layers.size(); ++j)
            all[p][j].resize(descs[j].filters(), descs[j].channels(), descs[j].filter_size(), false);
        for (std::size_t r = 0; r < K; ++r) {
          reader_bytes in{got[r]};
          FEVO_EXPECTS(in.u64() == window_no, "internal: rank ", r, " sent another window");
          for (std::size_t p = 0; p < wn; ++p)
            for (const piece& pc : plan[r])
              for (std::size_t i = 0; i < pc.count; ++i) {
                fevo::partial f;
                f.sum_sq = in.f64();
                f.changed = in.u64();
                f.zero_channels = in.u64();
                f.nonfinite = in.u64();
                f.weights = descs[pc.layer].filter_size();
                f.channels = descs[pc.layer].channels();
                all[p][pc.layer].store(pc.first + i, f);
              }
          FEVO_EXPECTS(in.at == got[r].size(), "internal: rank ", r, " sent ", got[r].size() - in.at, " bytes too many");
        }
        for (std::size_t p = 0; p < wn; ++p) {
          std::vector<fevo::layer_metrics> metrics(layers.size());
          for (std::size_t j = 0; j < layers.size(); ++j) {
            fevo::partial layer;
            for (std::size_t i = 0; i < descs[j].filters(); ++i) fevo::merge(layer, all[p][j].filter_partial(i));
            metrics[j] = fevo::finalize(layer, descs[j].filters());
          }
          writer->maybe_compact();
          writer->write(jobs[p].step_prev, jobs[p].step, metrics, all[p]);
          prog.step(++done, pair_bytes);
          bytes += pair_bytes;
        }
      });
      ++window_no;
      k += wn;
    }
    w.step([&] {
      if (w.root()) {
        writer->close();
        prog.finish();
      }
    });
    // The summary and (--report-io) what each rank read.
    writer_bytes rep;
    rep.u64(me.bytes);
    rep.f64(me.busy);
    rep.u64(me.tensors);
    rep.u64(me.split);
    const double wall = loop.seconds();
    const auto reports = w.gather(rep.b);
    if (w.root()) {
      print_summary(o, done, skipped, layers.size(), bytes, clock.seconds());
      if (o.report_io) {
        std::vector<io_report> rs;
        for (const auto& x : reports) {
          reader_bytes in{x};
          io_report r;
          r.bytes = in.u64();
          r.busy = in.f64();
          r.tensors = std::size_t(in.u64());
          r.split = std::size_t(in.u64());
          rs.push_back(r);
        }
        print_io_report(rs, wall);
      }
    }
  } catch (...) {
    fail_root();
    throw;
  }
  return 0;
}

}  // namespace fevo_cli
