#!/usr/bin/env python3
"""fevo_report: the paper's findings, figures and Table IV from fevo runs, as one report.html.

    python3 tools/fevo_report.py RUNDIR [RUNDIR...] --out OUTDIR [--compare OTHER]

Each RUNDIR is either a training run of the paper driver (config.json present; see the run
directory contract in docs/report.md) or the output directory of `fevo analyze` (only
metrics.csv and filter_summary.csv: Fig. 2 and Fig. 4 are drawn for it, named by its directory,
over all its layers when it has at most five, else five spread evenly over depth, first and last
included; D per weight is metrics.csv's D_per_weight column, present in either kind of directory
recorded by this fevo).

The page, in this order: the findings table (each of the paper's findings, per model and quantity,
with its criterion, the run's numbers and the verdict; report_findings.py; and, beyond the paper,
Agrawal et al.'s relative weight change, from the run's weight_change.csv when it has one), a
"why" paragraph for each finding that does not hold, the run placed between the two papers, the
verdicts that changed since OTHER (with --compare: the OUTDIR of an earlier report, or its
findings.json), the figures (Fig. 2, Fig. 4, Table IV, the per-layer statistics, Fig. 1, Fig. 3),
and the run settings, folded.

Writes OUTDIR/figures/*.png and *.svg, OUTDIR/findings.json and findings.csv (the table's rows, and
the runs' settings), and OUTDIR/report.html (self-contained: figures embedded as data URIs, inline
CSS, no script, no network; the CSV files are linked by relative path), and prints the path of
report.html as its last line. A missing or malformed input file ends it with one line on stderr
naming the file and the problem, and exit status 2.
"""

import argparse
import base64
import csv
import datetime
import html
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report_data import InputError, load_runs, read_json  # noqa: E402
import report_figures as figs  # noqa: E402
import report_findings as fnd  # noqa: E402

LINKED_FILES = ("config.json", "summary.json", "train_log.csv", "metrics.csv", "filter_summary.csv",
                "weight_change.csv", "table4.csv", "table4.md", "series/index.csv", "fig3/index.csv")
SETTING_KEYS = ("model", "width", "input_size", "dataset", "classes", "train_images", "test_images", "steps",
                "batch", "lr", "lr_halve_steps", "tau", "record_every", "seed", "device", "threads", "versions")
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; max-width: 900px; }
.holds { color: #176b21; font-weight: bold; } .does-not-hold { color: #a31515; font-weight: bold; }
.cannot-be-checked { color: #8a6d00; font-weight: bold; }
.holds, .does-not-hold, .cannot-be-checked { white-space: nowrap; }
.small { font-size: .85em; color: #555; } code { background: #f5f5f5; padding: 0 .2em; }
#findings td { font-size: .92em; } #findings td.paper { max-width: 22em; } #findings td.crit { max-width: 22em; }
#findings tr.group-start td { border-top: 2px solid #999; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: bold; }
p.why { max-width: 70em; }
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


LAYER_HEADER = ["conv", "layer", "depth", "shape [O, I, H, W]", "C x H x W", "filters", "records", "mean D",
                "mean D per weight", "mean relative change", "mean S", "mean Z", "barely changing",
                "barely changing (%)"]


def layers_html(run):
    rows = []
    for s in fnd.layer_stats(run):
        rows.append((f"conv{s.index}" if run.is_driver else str(s.index), esc(s.name), s.depth,
                     esc(json.dumps(s.shape)) if s.shape else "\u2014", s.chw if s.chw else "\u2014",
                     s.n_filters, s.records, num(s.mean["D"]), num(s.mean["Dw"]) if s.series["Dw"] is not None else "\u2014",
                     num(s.mean["R"]) if run.has_weight_change else "\u2014", num(s.mean["S"]), num(s.mean["Z"]), s.barely, f"{100 * s.barely_share:.2f}"))
    return table(f"layers-{run.label}", LAYER_HEADER, rows, numeric=LAYER_HEADER[4:])


TABLE4_HEADER = ["conv", "layer", "filters", "zeroed", "baseline accuracy (%)", "least_D accuracy (%)",
                 "least_D drop (%)", "most_Z drop (%)", "random draws", "random accuracy mean (%)",
                 "random drop mean (%)", "random drop std (%)"]


def table4_html(run):
    rows = []
    for i, (name, least, mostz, rnd) in enumerate(fnd.table4_rows(run), start=1):
        rows.append((f"conv{i}", esc(name), least["filters"], least["zeroed"], pct(least["baseline_accuracy"]),
                     pct(least["accuracy_mean"]), pct(least["drop_mean"]),
                     pct(mostz["drop_mean"]) if mostz else "\u2014", rnd["draws"], pct(rnd["accuracy_mean"]),
                     pct(rnd["drop_mean"]), pct(rnd["drop_std"])))
    return table(f"table4-{run.label}", TABLE4_HEADER, rows, numeric=TABLE4_HEADER[2:])


FINDINGS_HEADER = ["", "the paper (section)", "criterion", "model", "quantity", "this run", "verdict"]


def verdict_html(row):
    cls = row.status.replace(" ", "-")
    out = f'<span class="{cls}">{esc(row.status)}</span>'
    if row.why:
        out += f' <a href="#why-{esc(row.id)}">why</a>'
    return out


def findings_html(rows):
    """The findings table: one row per (finding, model, quantity); the finding's number, the
    paper's words and the criterion span its rows."""
    out = ['<table id="findings"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in FINDINGS_HEADER) +
           "</tr></thead><tbody>"]
    groups = []
    for r in rows:
        if not groups or groups[-1][0] is not r.finding:
            groups.append((r.finding, []))
        groups[-1][1].append(r)
    for f, members in groups:
        for k, r in enumerate(members):
            cells = []
            if k == 0:
                span = f' rowspan="{len(members)}"' if len(members) > 1 else ""
                cells.append(f'<td{span}><b>{esc(f.key)}</b></td>')
                cells.append(f'<td{span} class="paper"><b>{esc(f.title)}</b><br>{esc(f.paper)} '
                             f'<span class="small">({esc(f.section)})</span></td>')
                cells.append(f'<td{span} class="crit small">{esc(f.criterion)}</td>')
            cells += [f"<td>{esc(r.model)}</td>", f"<td>{esc(r.quantity)}</td>",
                      f'<td class="small">{esc(r.numbers)}</td>', f'<td id="{esc(r.id)}">{verdict_html(r)}</td>']
            cls = ' class="group-start"' if k == 0 else ""
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def why_html(rows):
    failing = [r for r in rows if r.why]
    if not failing:
        return ""
    parts = ['<h2 id="why">Why these findings do not hold in this run</h2>']
    for r in failing:
        parts.append(f'<p class="why" id="why-{esc(r.id)}"><b>{esc(r.finding.key)}, {esc(r.model)}, '
                     f'{esc(r.quantity)}:</b> {esc(r.why)}</p>')
    return "\n".join(parts)


def between_html(between):
    """The run placed between this paper and Agrawal et al. (report_findings.between)."""
    if not between:
        return ""
    return "\n".join(['<h2 id="between">Between this paper and Agrawal et al.</h2>'] +
                     [f'<p class="why" id="between-{esc("".join(c for c in m if c.isalnum()))}">{esc(t)}</p>'
                      for m, t in between])


def counts_text(rows):
    n = {s: sum(r.status == s for r in rows) for s in (fnd.HOLDS, fnd.NOT_HOLD, fnd.CANNOT)}
    return (f"{n[fnd.HOLDS]} hold, {n[fnd.NOT_HOLD]} do not hold, {n[fnd.CANNOT]} cannot be checked "
            f"({len(rows)} rows of {len(fnd.FINDINGS)} findings)")


RUN_SETTINGS = ("model", "width", "input_size", "dataset", "train_images", "test_images", "steps", "batch", "lr",
                "lr_halve_steps", "tau", "record_every", "seed", "zero_draws")


def run_settings(run):
    out = {"label": run.label, "path": os.path.abspath(run.path), "driver": run.is_driver}
    if run.is_driver:
        for k in RUN_SETTINGS:
            if k in run.config:
                out[k] = run.config[k]
        if "final_test_accuracy" in run.summary:
            out["final_test_accuracy"] = run.summary["final_test_accuracy"]
    return out


def write_findings(rows, runs, outdir, generated, between=()):
    """findings.json (runs' settings, every row and the between-the-papers sentences) and
    findings.csv (the rows), written atomically."""
    data = {"generated": generated, "runs": [run_settings(r) for r in runs],
            "between": [{"model": m, "text": t} for m, t in between],
            "rows": [{"id": r.id, "finding": r.finding.key, "title": r.finding.title, "section": r.finding.section,
                      "model": r.model, "quantity": r.quantity, "status": r.status, "numbers": r.numbers,
                      "why": r.why or "", "criterion": r.finding.criterion} for r in rows]}
    path = os.path.join(outdir, "findings.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    path = os.path.join(outdir, "findings.csv")
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        keys = ["id", "finding", "model", "quantity", "status", "numbers", "why"]
        w.writerow(keys)
        for row in data["rows"]:
            w.writerow([row[k] for k in keys])
    os.replace(path + ".tmp", path)
    return data


def read_compare(path):
    """The findings.json of an earlier report: `path` is that report's OUTDIR or the file."""
    f = os.path.join(path, "findings.json") if os.path.isdir(path) else path
    data = read_json(f)
    if not isinstance(data.get("rows"), list) or not isinstance(data.get("runs"), list):
        raise InputError(f, "has no 'rows' and 'runs' lists (not a findings.json of fevo_report.py)")
    for i, r in enumerate(data["rows"]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("id", "status", "numbers")):
            raise InputError(f, f"rows[{i}] lacks the strings 'id', 'status' and 'numbers'")
    return f, data


def compare_html(rows, runs, cmp_path, cmp, outdir):
    there = {r["id"]: r for r in cmp["rows"]}
    changed = [r for r in rows if r.id in there and there[r.id]["status"] != r.status]
    same = sum(1 for r in rows if r.id in there and there[r.id]["status"] == r.status)
    since = os.path.dirname(cmp_path) or "."
    parts = [f'<h2 id="verdict-changes">Verdicts changed since {esc(since)}</h2>',
             f'<p>Compared with the report whose findings are in <code>{esc(cmp_path)}</code>: '
             f"{len(changed)} of {len(rows)} rows changed verdict, {same} kept it"
             + (f", {len(rows) - len(changed) - same} are new" if len(rows) - len(changed) - same else "") + ".</p>"]
    # The settings that differ between the two, per model.
    here = {s.get("model", s["label"]): s for s in (run_settings(r) for r in runs)}
    diffs = []
    for s in cmp["runs"]:
        if not isinstance(s, dict):
            continue
        key = s.get("model", s.get("label"))
        h = here.get(key)
        if h is None:
            continue
        for k in sorted(set(s) | set(h)):
            if k in ("label", "path", "driver"):
                continue
            if s.get(k) != h.get(k):
                diffs.append((esc(key), esc(k), esc(json.dumps(s.get(k))), esc(json.dumps(h.get(k)))))
    if diffs:
        parts.append(table("changes-settings", ["run", "setting", "there", "here"], diffs))
    if changed:
        trs = []
        for r in changed:
            t = there[r.id]
            trs.append((esc(r.finding.key), esc(r.model), esc(r.quantity),
                        f'<span class="{t["status"].replace(" ", "-")}">{esc(t["status"])}</span>',
                        verdict_html(r), f'<span class="small">{esc(t["numbers"])}</span>',
                        f'<span class="small">{esc(r.numbers)}</span>'))
        parts.append(table("changes", ["", "model", "quantity", "verdict there", "verdict here", "numbers there",
                                       "numbers here"], trs))
    return "\n".join(parts)


FIG_TITLES = {"fig1": "Fig. 1: first-layer filters over training",
              "fig2": "Fig. 2: D, D per weight, S and Z against the training step",
              "fig3": "Fig. 3: feature maps at the first and last step",
              "fig4": "Fig. 4: per-filter D averaged over training"}


def build(runs, outdir, compare=None):
    figdir = os.path.join(outdir, "figures")
    os.makedirs(figdir, exist_ok=True)
    drawn = []  # (section, png path, size, caption)
    p, size = figs.fig2(runs, figdir, "fig2")
    lr = ("dashed lines: learning rate halved" if any(r.is_driver and r.config["lr_halve_steps"] for r in runs)
          else "no learning-rate change recorded")
    no_dw = [r.label for r in runs if not r.has_dw()]
    no_change = [r.label for r in runs if not r.has_weight_change]
    rows2 = figs.fig2_rows(runs)
    drawn.append(("fig2", p, size,
                  "Fig. 2: one column per run, one row per quantity: D (eq. 1, log scale), "
                  + ("D per weight (D / (C x H x W), log scale), " if "Dw" in rows2 else "")
                  + ("the relative weight change of Agrawal et al. (||W_t - W_t-1||_1 / ||W_t-1||_1 between "
                     "consecutive records, weight_change.csv, log scale), " if "R" in rows2 else "")
                  + "S (eq. 2) and Z (eq. 3) against the training step, for "
                  + "; ".join(f"{esc(r.label)}: {esc(r.selected_from)}" for r in runs)
                  + f"; {lr}. Each row has one y-range in every column (S and Z: 0 to 1)."
                  + (f" {esc(', '.join(no_dw))} has no D_per_weight column in its metrics.csv (recorded "
                     "before fevo wrote it): its D-per-weight panel says so." if no_dw and "Dw" in rows2 else "")
                  + (f" {esc(', '.join(no_change))} has no weight_change.csv: its relative-change panel says so."
                     if no_change and "R" in rows2 else "")))
    p, size = figs.fig4(runs, figdir, "fig4")
    drawn.append(("fig4", p, size,
                  "Fig. 4: each filter's D averaged over training (D_mean of filter_summary.csv), filters "
                  "sorted by it, one line per layer, one chart per run; log scale, filters with D_mean = 0 "
                  "on the dotted line."))
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
        if run.is_driver:
            p, size = figs.fig3(run, figdir, f"fig3_{run.label}")
            drawn.append(("fig3", p, size,
                          f"Fig. 3 ({esc(run.label)}): feature maps after ReLU of first-layer filters on the "
                          f"test image at the first (top) and last (bottom) recorded step, each map min-max "
                          f"normalised."))

    rows = fnd.check_all(runs)
    between = fnd.between(runs)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    write_findings(rows, runs, outdir, now, between)
    body = ["<h1>How filters evolve: the paper's findings in this run</h1>",
            findings_html(rows),
            f'<p class="small">{esc(counts_text(rows))}. Models: '
            + (", ".join(f'<a href="#run-{esc(r.label)}">{esc(r.label)}</a>' for r in runs)) +
            ". D, S, Z as defined by eqs. 1\u20133 of the paper (tau = the initial learning rate); "
            "D per weight = D / (C x H x W), the mean squared change of one weight (fevo's addition). "
            "Relative change = ||W_t - W_t-1||_1 / ||W_t-1||_1 between consecutive records (Agrawal et al., "
            "computed by the paper driver into weight_change.csv; A1). "
            "Criteria are fixed in tools/report_findings.py; the rows are also in "
            '<a href="findings.csv">findings.csv</a> and <a href="findings.json">findings.json</a>.</p>']
    if no_dw:
        body.append(f'<p class="small">{esc(", ".join(no_dw))}: metrics.csv has no <code>D_per_weight</code> '
                    "column (recorded before fevo wrote it), so only D is shown for it.</p>")
    body.append(why_html(rows))
    body.append(between_html(between))
    if compare:
        body.append(compare_html(rows, runs, compare[0], compare[1], outdir))
    sections = {sec: [d for d in drawn if d[0] == sec] for sec in FIG_TITLES}

    def figures(sec):
        if sections[sec]:
            body.append(f"<h2>{FIG_TITLES[sec]}</h2>")
            body.extend(figure_html(p, size, cap, outdir) for _, p, size, cap in sections[sec])

    figures("fig2")
    figures("fig4")
    t4 = [r for r in runs if r.is_driver]
    if t4:
        body.append("<h2>Table IV: accuracy after zeroing filters</h2>")
        body.append('<p class="small">Per Table III layer, the test accuracy with <code>zeroed</code> '
                    "filters set to zero: least_D (the filters with the smallest D_mean), most_Z (the largest "
                    "frac_Z_one), and random draws (mean and standard deviation over the draws). Drop = baseline "
                    "accuracy minus accuracy, in percentage points.</p>")
        for r in t4:
            body += [f"<h3>{esc(r.label)}</h3>", table4_html(r)]
    body.append("<h2>Per-layer statistics</h2>")
    body.append('<p class="small">Mean D, D per weight, relative change (from weight_change.csv; \u2014 where '
                "the run has none), S, Z over every record with a finite value; a filter "
                f"barely changes when frac_S_zero &ge; {fnd.BARELY_FRAC_S_ZERO} in filter_summary.csv.</p>")
    for r in runs:
        body += [f"<h3>{esc(r.label)}</h3>", layers_html(r)]
    figures("fig1")
    figures("fig3")
    body.append('<h2 id="settings">Run settings</h2>')
    body.append(f'<p class="small">Generated {esc(now)} by tools/fevo_report.py.</p>')
    for r in runs:
        summary = f"{esc(r.label)}: " + (", ".join(
            f"{k} {esc(json.dumps(r.config[k]) if isinstance(r.config[k], list) else r.config[k])}"
            for k in ("width", "input_size", "steps", "batch", "lr") if k in r.config)
            if r.is_driver else "a fevo analyze directory")
        body.append(f"<details><summary>{summary}</summary>\n{settings_html(r, outdir)}\n</details>")
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           f"<title>fevo report: {esc(', '.join(r.label for r in runs))}</title>\n<style>{CSS}</style>\n"
           "</head>\n<body>\n" + "\n".join(b for b in body if b) + "\n</body>\n</html>\n")
    path = os.path.join(outdir, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, path)
    return path, drawn


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="fevo_report.py",
        description="The paper's findings, figures and Table IV from fevo runs, as one report.html.")
    ap.add_argument("rundirs", nargs="+", metavar="RUNDIR",
                    help="a paper-driver run directory (config.json) or a `fevo analyze --out` directory")
    ap.add_argument("--out", required=True, metavar="OUTDIR", help="where figures/ and report.html go")
    ap.add_argument("--compare", metavar="OTHER",
                    help="an earlier report's OUTDIR (or its findings.json): list the verdicts that changed")
    args = ap.parse_args(argv)
    try:
        runs = load_runs(args.rundirs)
        compare = read_compare(args.compare) if args.compare else None
        path, drawn = build(runs, args.out, compare)
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
