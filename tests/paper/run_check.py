#!/usr/bin/env python3
"""A short seeded fevo_paper run writes every file of the run directory, and its online metrics
equal `fevo analyze` run offline on the snapshots it saved (same steps, same tau): S, Z, n_filters
and nonfinite exactly, D within a relative 1e-9. Its weight_change.csv has a row per layer per
record, in metrics.csv's order, and equals sum |W_t - W_prev| and sum |W_prev| recomputed from the
snapshots in float64 within 2 n 2^-53 relative (n weights of the layer; see check_weight_change).

usage: run_check.py FEVO_PAPER FEVO WORKDIR
"""
import csv
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    types = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=types[t["dtype"]]).reshape(t["shape"])
    return out, meta


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout)
    check(p.returncode == 0, f"exit status {p.returncode}: {' '.join(cmd)}")
    return p.stdout


def check_run(paper, fevo, work, model, steps, record_every, extra):
    out = os.path.join(work, model)
    cmd = [paper, "--model", model, "--data", "fashion-mnist", "--out", out, "--width", "0.125",
           "--size", "32", "--steps", str(steps), "--batch", "32", "--train-images", "256",
           "--test-images", "128", "--record-every", str(record_every), "--snapshot-every",
           str(record_every), "--seed", "11", "--threads", "2", "--zero-draws", "5"] + extra
    text = run(cmd)
    check("overhead" in text and "seed 11" in text, "the run prints its seed and the recording overhead")

    # ---- every file of the contract ----
    for name in ["config.json", "train_log.csv", "summary.json", "metrics.csv", "filter_summary.csv",
                 "series/index.csv", "series/steps.npy", "first_layer.npy", "first_layer_steps.npy",
                 "fig3/input.png", "fig3/index.csv", "table4.csv", "table4.md", "final.safetensors",
                 "weight_change.csv"]:
        check(os.path.isfile(os.path.join(out, name)), f"{model}: {name} is missing")
    check(glob.glob(os.path.join(out, "events.out.tfevents.*")), f"{model}: no TensorBoard event file")
    check(os.path.isdir(os.path.join(out, "fevo-state")), f"{model}: no fevo-state/")

    cfg = json.load(open(os.path.join(out, "config.json")))
    for key in ["model", "width", "input_size", "dataset", "classes", "train_images", "test_images", "steps",
                "batch", "lr", "lr_halve_steps", "tau", "record_every", "seed", "device", "threads", "versions",
                "table3", "conv_layers"]:
        check(key in cfg, f"{model}: config.json lacks {key}")
    check(cfg["model"] == model and cfg["steps"] == steps and cfg["seed"] == 11, "config values")
    check(cfg["tau"] == cfg["lr"] == 2e-4, "tau defaults to the initial learning rate")
    check(set(cfg["versions"]) >= {"fevo", "libtorch"}, "versions")
    check(len(cfg["table3"]) == 5, "five Table III layers")
    layers = [c["name"] for c in cfg["conv_layers"]]
    check(all(t in layers for t in cfg["table3"]), "Table III layers are recorded")
    check(len(layers) == (13 if model == "vgg16" else 53), f"{model}: {len(layers)} conv layers")

    log = read_csv(os.path.join(out, "train_log.csv"))
    check(list(log[0].keys()) == ["step", "epoch", "loss", "accuracy", "lr", "time_s"], "train_log.csv header")
    check(len(log) == steps and int(log[-1]["step"]) == steps, "one log row per step")
    check(all(0 <= float(r["accuracy"]) <= 1 for r in log), "accuracy in [0, 1]")

    summary = json.load(open(os.path.join(out, "summary.json")))
    for key in ["final_test_accuracy", "train_seconds", "record_seconds", "recording_overhead", "steps", "records"]:
        check(key in summary, f"summary.json lacks {key}")
    records = summary["records"]
    check(records == -(-steps // record_every), f"{records} records")
    check(0 < summary["weight_change_seconds"] <= summary["record_seconds"],
          "weight_change_seconds is a positive part of record_seconds")

    first = np.load(os.path.join(out, "first_layer.npy"))
    first_steps = np.load(os.path.join(out, "first_layer_steps.npy"))
    check(first.dtype == np.float32 and first_steps.dtype == np.int64, "first-layer dtypes")
    check(first.shape[0] == records + 1 and first.ndim == 5, f"first_layer.npy shape {first.shape}")
    check(list(first.shape[1:]) == cfg["conv_layers"][0]["shape"], "first-layer shape")
    check(first_steps[0] == 0 and first_steps[-1] == steps, "first-layer steps")

    fig = read_csv(os.path.join(out, "fig3", "index.csv"))
    check(len(fig) == 10 and {int(r["step"]) for r in fig} == {0, steps}, "fig3: 5 filters at 2 steps")
    for r in fig:
        png = os.path.join(out, "fig3", r["file"])
        check(os.path.isfile(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"{png} is a PNG")

    t4 = read_csv(os.path.join(out, "table4.csv"))
    check(list(t4[0].keys()) == ["layer", "filters", "zeroed", "criterion", "draws", "baseline_accuracy",
                                 "accuracy_mean", "accuracy_std", "drop_mean", "drop_std"], "table4.csv header")
    check(len(t4) == 15, "table4.csv: 5 layers x 3 criteria")
    check([r["layer"] for r in t4[::3]] == cfg["table3"], "table4 layers are Table III's")
    for r in t4:
        check(r["criterion"] in ("least_D", "most_Z", "random"), "criterion")
        check(int(r["draws"]) == (5 if r["criterion"] == "random" else 1), "draws")
        check(abs(float(r["baseline_accuracy"]) - summary["final_test_accuracy"]) < 1e-12, "baseline")

    final, meta = read_safetensors(os.path.join(out, "final.safetensors"))
    check(meta.get("step") == str(steps), "final.safetensors __metadata__ step")
    check(all(n in final for n in layers), "final.safetensors names conv weights by layer")
    check(np.array_equal(final[layers[0]], first[-1]), "first_layer.npy ends with the final first-layer weights")

    # ---- snapshots and the offline analysis ----
    snaps = sorted(glob.glob(os.path.join(out, "snapshots", "step_*.safetensors")))
    check(len(snaps) == records + 1, f"{len(snaps)} snapshots")
    last, last_meta = read_safetensors(os.path.join(out, "snapshots", f"step_{steps}.safetensors"))
    check(last_meta.get("step") == str(steps), "snapshot metadata step")
    check(np.array_equal(last[layers[0]], first[-1]), "last snapshot = last first-layer record")
    offline = os.path.join(work, model + "_offline")
    run([fevo, "analyze", *snaps, "--tau", repr(cfg["tau"]), "--out", offline])
    online_rows = read_csv(os.path.join(out, "metrics.csv"))
    offline_rows = read_csv(os.path.join(offline, "metrics.csv"))
    key = lambda r: (int(r["step_prev"]), int(r["step"]), r["layer"])
    on = {key(r): r for r in online_rows}
    off = {key(r): r for r in offline_rows}
    check(len(on) == records * len(layers), f"metrics.csv holds {len(on)} rows")
    check(set(on) == set(off), "online and offline metrics have the same (step_prev, step, layer) rows")
    worst = 0.0
    for k in on:
        a, b = on[k], off[k]
        for col in ("S", "Z", "n_filters", "nonfinite"):
            check(float(a[col]) == float(b[col]), f"{k} {col}: online {a[col]} offline {b[col]}")
        da, db = float(a["D"]), float(b["D"])
        rel = abs(da - db) / max(abs(db), 1e-300)
        worst = max(worst, rel)
        check(rel <= 1e-9, f"{k} D: online {da} offline {db}")
    print(f"{model}: {len(on)} metric rows agree (largest relative D difference {worst:.3g})")
    check_weight_change(out, cfg, snaps, online_rows)
    fs_on = {(r["layer"], r["filter"]): r for r in read_csv(os.path.join(out, "filter_summary.csv"))}
    fs_off = {(r["layer"], r["filter"]): r for r in read_csv(os.path.join(offline, "filter_summary.csv"))}
    check(set(fs_on) == set(fs_off), "filter_summary.csv rows")
    for k in fs_on:
        for col in ("steps", "frac_S_zero", "frac_Z_one"):
            check(float(fs_on[k][col]) == float(fs_off[k][col]), f"filter_summary {k} {col}")
        check(abs(float(fs_on[k]["D_mean"]) - float(fs_off[k]["D_mean"])) <=
              1e-9 * abs(float(fs_off[k]["D_mean"])) + 1e-300, f"filter_summary {k} D_mean")


def check_weight_change(out, cfg, snaps, metrics_rows):
    """weight_change.csv: one row per (record, layer), keyed and ordered as metrics.csv, and
    L1_change = sum |W_t - W_prev|, L1_prev = sum |W_prev| recomputed here from the snapshots (one
    per record step, step 0 included). The recomputation takes each difference of two float32
    weights in float64, which is exact (to half an ulp of a double), as the driver does; the sums
    of n non-negative float64 terms then differ only in their order, each within (n - 1) 2^-53 of
    the exact sum: the bound is 2 n 2^-53 relative. relative_change is L1_change / L1_prev."""
    path = os.path.join(out, "weight_change.csv")
    with open(path, newline="") as f:
        header = f.readline().strip()
    check(header == "step_prev,step,layer,L1_change,L1_prev,relative_change", f"weight_change.csv header {header}")
    rows = read_csv(path)
    key = lambda r: (int(r["step_prev"]), int(r["step"]), r["layer"])
    check([key(r) for r in rows] == [key(r) for r in metrics_rows],
          "weight_change.csv has metrics.csv's (step_prev, step, layer) rows in the same order")
    layers = [c["name"] for c in cfg["conv_layers"]]
    check(len(rows) == len(metrics_rows) and len(rows) % len(layers) == 0, "a row per layer per record")
    weights = {}
    for p in snaps:
        w, meta = read_safetensors(p)
        weights[int(meta["step"])] = w
    worst, checked = 0.0, 0
    for r in rows:
        change, prev = float(r["L1_change"]), float(r["L1_prev"])
        check(float(r["relative_change"]) == change / prev, f"{key(r)}: relative_change = L1_change / L1_prev")
        a = weights[int(r["step_prev"])][r["layer"]].astype(np.float64)
        b = weights[int(r["step"])][r["layer"]].astype(np.float64)
        bound = 2 * a.size * 2.0 ** -53
        for got, want in ((change, np.abs(b - a).sum()), (prev, np.abs(a).sum())):
            rel = abs(got - want) / max(want, 1e-300)
            worst = max(worst, rel)
            check(rel <= bound, f"{key(r)}: weight_change.csv {got!r}, from the snapshots {want!r} "
                                f"(relative {rel:.3g} > {bound:.3g})")
        check(change > 0, f"{key(r)}: the weights moved between records")
        checked += 1
    print(f"weight_change.csv: {checked} rows equal the snapshots' sums (largest relative difference {worst:.3g})")


def write_png(path, rgb):
    """A minimal RGB PNG writer (8-bit, no filter), enough for the ImageFolder run."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))
    chunk = lambda tag, data: (struct.pack(">I", len(data)) + tag + data +
                               struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def check_folder_run(paper, work):
    """An ImageFolder of generated PNG files: 3 classes, RGB, resized to 32 px."""
    root = os.path.join(work, "folder")
    rng = np.random.default_rng(3)
    for c, name in enumerate(["red", "green", "blue"]):
        os.makedirs(os.path.join(root, name))
        for i in range(8):
            img = rng.integers(0, 60, size=(30 + i, 40, 3))
            img[..., c] += 150
            write_png(os.path.join(root, name, f"{i}.png"), img)
    out = os.path.join(work, "folder_run")
    run([paper, "--model", "vgg16", "--data", root, "--out", out, "--width", "0.125", "--size", "32",
         "--steps", "6", "--batch", "8", "--record-every", "2", "--seed", "2", "--threads", "2", "--quiet"])
    cfg = json.load(open(os.path.join(out, "config.json")))
    check(cfg["classes"] == 3 and cfg["class_names"] == ["blue", "green", "red"], "folder classes")
    check(cfg["train_images"] == 21 and cfg["test_images"] == 3, "folder split: a fifth of each class (at least 1) held out")
    check(cfg["conv_layers"][0]["shape"] == [8, 3, 3, 3], "RGB first layer")
    check(np.load(os.path.join(out, "first_layer.npy")).shape == (4, 8, 3, 3, 3), "first-layer series")
    check(os.path.isfile(os.path.join(out, "table4.csv")), "folder run: table4.csv")


def main():
    paper, fevo, work = sys.argv[1:4]
    if not os.path.isfile(os.path.join(FASHION, "train-images-idx3-ubyte.gz")):
        fail(f"{FASHION} is missing: install the Debian package dataset-fashion-mnist")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    check_run(paper, fevo, work, "vgg16", 30, 10, ["--lr-halve-steps", "20"])
    check_run(paper, fevo, work, "resnet50", 12, 4, ["--lr-halve-steps", "none"])
    check_folder_run(paper, work)
    # A run directory that already holds a run is refused.
    p = subprocess.run([paper, "--model", "vgg16", "--data", "fashion-mnist", "--out", os.path.join(work, "vgg16"),
                        "--steps", "1"], capture_output=True, text=True)
    check(p.returncode == 2 and "already holds a run" in p.stderr, f"reused run directory: {p.returncode} {p.stderr}")
    print("ok")


if __name__ == "__main__":
    main()
