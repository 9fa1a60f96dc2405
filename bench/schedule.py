#!/usr/bin/env python3
"""How evenly fevo::cuda's fused pass spreads VGG-16's and ResNet-50's conv weights over a GPU's warps.

The model behind fevo::cuda::experimental::work_queue: the fused kernels' warps fold filters, each warp one at a time
(or 2-4 small packed filters at once, sharing the warp), and are bound by their own loads in flight
more than by the memory system, so a pass lasts as long as its busiest warp. This script computes,
from the work assignment alone (no GPU), the busiest warp's bytes over the average warp's:
  static  the grid-stride loop of the default and lean tunings: block b of G takes items b, b + G,
          ..., an item being 8 warps' shares of a layer (kernels.cuh, descriptor.hpp's items_of);
  queue   the work queue (schedule::work_queue): the warps take units (one warp's share) in the order of the
          table, the layers with the largest units first, each warp its next unit as soon as it
          is done with the last (list scheduling).
Mirrors backends/cuda/include/fevo/cuda (descriptor.hpp, dispatch.hpp): group_for, the automatic shared-warp choice (an eighth of the
weights), items_of; every layer is packed and in warp mode (filters below block_from = 16384).

  python3 bench/schedule.py [--sms 132] [--unroll 4]
"""
import argparse
import heapq

WARPS_PER_BLOCK = 8


def vgg16():
    cfg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
           (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    return [(o, i, 3) for i, o in cfg]


def resnet50():
    layers, cin = [(64, 3, 7)], 64
    for stage, units in enumerate((3, 4, 6, 3)):
        mid, out = 64 << stage, 256 << stage
        for u in range(units):
            layers += [(mid, cin, 1), (mid, mid, 3), (out, mid, 1)]
            if u == 0:
                layers.append((out, cin, 1))
            cin = out
    return layers


def group_for(size, elem, unroll):
    """Lanes per filter of a packed layer in a shared warp (descriptor.hpp)."""
    v = 16 // elem
    g = max(32 // v, 8)
    while g < 32 and size > g * v * unroll * 2:
        g *= 2
    return g


def layers_with_groups(model, elem, unroll):
    """(filters, weights per filter, lanes per filter) of each layer, after the shared-warp choice."""
    rows, weights, shared_weights = [], 0, 0
    for o, i, k in model:
        size = i * k * k
        g = group_for(size, elem, unroll)
        weights += o * size
        if g < 32:
            shared_weights += o * size
        rows.append((o, size, g))
    shared = shared_weights >= weights / 8
    return [(o, size, g if shared else 32) for o, size, g in rows]


def unit_bytes(layer, elem):
    """The bytes (both snapshots) of each warp share of a layer, in filter order."""
    o, size, g = layer
    per = 32 // g
    return [min(per, o - f) * size * elem * 2 for f in range(0, o, per)]


def static_busiest(layers, elem, blocks):
    items = []
    for layer in layers:
        shares = unit_bytes(layer, elem)
        for j in range(0, len(shares), WARPS_PER_BLOCK):
            items.append(shares[j:j + WARPS_PER_BLOCK])
    grid = min(len(items), blocks)
    warp = [0] * (grid * WARPS_PER_BLOCK)
    for n, item in enumerate(items):
        for w, b in enumerate(item):
            warp[(n % grid) * WARPS_PER_BLOCK + w] += b
    return max(warp), len(warp)


def queue_busiest(layers, elem, blocks):
    order = sorted(layers, key=lambda l: -(l[1] * (32 // l[2])))  # stable: ties keep their order
    warps = [0] * (blocks * WARPS_PER_BLOCK)
    heapq.heapify(warps)
    for layer in order:
        for b in unit_bytes(layer, elem):
            heapq.heappush(warps, heapq.heappop(warps) + b)
    return max(warps), len(warps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sms", type=int, default=132, help="SMs of the GPU (H100 SXM, H200: 132)")
    ap.add_argument("--unroll", type=int, default=4, help="the tuning's vectors_per_thread")
    args = ap.parse_args()
    print(f"busiest warp / average warp ({args.sms} SMs; 1.00 = even)")
    print(f"{'model':<10} {'type':<5} {'blocks/SM':>9} {'static':>7} {'queue':>7}")
    for name, model in (("vgg16", vgg16()), ("resnet50", resnet50())):
        for ty, elem in (("f32", 4), ("bf16", 2)):
            layers = layers_with_groups(model, elem, args.unroll)
            total = sum(sum(unit_bytes(l, elem)) for l in layers)
            for per_sm in (2, 3):
                blocks = args.sms * per_sm
                s, ws = static_busiest(layers, elem, blocks)
                q, wq = queue_busiest(layers, elem, blocks)
                print(f"{name:<10} {ty:<5} {per_sm:>9} {s / (total / ws):>7.2f} {q / (total / wq):>7.2f}")


if __name__ == "__main__":
    main()
