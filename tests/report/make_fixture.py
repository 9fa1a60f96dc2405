#!/usr/bin/env python3
"""Writes small synthetic run directories in the exact format of the run directory contract, for
the tests of tools/fevo_report.py:

    python3 make_fixture.py OUTDIR [--findings hold|fail] [--seed N] [--no-weight-change]

  OUTDIR/vgg16      a paper-driver run of VGG-16 (13 conv layers, widths 8..32)
  OUTDIR/resnet50   a paper-driver run of ResNet-50 (all 53 conv layers, widths 4..32)
  OUTDIR/analyze    a `fevo analyze --out` directory (metrics.csv, filter_summary.csv), 7 layers, one
                    of whose names needs CSV quoting

--findings hold (the default) builds the data so that every finding of report_findings.py holds,
with margins no seed can undo; --findings fail so that every one does not hold. Per Table III layer
(conv1..conv5) and record t (u = t / steps in (0, 1]):

  hold  VGG-16    mean D 1e-2 * 10^(-i/2) (falls by sqrt(10) per layer, and per weight faster);
                  S = (0.6, 0.5, 0.4, 0.3, 0.2) x (1.3 - 0.6 u), falling with depth and over training;
                  Z = (0.05, 0.15, 0.3, 0.5, 0.7) x (0.7 + 0.6 u), rising with both (so S and Z move
                  against each other); 4 of 32 filters of conv4 and 10 of 32 of conv5 never change
                  (D_i = 0, S_i = 0, Z_i = 1); filters' D spread lognormal(0, 0.8);
                  Table IV: least_D drop 0, most_Z 0.1 points, random (1.0, 1.5, 2.0, 2.5, 3.0) +- 0.2
                  points over 5 draws.
        ResNet-50 mean D (2.0, 2.5, 1.8, 2.2, 1.0) x 1e-3 (out of order, within a factor 2.5, conv5
                  least); S = (0.50, 0.52, 0.49, 0.51, 0.48) x (1.3 - 0.6 u); Z = (0.60, 0.62, 0.58,
                  0.61, 0.57) x u (small at first, rising); no frozen filter; filters' D spread
                  lognormal(0, 0.15); random drops (1.0, 0.2, 0.2, 0.2, 0.2) +- 0.1 points.
  fail  VGG-16    mean D 1e-4 * 10^(i/2) (rises, also per weight); S = (0.86, 0.88, 0.90, 0.92, 0.94)
                  x (1.05 - 0.1 u) (rises with depth, near 1, falls over training like Z);
                  Z = (0.5, 0.4, 0.3, 0.2, 0.1) x (1.3 - 0.6 u); no frozen filter; filters' D spread
                  lognormal(0, 0.1); least_D and most_Z drop 4 points, random (3.0, 2.5, 2.0, 1.5, 1.0)
                  +- 0.2 points.
        ResNet-50 mean D (1.0, 1.1, 1.2, 1.3, 5.0) x 1e-3 (conv5 most); S = 0.95 x (1.05 - 0.1 u);
                  Z = 0.5 x (1.3 - 0.6 u) (large at first, falling); filters' D spread lognormal(0, 2),
                  one frozen filter in conv5; random drops (0.1, 0.5, 0.5, 0.5, 5.0) +- 0.1 points.
Per-filter values scatter around the layer's (D_i by the filter's lognormal factor and +-30 %
noise, S_i and Z_i by +-0.02); D_i also scales with (lr / lr0)^2 at the learning-rate halvings.

weight_change.csv (both driver runs; --no-weight-change leaves it out, as an older driver did):
per layer at position j of its L conv layers, the mean absolute weight a and the relative change
r per record, L1_prev = O C H W a (1 + 0.05 u) (+-1 %), L1_change = r (lr / lr0) L1_prev (+-20 %):
  hold  VGG-16 r = 0.01 x 2^(4 j / (L - 1)), a = 0.05 x 2^(-4 j / (L - 1)): the Table III layers
        conv1..conv5 (j = 0, 3, 6, 9, 12) at r = 0.01 x 2^i, rising with depth (Agrawal et al.);
        ResNet-50 the same over its 53 layers, the Table III layers at r = 0.005 x 2^i.
  fail  both models r = 0.16 x 2^(-4 j / (L - 1)) (falling), a = 0.05 x (1 + j / (L - 1)) (rising);
        the Table III layers at r = 0.16 x 2^(-i).
Every random number comes from numpy.random.default_rng(seed) (seed 1 by default).
"""

import argparse
import json
import os
import struct
import zlib

import numpy as np

STEPS, RECORD_EVERY = 200, 10
LR, LR_HALVE = 2e-4, [100, 150]


def png_bytes(pixels):
    """A PNG file of an 8-bit grayscale (h, w) or RGB (h, w, 3) uint8 array."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = a.shape[:2]
    color = 2 if a.ndim == 3 else 0
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def csv_field(s):
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def vgg_layers(w=(8, 16, 16, 32, 32)):
    out, cin = [], 3
    for b, (n, width) in enumerate(zip((2, 2, 3, 3, 3), w), start=1):
        for k in range(1, n + 1):
            out.append((f"block{b}/conv{b}_{k}", [width, cin, 3, 3]))
            cin = width
    return out


def resnet_layers():
    out = [("block1/conv1", [8, 3, 7, 7])]
    cin = 8
    for b, (units, mid) in enumerate(zip((3, 4, 6, 3), (4, 8, 16, 32)), start=2):
        for u in range(1, units + 1):
            p = f"block{b}/unit_{u}/"
            out += [(p + "conv1", [mid, cin, 1, 1]), (p + "conv2", [mid, mid, 3, 3]),
                    (p + "conv3", [4 * mid, mid, 1, 1])]
            if u == 1:
                out.append((p + "shortcut", [4 * mid, cin, 1, 1]))
            cin = 4 * mid
    return out


VGG_T3 = ["block1/conv1_1", "block2/conv2_2", "block3/conv3_3", "block4/conv4_3", "block5/conv5_3"]
RESNET_T3 = ["block1/conv1", "block2/unit_3/conv2", "block3/unit_4/conv2", "block4/unit_6/conv2",
             "block5/unit_3/conv2"]


def lr_at(step):
    return LR * 0.5 ** sum(step > s for s in LR_HALVE)


class Layer:
    """What one layer's records are built from: D (the layer's D before the learning-rate
    scaling), S(u) and Z(u) (its S and Z at training fraction u), the lognormal sigma of its
    filters' D and the filters that never change."""

    def __init__(self, D, S, Z, sigma=0.5, frozen=()):
        self.D, self.S, self.Z, self.sigma, self.frozen = D, S, Z, sigma, list(frozen)


def recorder_files(d, layers, spec, rng, series=True):
    """metrics.csv, filter_summary.csv and (series) series/ for the given layers, each built from
    spec[name] (a Layer): D_i = D * (lr/LR)^2 * g_i * noise, S_i = S(u) + noise, Z_i = Z(u) + noise;
    the frozen filters never change (D_i = 0, S_i = 0, Z_i = 1)."""
    steps = np.arange(RECORD_EVERY, STEPS + 1, RECORD_EVERY)
    u = (steps / STEPS)[:, None]
    R = len(steps)
    metrics = ["step_prev,step,layer,D,S,Z,n_filters,nonfinite,D_per_weight"]
    summary = ["layer,filter,steps,D_mean,D_min,D_max,frac_S_zero,frac_Z_one"]
    per_layer = {}
    for name, shape in layers:
        N = shape[0]
        L = spec[name]
        g = rng.lognormal(0.0, L.sigma, N)
        moving = np.ones(N, bool)
        moving[L.frozen] = False
        scale = np.array([(lr_at(s) / LR) ** 2 for s in steps])[:, None]
        Di = L.D * scale * g[None, :] * rng.uniform(0.7, 1.3, (R, N)) * moving[None, :]
        Si = np.clip(L.S(u) + rng.uniform(-0.02, 0.02, (R, N)), 0.0, 1.0) * moving[None, :]
        Zi = np.where(moving[None, :], np.clip(L.Z(u) + rng.uniform(-0.02, 0.02, (R, N)), 0.0, 1.0), 1.0)
        per_layer[name] = (Di, Si, Zi)
    for r, s in enumerate(steps):
        for name, shape in layers:
            Di, Si, Zi = per_layer[name]
            D = float(Di[r].mean())
            metrics.append(f"{s - RECORD_EVERY},{s},{csv_field(name)},{D!r},"
                           f"{float(Si[r].mean())!r},{float(Zi[r].mean())!r},{shape[0]},0,"
                           f"{D / (shape[1] * shape[2] * shape[3])!r}")
    for name, shape in layers:
        Di, Si, Zi = per_layer[name]
        for i in range(shape[0]):
            summary.append(f"{csv_field(name)},{i},{R},{float(Di[:, i].mean())!r},{float(Di[:, i].min())!r},"
                           f"{float(Di[:, i].max())!r},{float(np.mean(Si[:, i] == 0))!r},"
                           f"{float(np.mean(Zi[:, i] == 1))!r}")
    write(os.path.join(d, "metrics.csv"), "\n".join(metrics) + "\n")
    write(os.path.join(d, "filter_summary.csv"), "\n".join(summary) + "\n")
    if series:
        sd = os.path.join(d, "series")
        os.makedirs(sd, exist_ok=True)
        np.save(os.path.join(sd, "steps.npy"), np.stack([steps - RECORD_EVERY, steps], axis=1).astype(np.int64))
        index = ["layer,D,S,Z,n_filters"]
        for name, shape in layers:
            stem = name.replace("/", "__")
            for k, a in zip("DSZ", per_layer[name]):
                np.save(os.path.join(sd, f"{stem}.{k}.npy"), a.astype(np.float64))
            index.append(f"{csv_field(name)},{stem}.D.npy,{stem}.S.npy,{stem}.Z.npy,{shape[0]}")
        write(os.path.join(sd, "index.csv"), "\n".join(index) + "\n")
    return per_layer


def weight_change_file(d, layers, t3, hold, base, rng):
    """weight_change.csv of the layers (see the module docstring), rows in metrics.csv's order."""
    steps = np.arange(RECORD_EVERY, STEPS + 1, RECORD_EVERY)
    L = len(layers)
    spec = {}
    for j, (name, shape) in enumerate(layers):
        x = j / (L - 1)
        spec[name] = ((0.01 * 2 ** (4 * x), 0.05 * 2 ** (-4 * x)) if hold else
                      (0.16 * 2 ** (-4 * x), 0.05 * (1 + x)))
    for i, name in enumerate(t3):
        spec[name] = (base * 2 ** i if hold else 0.16 * 2 ** -i, spec[name][1])
    lines = ["step_prev,step,layer,L1_change,L1_prev,relative_change"]
    for s in steps:
        u = s / STEPS
        for name, shape in layers:
            r, a = spec[name]
            prev = float(np.prod(shape) * a * (1 + 0.05 * u) * rng.uniform(0.99, 1.01))
            change = float(r * (lr_at(s) / LR) * prev * rng.uniform(0.8, 1.2))
            lines.append(f"{s - RECORD_EVERY},{s},{csv_field(name)},{change!r},{prev!r},{change / prev!r}")
    write(os.path.join(d, "weight_change.csv"), "\n".join(lines) + "\n")


def driver_run(d, model, layers, t3, spec, table4_drops, rng):
    """A paper-driver run directory; table4_drops per Table III layer: (least_D drop, most_Z drop,
    random drop mean, random drop std), accuracies as fractions."""
    os.makedirs(d, exist_ok=True)
    cfg = {"model": model, "width": 0.125, "input_size": 32, "dataset": "synthetic fixture", "classes": 10,
           "train_images": 640, "test_images": 160, "steps": STEPS, "batch": 16, "lr": LR,
           "lr_halve_steps": LR_HALVE, "tau": LR, "record_every": RECORD_EVERY, "seed": 1, "device": "cpu",
           "threads": 2, "versions": {"fevo": "0.1.0", "libtorch": "fixture"}, "table3": t3,
           "conv_layers": [{"name": n, "shape": s} for n, s in layers]}
    write(os.path.join(d, "config.json"), json.dumps(cfg, indent=2) + "\n")
    write(os.path.join(d, "summary.json"), json.dumps(
        {"final_test_accuracy": 0.4375, "train_seconds": 12.5, "record_seconds": 0.5,
         "recording_overhead": 0.04, "steps": STEPS, "records": STEPS // RECORD_EVERY}) + "\n")
    log = ["step,epoch,loss,accuracy,lr,time_s"]
    for s in range(0, STEPS + 1, RECORD_EVERY):
        log.append(f"{s},{s * 16 / 640!r},{float(2.3 * np.exp(-s / 150) + 0.1)!r},{min(1.0, 0.1 + s / 400)!r},"
                   f"{lr_at(s)!r},{s * 0.06!r}")
    write(os.path.join(d, "train_log.csv"), "\n".join(log) + "\n")
    recorder_files(d, layers, spec, rng)

    # First-layer weights: a random walk, filter i moving at speed (i + 1) / O.
    O, I, H, W = layers[0][1]
    K = STEPS // RECORD_EVERY + 1
    speed = (np.arange(O) + 1.0) / O
    w = rng.normal(0, 0.3, (1, O, I, H, W)) + np.cumsum(
        rng.normal(0, 0.05, (K, O, I, H, W)) * speed[None, :, None, None, None], axis=0)
    np.save(os.path.join(d, "first_layer.npy"), w.astype(np.float32))
    np.save(os.path.join(d, "first_layer_steps.npy"), np.arange(0, STEPS + 1, RECORD_EVERY, dtype=np.int64))

    f3 = os.path.join(d, "fig3")
    os.makedirs(f3, exist_ok=True)
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=2).astype(np.uint8)
    with open(os.path.join(f3, "input.png"), "wb") as f:
        f.write(png_bytes(img))
    index = ["step,filter,file"]
    for step in (0, STEPS):
        for filt in sorted(rng.choice(O, 5, replace=False).tolist()) if step == 0 else chosen:
            m = rng.uniform(0, 255, (30, 30)).astype(np.uint8)
            m[0, 0], m[-1, -1] = 0, 255  # min-max normalised
            name = f"step_{step}_filter_{filt}.png"
            with open(os.path.join(f3, name), "wb") as f:
                f.write(png_bytes(m))
            index.append(f"{step},{filt},{name}")
        if step == 0:
            chosen = [int(r.split(",")[1]) for r in index[1:]]
    write(os.path.join(f3, "index.csv"), "\n".join(index) + "\n")

    shapes = dict(layers)
    t4 = ["layer,filters,zeroed,criterion,draws,baseline_accuracy,accuracy_mean,accuracy_std,drop_mean,drop_std"]
    md = ["| layer | filters | zeroed | criterion | draws | baseline | accuracy | std | drop | drop std |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    base = 0.4375
    for name, (least, mostz, rmean, rstd) in zip(t3, table4_drops):
        n = shapes[name][0]
        z = max(1, n // 8)
        for crit, drop, std, draws in (("least_D", least, 0.0, 1), ("most_Z", mostz, 0.0, 1),
                                       ("random", rmean, rstd, 5)):
            t4.append(f"{name},{n},{z},{crit},{draws},{base!r},{base - drop!r},{std!r},{drop!r},{std!r}")
            md.append(f"| {name} | {n} | {z} | {crit} | {draws} | {base:.4f} | {base - drop:.4f} | {std:.4f} | "
                      f"{drop:.4f} | {std:.4f} |")
    write(os.path.join(d, "table4.csv"), "\n".join(t4) + "\n")
    write(os.path.join(d, "table4.md"), "\n".join(md) + "\n")


def const(v):
    return lambda u: v + 0 * u


def vgg_spec(layers, hold):
    """VGG-16's layers (see the module docstring); the layers outside Table III sit in between."""
    if hold:
        spec = {n: Layer(1e-2 * 10 ** (-0.25 * i), const(0.4), const(0.2), 0.8) for i, (n, _) in enumerate(layers)}
        for i, n in enumerate(VGG_T3):
            s0, z0 = (0.6, 0.5, 0.4, 0.3, 0.2)[i], (0.05, 0.15, 0.3, 0.5, 0.7)[i]
            spec[n] = Layer(1e-2 * 10 ** (-0.5 * i), lambda u, s0=s0: s0 * (1.3 - 0.6 * u),
                            lambda u, z0=z0: z0 * (0.7 + 0.6 * u), 0.8)
        spec["block4/conv4_3"].frozen = list(range(4))
        spec["block5/conv5_3"].frozen = list(range(10, 20))
        drops = [(0.0, 0.001, r, 0.002) for r in (0.010, 0.015, 0.020, 0.025, 0.030)]
    else:
        spec = {n: Layer(1e-4 * 10 ** (0.25 * i), const(0.9), const(0.3), 0.1) for i, (n, _) in enumerate(layers)}
        for i, n in enumerate(VGG_T3):
            s0, z0 = (0.86, 0.88, 0.90, 0.92, 0.94)[i], (0.5, 0.4, 0.3, 0.2, 0.1)[i]
            spec[n] = Layer(1e-4 * 10 ** (0.5 * i), lambda u, s0=s0: s0 * (1.05 - 0.1 * u),
                            lambda u, z0=z0: z0 * (1.3 - 0.6 * u), 0.1)
        drops = [(0.04, 0.04, r, 0.002) for r in (0.030, 0.025, 0.020, 0.015, 0.010)]
    return spec, drops


def resnet_spec(layers, hold):
    if hold:
        spec = {n: Layer(2e-3, lambda u: 0.5 * (1.3 - 0.6 * u), lambda u: 0.6 * u, 0.15) for n, _ in layers}
        for n, d, s0, z1 in zip(RESNET_T3, (2.0e-3, 2.5e-3, 1.8e-3, 2.2e-3, 1.0e-3), (0.50, 0.52, 0.49, 0.51, 0.48),
                                (0.60, 0.62, 0.58, 0.61, 0.57)):
            spec[n] = Layer(d, lambda u, s0=s0: s0 * (1.3 - 0.6 * u), lambda u, z1=z1: z1 * u, 0.15)
        drops = [(0.001, 0.001, r, 0.001) for r in (0.010, 0.002, 0.002, 0.002, 0.002)]
    else:
        spec = {n: Layer(1e-3, lambda u: 0.95 * (1.05 - 0.1 * u), lambda u: 0.5 * (1.3 - 0.6 * u), 2.0)
                for n, _ in layers}
        for n, d in zip(RESNET_T3, (1.0e-3, 1.1e-3, 1.2e-3, 1.3e-3, 5.0e-3)):
            spec[n].D = d
        spec[RESNET_T3[4]].frozen = [0]
        drops = [(0.001, 0.001, r, 0.001) for r in (0.001, 0.005, 0.005, 0.005, 0.050)]
    return spec, drops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--findings", choices=("hold", "fail"), default="hold",
                    help="build the runs so that every finding holds, or so that none does")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-weight-change", action="store_true",
                    help="leave weight_change.csv out of the driver runs (as an older paper driver did)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    hold = args.findings == "hold"

    vl = vgg_layers()
    spec, drops = vgg_spec(vl, hold)
    driver_run(os.path.join(args.out, "vgg16"), "vgg16", vl, VGG_T3, spec, drops, rng)
    if not args.no_weight_change:
        weight_change_file(os.path.join(args.out, "vgg16"), vl, VGG_T3, hold, 0.01, rng)

    rl = resnet_layers()
    spec, drops = resnet_spec(rl, hold)
    driver_run(os.path.join(args.out, "resnet50"), "resnet50", rl, RESNET_T3, spec, drops, rng)
    if not args.no_weight_change:
        weight_change_file(os.path.join(args.out, "resnet50"), rl, RESNET_T3, hold, 0.005, rng)

    al = [(f"features.{2 * i}.weight", [4 + 2 * i, 3, 3, 3]) for i in range(6)] + [('odd,name "x"', [5, 3, 1, 1])]
    recorder_files(os.path.join(args.out, "analyze"), al,
                   {n: Layer(1e-3 / (i + 1), const(0.4), const(0.1)) for i, (n, _) in enumerate(al)}, rng,
                   series=False)


if __name__ == "__main__":
    main()
