#!/usr/bin/env python3
"""fevo_report: the paper's figures, Table IV and its observations from fevo runs, as one report.html.

    python3 tools/fevo_report.py RUNDIR [RUNDIR...] --out OUTDIR

Each RUNDIR is either a training run of the paper driver (config.json present; see the run
directory contract in README.md "The report") or the output directory of `fevo analyze` (only
metrics.csv and filter_summary.csv: Fig. 2 and Fig. 4 are drawn for it, named by its directory,
over all its layers when it has at most five, else five spread evenly over depth, first and last
included).

Writes OUTDIR/figures/*.png and *.svg and OUTDIR/report.html (self-contained: figures embedded as
data URIs, inline CSS, no script, no network; the CSV files are linked by relative path), and
prints the path of report.html as its last line. A missing or malformed input file ends it with
one line on stderr naming the file and the problem, and exit status 2.
"""

import argparse
import base64
import datetime
import html
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report_data import InputError, load_runs  # noqa: E402
import report_figures as figs  # noqa: E402
import report_observations as obs  # noqa: E402

LINKED_FILES = ("config.json", "summary.json", "train_log.csv", "metrics.csv", "filter_summary.csv",
                "table4.csv", "table4.md", "series/index.csv", "fig3/index.csv")
SETTING_KEYS = ("model", "width", "input_size", "dataset", "classes", "train_images", "test_images", "steps",
                "batch", "lr", "lr_halve_steps", "tau", "record_every", "seed", "device", "threads", "versions")
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; max-width: 900px; }
.holds { color: #176b21; font-weight: bold; } .does-not-hold { color: #a31515; font-weight: bold; }
.cannot-be-checked { color: #8a6d00; font-weight: bold; }
.small { font-size: .85em; color: #555; } code { background: #f5f5f5; padding: 0 .2em; }
"""


def esc(x):
    return html.escape(str(x), quote=True)


def num(x, digits=6):
    """A number as the report prints it: 6 significant digits, nan/inf spelled out."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def pct(x):
    """A fraction printed as a percentage with 4 decimals (0.012345 -> 1.2345)."""
    return "nan" if not math.isfinite(x) else f"{100 * x:.4f}"


def table(tid, header, rows, numeric=()):
    out = [f'<table id="{esc(tid)}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header) +
           "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for h, v in zip(header, row):
            cls = ' class="num"' if h in numeric else ""
            cells.append(f"<td{cls}>{v}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def figure_html(path, size, caption, outdir):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    svg = os.path.relpath(os.path.splitext(path)[0] + ".svg", outdir)
    png = os.path.relpath(path, outdir)
    return (f'<figure><img src="data:image/png;base64,{data}" width="{size[0]}" height="{size[1]}" '
            f'alt="{esc(caption)}"><figcaption>{caption} '
            f'<span class="small">(<a href="{esc(png)}">PNG</a>, <a href="{esc(svg)}">SVG</a>)</span>'
            f"</figcaption></figure>")


def settings_html(run, outdir):
    parts = [f'<h3 id="run-{esc(run.label)}">{esc(run.label)}</h3>',
             f'<p class="small">Directory <code>{esc(os.path.abspath(run.path))}</code>. '
             f'Layers drawn: {esc(run.selected_from)}.</p>']
    if run.is_driver:
        cfg = run.config
        rows = []
        for k in SETTING_KEYS:
            if k in cfg:
                v = cfg[k]
                rows.append((esc(k), esc(json.dumps(v) if isinstance(v, (list, dict)) else v)))
        for k in sorted(set(cfg) - set(SETTING_KEYS) - {"table3", "conv_layers"}):
            v = cfg[k]
            rows.append((esc(k), esc(json.dumps(v) if isinstance(v, (list, dict)) else v)))
        conv = cfg["conv_layers"]
        listing = "<br>".join(f"{esc(e['name'])} {esc(e['shape'])}" for e in conv)
        rows.append(("conv_layers", f"<details><summary>{len(conv)} recorded conv layers</summary>"
                                    f"{listing}</details>"))
        rows.append(("table3", esc(", ".join(f"conv{i} {n}" for i, n in enumerate(cfg["table3"], 1)))))
        for k, v in run.summary.items():
            rows.append((esc("summary: " + k), esc(num(v) if isinstance(v, (int, float)) else v)))
        parts.append(table(f"settings-{run.label}", ["setting", "value"], rows))
    links = []
    for name in LINKED_FILES:
        p = run.file(name)
        if os.path.isfile(p):
            links.append(f'<a href="{esc(os.path.relpath(p, outdir))}">{esc(name)}</a>')
    parts.append("<p>Files: " + ", ".join(links) + "</p>")
    return "\n".join(parts)


LAYER_HEADER = ["conv", "layer", "depth", "filters", "records", "mean D", "mean S", "mean Z",
                "barely changing", "barely changing (%)"]


def layers_html(run):
    rows = []
    for s in obs.layer_stats(run):
        rows.append((f"conv{s.index}" if run.is_driver else str(s.index), esc(s.name), s.depth, s.n_filters,
                     s.records, num(s.mean_D), num(s.mean_S), num(s.mean_Z), s.barely,
                     f"{100 * s.barely_share:.2f}"))
    return table(f"layers-{run.label}", LAYER_HEADER, rows, numeric=LAYER_HEADER[2:])


TABLE4_HEADER = ["conv", "layer", "filters", "zeroed", "baseline accuracy (%)", "least_D accuracy (%)",
                 "least_D drop (%)", "most_Z drop (%)", "random draws", "random accuracy mean (%)",
                 "random drop mean (%)", "random drop std (%)"]


def table4_html(run):
    rows = []
    for i, (name, least, mostz, rnd) in enumerate(obs.table4_rows(run), start=1):
        rows.append((f"conv{i}", esc(name), least["filters"], least["zeroed"], pct(least["baseline_accuracy"]),
                     pct(least["accuracy_mean"]), pct(least["drop_mean"]),
                     pct(mostz["drop_mean"]) if mostz else "\u2014", rnd["draws"], pct(rnd["accuracy_mean"]),
                     pct(rnd["drop_mean"]), pct(rnd["drop_std"])))
    return table(f"table4-{run.label}", TABLE4_HEADER, rows, numeric=TABLE4_HEADER[2:])


def observations_html(verdicts):
    rows = []
    for v in verdicts:
        cls = v.status.replace(" ", "-")
        rows.append((f"({v.number})", esc(v.title), f'<span class="{cls}">{esc(v.status)}</span>',
                     esc(v.text), f'<span class="small">{esc(v.criterion)}</span>'))
    return table("observations", ["", "finding", "in this run", "numbers", "criterion"], rows)


def build(runs, outdir):
    figdir = os.path.join(outdir, "figures")
    os.makedirs(figdir, exist_ok=True)
    drawn = []  # (section, png path, size, caption)
    for run in runs:
        if run.is_driver:
            p, size = figs.fig1(run, figdir, f"fig1_{run.label}")
            kind = "RGB" if run.first_layer.shape[2] == 3 else "grayscale (mean over input channels)"
            drawn.append(("fig1", p, size,
                          f"Fig. 1 ({esc(run.label)}): first-layer filters ({kind}), one per row (up to "
                          f"{figs.FIG1_MAX_FILTERS}, spread from the least to the most changed between the "
                          f"first and last snapshot), snapshots at the steps above each column (up to "
                          f"{figs.FIG1_MAX_STEPS}, evenly spread). Each row has its own colour scale."))
    for run in runs:
        for m in ("D", "S", "Z"):
            p, size = figs.fig2(run, m, figdir, f"fig2_{run.label}_{m}")
            lr = ("dashed lines: learning rate halved" if run.is_driver and run.config["lr_halve_steps"]
                  else "no learning-rate change recorded" if run.is_driver
                  else "no learning-rate information in an analyze directory")
            drawn.append(("fig2", p, size,
                          f"Fig. 2 ({esc(run.label)}): {esc(figs.METRIC_TITLES[m])} against the training step "
                          f"for {esc(run.selected_from)}; {lr}" +
                          ("; log scale." if m == "D" else ".")))
    for run in runs:
        if run.is_driver:
            p, size = figs.fig3(run, figdir, f"fig3_{run.label}")
            drawn.append(("fig3", p, size,
                          f"Fig. 3 ({esc(run.label)}): feature maps after ReLU of first-layer filters on the "
                          f"test image at the first (top) and last (bottom) recorded step, each map min-max "
                          f"normalised."))
    p, size = figs.fig4(runs, figdir, "fig4")
    drawn.append(("fig4", p, size,
                  "Fig. 4: each filter's D averaged over training (D_mean of filter_summary.csv), filters "
                  "sorted by it, one line per layer, one chart per run; log scale, filters with D_mean = 0 "
                  "on the dotted line."))

    verdicts = obs.check_all(runs)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [f"<h1>How filters evolve: fevo report</h1>",
            f'<p class="small">Generated {esc(now)} by tools/fevo_report.py from '
            + ", ".join(f'<a href="#run-{esc(r.label)}">{esc(r.label)}</a>' for r in runs) +
            ". Metrics D, S, Z as defined by eqs. 1\u20133 of the paper (tau = the initial learning rate).</p>",
            "<h2>The paper's observations in this run</h2>",
            observations_html(verdicts),
            '<p class="small">Layer statistics below: mean D, S, Z over every record with a finite value; a '
            f"filter barely changes when frac_S_zero &ge; {obs.BARELY_FRAC_S_ZERO} in filter_summary.csv. "
            "The Spearman correlation is computed on the ranks (ties averaged); the p-value enumerates all "
            "orders of the five values.</p>",
            "<h2>Runs and settings</h2>"]
    body += [settings_html(r, outdir) for r in runs]
    body.append("<h2>Per-layer statistics</h2>")
    for r in runs:
        body += [f"<h3>{esc(r.label)}</h3>", layers_html(r)]
    titles = {"fig1": "Fig. 1: first-layer filters over training",
              "fig2": "Fig. 2: D, S and Z against the training step",
              "fig3": "Fig. 3: feature maps at the first and last step",
              "fig4": "Fig. 4: per-filter D averaged over training"}
    for sec in ("fig1", "fig2", "fig3", "fig4"):
        items = [d for d in drawn if d[0] == sec]
        if items:
            body.append(f"<h2>{titles[sec]}</h2>")
            body += [figure_html(p, size, cap, outdir) for _, p, size, cap in items]
    t4 = [r for r in runs if r.is_driver]
    if t4:
        body.append("<h2>Table IV: accuracy after zeroing filters</h2>")
        body.append('<p class="small">Per Table III layer, the test accuracy with <code>zeroed</code> '
                    "filters set to zero: least_D (the filters with the smallest D_mean), most_Z (the largest "
                    "frac_Z_one), and random draws (mean and standard deviation over the draws). Drop = baseline "
                    "accuracy minus accuracy, in percentage points.</p>")
        for r in t4:
            body += [f"<h3>{esc(r.label)}</h3>", table4_html(r)]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           f"<title>fevo report: {esc(', '.join(r.label for r in runs))}</title>\n<style>{CSS}</style>\n"
           "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    path = os.path.join(outdir, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, path)
    return path, drawn


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="fevo_report.py",
        description="The paper's figures, Table IV and observations from fevo runs, as one report.html.")
    ap.add_argument("rundirs", nargs="+", metavar="RUNDIR",
                    help="a paper-driver run directory (config.json) or a `fevo analyze --out` directory")
    ap.add_argument("--out", required=True, metavar="OUTDIR", help="where figures/ and report.html go")
    args = ap.parse_args(argv)
    try:
        runs = load_runs(args.rundirs)
        path, drawn = build(runs, args.out)
    except InputError as e:
        print(f"fevo_report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fevo_report: error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"fevo_report: {len(drawn)} figures (PNG and SVG) in {os.path.join(args.out, 'figures')}")
    print(os.path.abspath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
