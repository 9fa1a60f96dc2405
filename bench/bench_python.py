#!/usr/bin/env python3
"""fevo's Python binding against PyTorch eager and against the C++ library on the same memory.

    python bench/bench_python.py [--threads 2] [--quick] [--wait-for-quiet] [--json OUT.json]

On the conv weights of VGG-16 (13 layers, 14.7M weights) and ResNet-50 (53 layers, 23.5M; shapes
as in bench/models.hpp), float32, random data as bench_cpu.cpp makes it (prev ~ N(0, 0.05); 70%
of the weights move by N(0, 3e-4); tau = 2e-4), with `--threads` threads (OpenMP for fevo,
torch.set_num_threads for PyTorch), in one run:

  * fevo.compute_layers on the whole model, against the torch eager formula (the one a PyTorch
    user writes, layer by layer: d = b - a, D = d.pow(2).sum((1,2,3)).mean(), ...): target >= 5x;
  * fevo.compute_layers against the C++ fevo::compute_layers on the same memory (the extension's
    private timing entry, the same compiled code without Python around it): target >= 0.9x; and,
    to tell the binding's cost from pandas', the extension's call that returns the columns as a
    tuple of NumPy arrays, from which fevo.compute_layers builds its DataFrame;
  * the per-call overhead of fevo.compute on a 3x3x3x64 layer: the Python call's time minus the
    C++ call's on the same memory (medians of single calls): target <= 5 us.

With a usable CUDA device the same on CUDA tensors. Each time is the median of several calls
(whole models: of single calls in interleaved rounds).
Targets are printed as PASS or MISS; the exit status is 0 either way (benchmarks never assert
timings). --wait-for-quiet first waits (polling every 30 s, at most 20 minutes) for the 1-minute
load average to fall below 1.5, and prints what it was.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

TAU = 2e-4


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="models shrunk 8x, fewer repetitions (a smoke run)")
    ap.add_argument("--wait-for-quiet", action="store_true")
    ap.add_argument("--json")
    return ap.parse_args()


ARGS = parse()
# Before numpy, torch or fevo load an OpenMP runtime.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fevo  # noqa: E402
from fevo import _fevo  # noqa: E402


def vgg16(shrink):
    def s(c):
        return max(c // shrink, 1)
    cfg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
           (512, 512), (512, 512), (512, 512), (512, 512)]
    names = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
             "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
    return [(n, (s(o), 3 if i == 3 else s(i), 3, 3)) for n, (i, o) in zip(names, cfg)]


def resnet50(shrink):
    def s(c):
        return max(c // shrink, 1)
    out = [("conv1", (s(64), 3, 7, 7))]
    inp = s(64)
    for st, units in enumerate([3, 4, 6, 3]):
        mid, o = s(64 << st), s(256 << st)
        for u in range(units):
            p = f"layer{st + 1}.{u}."
            out += [(p + "conv1", (mid, inp, 1, 1)), (p + "conv2", (mid, mid, 3, 3)), (p + "conv3", (o, mid, 1, 1))]
            if u == 0:
                out.append((p + "downsample", (o, inp, 1, 1)))
            inp = o
    return out


def model_data(shapes, seed):
    """prev and next of every layer, as views of one contiguous float32 buffer per snapshot."""
    total = sum(int(np.prod(s)) for _, s in shapes)
    rng = np.random.default_rng(seed)
    prev = (rng.standard_normal(total, dtype=np.float32) * np.float32(0.05))
    move = rng.random(total, dtype=np.float32) >= np.float32(0.30)
    nxt = prev + np.where(move, rng.standard_normal(total, dtype=np.float32) * np.float32(3e-4), np.float32(0))
    layers, off = {}, 0
    for name, s in shapes:
        n = int(np.prod(s))
        layers[name] = (prev[off:off + n].reshape(s), nxt[off:off + n].reshape(s))
        off += n
    return layers, total


def torch_eager(layers, tau, sync=None):
    out = []
    with torch.inference_mode():
        for a, b in layers:
            d = b - a
            D = d.pow(2).sum(dim=(1, 2, 3)).mean()
            changed = d.abs() > tau
            S = changed.float().mean(dim=(1, 2, 3)).mean()
            Z = (changed.sum(dim=(2, 3)) == 0).float().mean(dim=1).mean()
            out.append(torch.stack([D.double(), S.double(), Z.double()]))
        res = torch.stack(out).cpu()  # the results reach the host, as fevo's do
    if sync:
        sync()
    return res


def median_time(f, reps, warmup=1):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_call(f, calls):
    """Seconds per call: the median of `calls` calls timed one by one, less the median time of
    timing nothing (the C++ reference is the median of single calls too, so that a busy machine's
    preemptions, which batches of calls would include, count in neither)."""
    clock = time.perf_counter_ns
    for _ in range(calls // 10):
        f()
    empty, times = [], []
    for _ in range(calls):
        t0 = clock()
        t1 = clock()
        f()
        t2 = clock()
        empty.append(t1 - t0)
        times.append(t2 - t1)
    return (statistics.median(times) - statistics.median(empty)) * 1e-9


def verdict(ok):
    return "PASS" if ok else "MISS"


def wait_for_quiet():
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        if load < 1.5:
            print(f"load average {load:.2f} after {time.time() - start:.0f} s of waiting")
            return load
        if time.time() - start > 20 * 60:
            print(f"** still busy after 20 minutes (load average {load:.2f}): the figures below are unreliable **")
            return load
        time.sleep(30)


def bench_models(device, reps, shrink, results):
    on_cuda = device == "cuda"
    sync = torch.cuda.synchronize if on_cuda else None
    print(f"\n## {device}: whole models, float32 ({'GPU' if on_cuda else f'{ARGS.threads} threads'})\n")
    print("| model | weights | fevo.compute_layers, ms | GB/s | without the DataFrame, ms | C++ compute_layers, ms "
          "| torch eager, ms | fevo / torch eager (target >= 5) | fevo / C++ (target >= 0.9) "
          "| without the DataFrame / C++ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, shapes in (("vgg16", vgg16(shrink)), ("resnet50", resnet50(shrink))):
        layers, total = model_data(shapes, seed=7)
        if on_cuda:
            layers = {k: (torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()) for k, (a, b) in layers.items()}
        tl = [(torch.as_tensor(a), torch.as_tensor(b)) for a, b in layers.values()]
        items = [(k, a, b) for k, (a, b) in layers.items()]
        df = fevo.compute_layers(layers, TAU)
        ref = torch_eager(tl, TAU, sync).numpy()
        # The formulas agree (torch's float32 sums are approximate).
        assert np.allclose(df[["D", "S", "Z"]].to_numpy(), ref, rtol=1e-3, atol=1e-6), model
        # Interleaved: each round times one call of each, so that a change of the machine's load
        # during the run reaches all of them alike; each figure is the median over the rounds.
        for f in (lambda: fevo.compute_layers(layers, TAU), lambda: _fevo.compute_layers(items, TAU, "oihw"),
                  lambda: torch_eager(tl, TAU, sync)):
            f()
        # Each call of fevo, of the binding alone and of the C++ library follows a torch pass (as
        # the metrics follow a training step): the three find the caches in the same state.
        calls = {"fevo": lambda: median_time(lambda: fevo.compute_layers(layers, TAU), 1, 0),
                 "bind": lambda: median_time(lambda: _fevo.compute_layers(items, TAU, "oihw"), 1, 0),
                 "cxx": lambda: _fevo._time_compute_layers(items, TAU, "oihw", 1)[0]}
        rounds = {"fevo": [], "bind": [], "cxx": [], "torch": []}
        for _ in range(3 * reps):
            for name, call in calls.items():
                rounds["torch"].append(median_time(lambda: torch_eager(tl, TAU, sync), 1, 0))
                rounds[name].append(call())
        t_fevo, t_bind, t_cxx, t_torch = (statistics.median(rounds[k]) for k in ("fevo", "bind", "cxx", "torch"))
        gbps = 2 * total * 4 / t_fevo / 1e9
        vs_torch, vs_cxx = t_torch / t_fevo, t_cxx / t_fevo
        print(f"| {model} | {total:,} | {t_fevo * 1e3:.2f} | {gbps:.2f} | {t_bind * 1e3:.2f} | {t_cxx * 1e3:.2f} "
              f"| {t_torch * 1e3:.1f} | {vs_torch:.1f}x {verdict(vs_torch >= 5)} | {vs_cxx:.2f} {verdict(vs_cxx >= 0.9)} "
              f"| {t_cxx / t_bind:.2f} |")
        results[f"{device}/{model}"] = {"weights": total, "fevo_s": t_fevo, "binding_s": t_bind, "cxx_s": t_cxx,
                                        "torch_eager_s": t_torch, "fevo_GBps": gbps, "vs_torch": vs_torch,
                                        "vs_cxx": vs_cxx, "binding_vs_cxx": t_cxx / t_bind}


def bench_overhead(device, calls, results):
    shape = (64, 3, 3, 3)
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape).astype(np.float32)
    b = a + rng.standard_normal(shape).astype(np.float32) * np.float32(3e-4)
    inputs = {"torch.Tensor": (torch.from_numpy(a), torch.from_numpy(b)),
              "nn.Parameter": (torch.nn.Parameter(torch.from_numpy(a)), torch.from_numpy(b))}
    if device == "cpu":
        inputs = {"numpy.ndarray": (a, b), **inputs}
    else:
        inputs = {k: (x.cuda(), y.cuda()) for k, (x, y) in inputs.items()}
    print(f"\n## {device}: per call on a 3x3x3x64 layer (1,728 weights)\n")
    print("| input | fevo.compute, us | C++ on the same memory, us | overhead, us (target <= 5) |")
    print("|---|---:|---:|---:|")
    for what, (x, y) in inputs.items():
        t_py = per_call(lambda: fevo.compute(x, y, TAU), calls)
        t_cxx = statistics.median(_fevo._time_compute_layers([("l", x, y)], TAU, "oihw", 5 * calls)[calls:])
        over = t_py - t_cxx
        print(f"| {what} | {t_py * 1e6:.2f} | {t_cxx * 1e6:.2f} | {over * 1e6:.2f} {verdict(over <= 5e-6)} |")
        results[f"{device}/overhead/{what}"] = {"python_s": t_py, "cxx_s": t_cxx, "overhead_s": over}


def main():
    load_before = wait_for_quiet() if ARGS.wait_for_quiet else os.getloadavg()[0]
    torch.set_num_threads(ARGS.threads)
    shrink, reps, calls = (8, 3, 2000) if ARGS.quick else (1, 7, 20000)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"# fevo Python benchmark: {' '.join(sys.argv)}")
    print(f"{cpu}, {os.cpu_count()} logical CPUs; {ARGS.threads} threads; torch {torch.__version__}, "
          f"numpy {np.__version__}, python {platform.python_version()}; load average {load_before:.2f}")
    results = {"threads": ARGS.threads, "torch": torch.__version__, "numpy": np.__version__, "cpu": cpu,
               "load_before": load_before}
    bench_models("cpu", reps, shrink, results)
    bench_overhead("cpu", calls, results)
    if fevo.cuda_available() and torch.cuda.is_available():
        bench_models("cuda", reps, shrink, results)
        bench_overhead("cuda", calls // 4, results)
    else:
        print("\n(no usable CUDA device: the CUDA part is left out)")
    results["load_after"] = os.getloadavg()[0]
    print(f"\nload average after: {results['load_after']:.2f}")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
