"""The report's figures (matplotlib, Agg backend), each written as PNG and SVG.

Every figure has a fixed size in pixels given by its *_size_px function (DPI dots per inch), so a
test can check the PNG it decodes against the layout of its data.
"""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from report_data import SERIES  # noqa: E402

DPI = 100
FIG1_MAX_FILTERS = 8
FIG1_MAX_STEPS = 10
TILE_PX = 72  # a Fig. 1 tile's side in pixels


def _save(fig, outdir, stem):
    png = os.path.join(outdir, stem + ".png")
    fig.savefig(png, dpi=DPI, format="png")
    fig.savefig(os.path.join(outdir, stem + ".svg"), dpi=DPI, format="svg")
    plt.close(fig)
    return png


def _figure(size_px):
    w, h = size_px
    return plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)


# ---- Fig. 1 ------------------------------------------------------------------------------------

def fig1_choice(first_layer):
    """(filters, snapshot indices) drawn in Fig. 1: up to FIG1_MAX_FILTERS filters spread over the
    order of their total change |W_last - W_first|^2 (least and most changed included, shown in
    that order), and up to FIG1_MAX_STEPS snapshots evenly spread (first and last included)."""
    K, O = first_layer.shape[:2]
    change = ((first_layer[-1] - first_layer[0]).reshape(O, -1).astype(np.float64) ** 2).sum(axis=1)
    order = np.argsort(change, kind="mergesort")
    nf = min(O, FIG1_MAX_FILTERS)
    filters = [int(order[i]) for i in np.unique(np.round(np.linspace(0, O - 1, nf)).astype(int))]
    ns = min(K, FIG1_MAX_STEPS)
    snaps = [int(i) for i in np.unique(np.round(np.linspace(0, K - 1, ns)).astype(int))]
    return filters, snaps, change


def fig1_size_px(n_filters, n_steps):
    return (190 + 80 * n_steps, 110 + 80 * n_filters)


def fig1(run, outdir, stem):
    w = run.first_layer
    steps = run.first_layer_steps
    filters, snaps, change = fig1_choice(w)
    size = fig1_size_px(len(filters), len(snaps))
    fig = _figure(size)
    W, H = size
    rgb = w.shape[2] == 3
    # The tiles are drawn into one RGBA image placed pixel for pixel (figimage), not as one axes
    # per tile: the same look (72-pixel tiles, nearest-neighbour scaling, a thin frame around
    # each) in an eighth of the time (both models' PNG and SVG: 8.1 s -> 1.1 s on a 2 GHz core).
    canvas = np.zeros((H, W, 4))
    grid = np.arange(TILE_PX)
    for r, f in enumerate(filters):
        tiles = w[snaps, f].astype(np.float64)  # (steps, I, h, w)
        if rgb:
            tiles = np.transpose(tiles, (0, 2, 3, 1))  # (steps, h, w, 3)
        else:
            tiles = tiles.mean(axis=1)  # grayscale: the mean over the input channels
        lo, hi = np.nanmin(tiles), np.nanmax(tiles)
        # One scale per row, so that a filter's change over the steps is visible.
        tiles = (tiles - lo) / (hi - lo) if hi > lo else np.full_like(tiles, 0.5)
        tiles = np.nan_to_num(tiles, nan=0.0)
        if not rgb:
            tiles = np.repeat(tiles[..., None], 3, axis=-1)
        th, tw = tiles.shape[1:3]
        top = 70 + 80 * r + 4
        for c, k in enumerate(snaps):
            left = 150 + 80 * c + 4
            tile = tiles[c][grid * th // TILE_PX][:, grid * tw // TILE_PX]  # nearest neighbour
            canvas[top:top + TILE_PX, left:left + TILE_PX] = (0, 0, 0, 1)  # the frame
            canvas[top + 1:top + TILE_PX - 1, left + 1:left + TILE_PX - 1, :3] = tile[1:-1, 1:-1]
            if r == 0:
                fig.text((left + TILE_PX / 2) / W, 1 - (top - 6) / H, f"{int(steps[k])}", ha="center",
                         va="bottom", fontsize=8)
        fig.text(145 / W, 1 - (70 + 80 * r + 40) / H, f"filter {f}\n|\u0394|\u00b2={change[f]:.2g}",
                 ha="right", va="center", fontsize=8)
    fig.figimage(canvas, xo=0, yo=0, origin="upper")
    kind = "RGB" if rgb else "grayscale, mean over input channels"
    fig.text(0.5, 1 - 14 / H, f"Fig. 1 ({run.label}): first-layer filters over training steps ({kind})",
             ha="center", va="center", fontsize=10)
    fig.text(0.5, 1 - 32 / H, "columns: training step; rows: filters, least to most changed",
             ha="center", va="center", fontsize=8, color="#444")
    return _save(fig, outdir, stem), size


# ---- Fig. 2 ------------------------------------------------------------------------------------

# Laid out as the paper's Fig. 2: one column per run (VGG-16 and ResNet-50 side by side), one row
# per quantity, each row on one y-range in every column: D, D per weight and the relative weight
# change of Agrawal et al. each on one log range, S and Z on [0, 1], their whole range, so that the
# layers' stratification compares at a glance.
FIG2_LEFT, FIG2_TOP, FIG2_COL, FIG2_ROW, FIG2_LEGEND = 90, 60, 500, 200, 100
FIG2_PANEL = (410, 150)


def _layer_label(run, i, name):
    return f"conv{i}: {name}" if run.is_driver else name


LOG_ROWS = ("D", "Dw", "R")


def fig2_rows(runs):
    """The quantities Fig. 2 draws: D, D per weight (when some run's metrics.csv has it), the
    relative weight change (when some run has weight_change.csv), S, Z."""
    have = {"Dw": any(r.has_dw() for r in runs), "R": any(r.has_weight_change for r in runs)}
    return [k for k in ("D", "Dw", "R", "S", "Z") if have.get(k, True)]


# What a panel says instead of a plot when its run lacks the data.
ABSENT = {"Dw": "no D_per_weight column in this run's\nmetrics.csv (recorded before fevo\nwrote it): no D per weight",
          "R": "no weight_change.csv in this run\n(an older paper driver, or fevo analyze\noutput): no relative change"}


def _absent(run, key):
    return (key == "Dw" and not run.has_dw()) or (key == "R" and not run.has_weight_change)


def fig2_size_px(n_runs, n_rows):
    return (FIG2_LEFT + FIG2_COL * n_runs, FIG2_TOP + FIG2_ROW * n_rows + FIG2_LEGEND)


def _log_range(values):
    v = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in values]) if values else np.array([])
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    return (lo / 1.5, hi * 1.5) if hi > lo else (lo / 10, hi * 10)


def fig2(runs, outdir, stem):
    fig, _, size = fig2_axes(runs)
    return _save(fig, outdir, stem), size


def fig2_axes(runs):
    """Draws Fig. 2: (figure, {(quantity, run label): axes}, size in pixels)."""
    rows = fig2_rows(runs)
    size = fig2_size_px(len(runs), len(rows))
    W, H = size
    fig = _figure(size)
    ylim = {}
    for key in LOG_ROWS:
        ylim[key] = _log_range([a for r in runs for n in r.selected for a in [r.series(n, key)] if a is not None])
    axes = {}
    for j, run in enumerate(runs):
        lr_steps = run.config["lr_halve_steps"] if run.is_driver else []
        for i, key in enumerate(rows):
            x0 = FIG2_LEFT + FIG2_COL * j
            y0 = FIG2_TOP + FIG2_ROW * i
            ax = fig.add_axes([x0 / W, 1 - (y0 + FIG2_PANEL[1]) / H, FIG2_PANEL[0] / W, FIG2_PANEL[1] / H])
            axes[(key, run.label)] = ax
            if i == 0:
                ax.set_title(run.label + (f" ({run.model})" if run.is_driver and run.model != run.label else ""),
                             fontsize=10)
            ax.set_ylabel(SERIES[key][0] + (" (log)" if key in LOG_ROWS and ylim[key] else ""), fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(True, alpha=0.3)
            if _absent(run, key):
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.5, 0.5, ABSENT[key], ha="center", va="center", fontsize=8, color="#555",
                        transform=ax.transAxes)
                continue
            for k, name in enumerate(run.selected, start=1):
                s = run.metrics[name]
                y = run.series(name, key)
                ax.plot(s.step, y, linewidth=1.1, marker="." if len(y) <= 50 else None,
                        label=_layer_label(run, k, name))
            for n, st in enumerate(lr_steps):
                ax.axvline(st, color="#888", linestyle="--", linewidth=0.9,
                           label="learning rate halved" if n == 0 else None)
            if key in LOG_ROWS:
                if ylim[key]:
                    ax.set_yscale("log")
                    ax.set_ylim(*ylim[key])
            else:
                ax.set_ylim(0.0, 1.0)
            if i == len(rows) - 1:
                ax.set_xlabel("training step", fontsize=9)
        # One legend per column, under its last panel: the layers and the learning-rate line.
        handles, labels = axes[("D", run.label)].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", fontsize=8, frameon=False, ncol=2,
                   bbox_to_anchor=((FIG2_LEFT + FIG2_COL * j + FIG2_PANEL[0] / 2) / W,
                                   1 - (FIG2_TOP + FIG2_ROW * len(rows) - 10) / H))
    fig.text(0.5, 1 - 18 / H, "Fig. 2: " + ", ".join(SERIES[k][0] for k in rows) +
             " against the training step (rows share their y-range across the runs)",
             ha="center", va="center", fontsize=10)
    return fig, axes, size


# ---- Fig. 3 ------------------------------------------------------------------------------------

def fig3_choice(run):
    """(first step, last step, filters present at both), from fig3/index.csv."""
    steps = sorted({s for s, _, _ in run.fig3})
    first, last = steps[0], steps[-1]
    at = {(s, f): path for s, f, path in run.fig3}
    filters = sorted({f for s, f, _ in run.fig3 if (first, f) in at and (last, f) in at})
    return first, last, filters, at


def fig3_size_px(n_filters):
    return (140 + 150 * (n_filters + 1), 70 + 2 * 160)


def _gray(img):
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    return img


def fig3(run, outdir, stem):
    first, last, filters, at = fig3_choice(run)
    size = fig3_size_px(len(filters))
    W, H = size
    fig = _figure(size)
    inp = mpimg.imread(run.fig3_input)
    ax = fig.add_axes([10 / W, 1 - (70 + 160 + 75) / H, 140 / W, 140 / H])
    ax.imshow(inp if inp.ndim == 3 else inp, cmap=None if inp.ndim == 3 else "gray", interpolation="nearest")
    ax.set_title("input", fontsize=8)
    ax.axis("off")
    for r, step in enumerate((first, last)):
        fig.text(150 / W + 0.5 * 130 / W, 1 - (70 + 160 * r + 80) / H, f"step {step}", rotation=90,
                 ha="center", va="center", fontsize=9)
        for c, f in enumerate(filters):
            ax = fig.add_axes([(280 + 150 * c) / W, 1 - (70 + 160 * (r + 1) - 10) / H, 140 / W, 140 / H])
            ax.imshow(_gray(mpimg.imread(at[(step, f)])), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"filter {f}", fontsize=8)
    fig.text(0.5, 1 - 22 / H, f"Fig. 3 ({run.label}): first-layer feature maps after ReLU, "
             f"step {first} (top) and step {last} (bottom)", ha="center", va="center", fontsize=10)
    return _save(fig, outdir, stem), size


# ---- Fig. 4 ------------------------------------------------------------------------------------

def fig4_size_px(n_runs):
    return (80 + 560 * n_runs, 460)


def fig4(runs, outdir, stem):
    size = fig4_size_px(len(runs))
    W, H = size
    fig = _figure(size)
    for j, run in enumerate(runs):
        ax = fig.add_axes([(80 + 560 * j) / W, 0.3, 440 / W, 0.58])
        allpos = np.concatenate([run.filters[n].D_mean for n in run.selected])
        allpos = allpos[np.isfinite(allpos) & (allpos > 0)]
        allD = np.concatenate([run.filters[n].D_mean for n in run.selected])
        zeros = bool(np.any(allD[np.isfinite(allD)] <= 0))
        floor = float(allpos.min()) / 10 if allpos.size else 1e-30
        for i, name in enumerate(run.selected, start=1):
            f = run.filters[name]
            d = np.sort(np.where(np.isfinite(f.D_mean), f.D_mean, np.nan))
            # D_mean = 0 cannot be drawn on a log scale: such filters sit on the floor line.
            ax.plot(np.arange(len(d)), np.maximum(d, floor), linewidth=1.2,
                    label=_layer_label(run, i, name))
        if allpos.size:
            ax.set_yscale("log")
        if allpos.size and zeros:
            ax.axhline(floor, color="#bbb", linewidth=0.8, linestyle=":")
        ax.set_xlabel("filter, sorted by mean D")
        ax.set_ylabel("D_mean over training (log)" if allpos.size else "D_mean over training")
        ax.set_title(run.label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7, ncol=2, frameon=False)
    fig.text(0.5, 1 - 18 / H, "Fig. 4: per-filter D averaged over training (filter_summary.csv D_mean); "
             "dotted line, where drawn: D_mean = 0", ha="center", va="center", fontsize=9)
    return _save(fig, outdir, stem), size


def png_ok(path):
    """True when a PNG decodes and is not one colour (used by the report's self-check)."""
    a = mpimg.imread(path)
    return a.size > 0 and float(np.nanstd(a)) > 0 and not math.isnan(float(np.nanstd(a)))
