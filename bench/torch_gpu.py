#!/usr/bin/env python3
"""PyTorch eager formulation of fevo's metrics on the GPU, on the conv shapes of VGG-16 and
ResNet-50 (the same shapes and data distribution as bench_cuda.cu), timed with CUDA events.

    python3 bench/torch_gpu.py [--quick] [--json OUT.json]

Prints GB/s per model and dtype (bytes: both snapshots read once) and writes them as JSON."""
import argparse
import json
import sys


def shapes(model, shrink):
    def s(c):
        return max(c // shrink, 1)
    out = []
    if model == "vgg16":
        cfg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
        for i, o in cfg:
            out.append((s(o), 3 if i == 3 else s(i), 3, 3))
    else:
        out.append((s(64), 3, 7, 7))
        inp = s(64)
        for st, units in enumerate([3, 4, 6, 3]):
            mid, o = s(64 << st), s(256 << st)
            for u in range(units):
                out += [(mid, inp, 1, 1), (mid, mid, 3, 3), (o, mid, 1, 1)]
                if u == 0:
                    out.append((o, inp, 1, 1))
                inp = o
    return out


def metrics(layers, tau):
    res = []
    for a, b in layers:
        d = (b - a).float()
        D = d.pow(2).sum(dim=(1, 2, 3)).mean()
        changed = d.abs() > tau
        S = changed.float().mean(dim=(1, 2, 3)).mean()
        Z = (changed.sum(dim=(2, 3)) == 0).float().mean(dim=1).mean()
        res.append((D, S, Z))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch_gpu.py: PyTorch is not installed; nothing measured")
        return 77
    if not torch.cuda.is_available():
        print("torch_gpu.py: no CUDA device; nothing measured")
        return 77
    shrink = 16 if args.quick else 1
    tau = 2e-4
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    g = torch.Generator(device="cuda").manual_seed(7)
    for model in ("vgg16", "resnet50"):
        for dtype, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            layers, nbytes = [], 0
            for o, i, h, w in shapes(model, shrink):
                a = torch.randn(o, i, h, w, device="cuda", generator=g) * 0.05
                b = a + torch.randn(o, i, h, w, device="cuda", generator=g) * 4e-4
                b = torch.where(torch.rand(o, i, h, w, device="cuda", generator=g) < 0.3, a, b)
                layers.append((a.to(dtype), b.to(dtype)))
                nbytes += 2 * a.numel() * a.to(dtype).element_size()
            metrics(layers, tau)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            reps, best = 20, float("inf")
            for _ in range(reps):
                start.record()
                r = metrics(layers, tau)
                torch.stack([x for t in r for x in t]).cpu()  # results reach the host, as fevo's do
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            gbs = nbytes / best / 1e9
            result[f"{model}/{tag}"] = gbs
            print(f"torch eager {model} {tag}: {gbs:.1f} GB/s ({best * 1e3:.3f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
