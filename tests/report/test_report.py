#!/usr/bin/env python3
"""Tests of tools/fevo_report.py on the synthetic runs of make_fixture.py (unittest, no pytest):

  * every figure is written as PNG and SVG; each PNG decodes, has the size of its layout and is
    not one colour; each SVG parses as XML; Fig. 2 puts the runs side by side, one row per
    quantity, each row on one y-range;
  * report.html is self-contained (every image a PNG data URI equal to the file, no script, no
    network reference) and links files that exist; its findings table comes first, then the
    figures, then the run settings, folded;
  * the numbers of its tables equal the CSV files (Table IV, per-layer statistics with D per
    weight from config.json's shapes, settings), findings.csv and findings.json equal the table;
  * every finding's criterion on runs built to hold (make_fixture.py --findings hold: every row
    holds) and built not to hold (--findings fail: every row does not hold, each with its "why"),
    and at the edges of each criterion (a test's p just above or below 0.05, a failing third of
    training, missing Table IV rows or draws, no layer shapes: "cannot be checked");
  * Agrawal et al.'s relative weight change (weight_change.csv): A1 both ways and at its edge, the
    run placed between the two papers, Fig. 2's row of it, the per-layer table, a run without the
    file (it renders; A1 "cannot be checked", saying why) and malformed files;
  * --compare: the verdicts that changed between two reports;
  * a `fevo analyze` directory alone: Fig. 2 (D, S, Z) and Fig. 4, five layers spread over depth;
  * missing and malformed inputs: exit status 2 and one line naming the file.

    python3 tests/report/test_report.py [-v]      (FEVO_TEST_SEED=N: the fixture's seed, 1 by default)
"""

import base64
import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOL = os.path.join(ROOT, "tools", "fevo_report.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

import fevo_report  # noqa: E402
import report_data  # noqa: E402
import report_figures as figs  # noqa: E402
import report_findings as fnd  # noqa: E402

SEED = int(os.environ.get("FEVO_TEST_SEED", "1"))
print(f"test_report: fixture seed {SEED} (FEVO_TEST_SEED)", file=sys.stderr)


class Page(HTMLParser):
    """Tables (by id: list of rows of cell texts, header row first; a cell with rowspan repeats in
    the rows it spans), img srcs, hrefs, scripts, element ids in document order."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.hrefs, self.srcs, self.scripts, self.ids = {}, [], [], [], 0, []
        self.details_depth, self.in_details = 0, set()
        self._table = self._row = self._cell = None
        self._span = {}  # column -> (remaining rows, text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "details":
            self.details_depth += 1
        if tag == "table":
            tid = a.get("id", f"anon{len(self.tables)}")
            self._table = self.tables.setdefault(tid, [])
            self._span = {}
            if self.details_depth:
                self.in_details.add(tid)
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._fill()
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._cell_span = int(a.get("rowspan", "1"))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if k in a:
                self.srcs.append(a[k])

    def _fill(self):
        while len(self._row) in self._span:
            col = len(self._row)
            left, text = self._span[col]
            self._row.append(text)
            if left <= 1:
                del self._span[col]
            else:
                self._span[col] = (left - 1, text)

    def handle_endtag(self, tag):
        if tag == "details":
            self.details_depth -= 1
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._cell_span > 1:
                self._span[len(self._row)] = (self._cell_span - 1, text)
            self._row.append(text)
            self._cell = None
            self._fill()
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=120)


def run_main(*args):
    """fevo_report.main in this process (no interpreter start, for the many bad-input cases):
    a CompletedProcess-like (returncode, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fevo_report.main(list(args))
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_json(path):
    return json.loads(read_text(path))


def dict_rows(table):
    header = table[0]
    return [dict(zip(header, r)) for r in table[1:]]


class Fixture:
    """The fixture runs, built once: get() those built so that every finding holds, get("fail")
    those built so that none does."""
    dirs = {}

    @classmethod
    def get(cls, findings="hold"):
        if findings not in cls.dirs:
            d = tempfile.mkdtemp(prefix=f"fevo_report_test_{findings}_")
            subprocess.run([sys.executable, os.path.join(HERE, "make_fixture.py"), d, "--findings", findings,
                            "--seed", str(SEED)], check=True)
            cls.dirs[findings] = d
        return cls.dirs[findings]


class FullReport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fx = Fixture.get()
        cls.out = os.path.join(cls.fx, "out")
        cls.runs = [os.path.join(cls.fx, m) for m in ("vgg16", "resnet50", "analyze")]
        cls.proc = run_tool(*cls.runs, "--out", cls.out)
        if cls.proc.returncode != 0:
            raise AssertionError(f"fevo_report.py failed ({cls.proc.returncode}):\n{cls.proc.stderr}")
        cls.html_path = os.path.join(cls.out, "report.html")
        with open(cls.html_path, encoding="utf-8") as f:
            cls.html = f.read()
        cls.page = Page()
        cls.page.feed(cls.html)

    def expected_figures(self):
        """name -> (width, height) in pixels, from the fixture's dimensions."""
        exp = {}
        for m in ("vgg16", "resnet50"):
            w = np.load(os.path.join(self.fx, m, "first_layer.npy"))
            exp[f"fig1_{m}"] = figs.fig1_size_px(min(w.shape[1], figs.FIG1_MAX_FILTERS),
                                                 min(w.shape[0], figs.FIG1_MAX_STEPS))
            exp[f"fig3_{m}"] = figs.fig3_size_px(5)
        exp["fig2"] = figs.fig2_size_px(3, 5)  # three runs; D, D per weight, relative change, S, Z
        exp["fig4"] = figs.fig4_size_px(3)
        return exp

    def test_last_line_is_report_path(self):
        last = self.proc.stdout.strip().splitlines()[-1]
        self.assertEqual(os.path.abspath(last), os.path.abspath(self.html_path))

    def test_every_figure_png_and_svg(self):
        figdir = os.path.join(self.out, "figures")
        exp = self.expected_figures()
        self.assertEqual(sorted(f for f in os.listdir(figdir)),
                         sorted([n + ".png" for n in exp] + [n + ".svg" for n in exp]))
        for name, (w, h) in exp.items():
            with self.subTest(figure=name):
                a = mpimg.imread(os.path.join(figdir, name + ".png"))
                self.assertEqual((a.shape[1], a.shape[0]), (w, h))
                rgb = a[..., :3].reshape(-1, 3)
                self.assertGreater(float(rgb.std()), 0.0, "one colour")
                # Not blank: more than 2 % of the pixels differ from the background (the corner).
                self.assertGreater(float(np.mean(np.any(rgb != rgb[0], axis=1))), 0.02)
                root = ET.parse(os.path.join(figdir, name + ".svg")).getroot()
                self.assertTrue(root.tag.endswith("svg"))

    def test_self_contained(self):
        self.assertEqual(self.page.scripts, 0)
        for s in self.page.srcs:
            self.assertFalse(s.startswith(("http:", "https:", "//", "file:")), s)
        figdir = os.path.join(self.out, "figures")
        pngs = {}
        for f in os.listdir(figdir):
            if f.endswith(".png"):
                with open(os.path.join(figdir, f), "rb") as fh:
                    pngs[fh.read()] = f
        self.assertEqual(len(self.page.imgs), len(pngs))
        seen = set()
        for src in self.page.imgs:
            self.assertTrue(src.startswith("data:image/png;base64,"))
            data = base64.b64decode(src.split(",", 1)[1])
            self.assertIn(data, pngs, "an embedded image differs from every figures/*.png")
            seen.add(pngs[data])
        self.assertEqual(len(seen), len(pngs))
        for href in self.page.hrefs:
            if href.startswith("#"):
                self.assertIn(f'id="{href[1:]}"', self.html)
                continue
            self.assertTrue(os.path.exists(os.path.join(self.out, href)), href)
        for m in ("vgg16", "resnet50"):
            for f in ("metrics.csv", "filter_summary.csv", "table4.csv", "train_log.csv"):
                self.assertIn(os.path.relpath(os.path.join(self.fx, m, f), self.out), self.page.hrefs)
        for f in ("metrics.csv", "filter_summary.csv"):
            self.assertIn(os.path.relpath(os.path.join(self.fx, "analyze", f), self.out), self.page.hrefs)

    def assertPercent(self, cell, fraction):
        # Printed as a percentage with 4 decimals: within half a unit of the last digit.
        self.assertLessEqual(abs(float(cell) / 100 - fraction), 0.5e-6 + 1e-12, (cell, fraction))

    def assertSig(self, cell, value):
        # Printed with 6 significant digits.
        self.assertLessEqual(abs(float(cell) - value), 5e-6 * abs(value) + 1e-300, (cell, value))

    def test_table4_equals_csv(self):
        for m in ("vgg16", "resnet50"):
            rows = read_csv(os.path.join(self.fx, m, "table4.csv"))
            cfg = load_json((os.path.join(self.fx, m, "config.json")))
            table = dict_rows(self.page.tables[f"table4-{m}"])
            self.assertEqual([r["layer"] for r in table], cfg["table3"])
            for i, t in enumerate(table, start=1):
                by = {r["criterion"]: r for r in rows if r["layer"] == t["layer"]}
                with self.subTest(model=m, layer=t["layer"]):
                    self.assertEqual(t["conv"], f"conv{i}")
                    self.assertEqual(int(t["filters"]), int(by["least_D"]["filters"]))
                    self.assertEqual(int(t["zeroed"]), int(by["least_D"]["zeroed"]))
                    self.assertPercent(t["baseline accuracy (%)"], float(by["least_D"]["baseline_accuracy"]))
                    self.assertPercent(t["least_D accuracy (%)"], float(by["least_D"]["accuracy_mean"]))
                    self.assertPercent(t["least_D drop (%)"], float(by["least_D"]["drop_mean"]))
                    self.assertPercent(t["most_Z drop (%)"], float(by["most_Z"]["drop_mean"]))
                    self.assertEqual(int(t["random draws"]), int(by["random"]["draws"]))
                    self.assertPercent(t["random accuracy mean (%)"], float(by["random"]["accuracy_mean"]))
                    self.assertPercent(t["random drop mean (%)"], float(by["random"]["drop_mean"]))
                    self.assertPercent(t["random drop std (%)"], float(by["random"]["drop_std"]))

    def test_layer_tables_equal_csv(self):
        for m, sel in (("vgg16", None), ("resnet50", None),
                       ("analyze", ["features.0.weight", "features.4.weight", "features.6.weight",
                                    "features.8.weight", 'odd,name "x"'])):
            metrics = read_csv(os.path.join(self.fx, m, "metrics.csv"))
            summary = read_csv(os.path.join(self.fx, m, "filter_summary.csv"))
            if sel is None:
                sel = load_json((os.path.join(self.fx, m, "config.json")))["table3"]
            table = dict_rows(self.page.tables[f"layers-{m}"])
            self.assertEqual([t["layer"] for t in table], sel)
            for t in table:
                with self.subTest(model=m, layer=t["layer"]):
                    rows = [r for r in metrics if r["layer"] == t["layer"]]
                    filt = [r for r in summary if r["layer"] == t["layer"]]
                    self.assertEqual(int(t["records"]), len(rows))
                    self.assertEqual(int(t["filters"]), int(rows[0]["n_filters"]))
                    for k in "DSZ":
                        self.assertSig(t[f"mean {k}"], sum(float(r[k]) for r in rows) / len(rows))
                    # D per weight: metrics.csv's column, in either kind of directory
                    self.assertSig(t["mean D per weight"], sum(float(r["D_per_weight"]) for r in rows) / len(rows))
                    if m == "analyze":  # no shapes; no weight_change.csv
                        self.assertEqual((t["shape [O, I, H, W]"], t["C x H x W"], t["mean relative change"]),
                                         ("\u2014",) * 3)
                    else:
                        shape = {e["name"]: e["shape"] for e in
                                 load_json(os.path.join(self.fx, m, "config.json"))["conv_layers"]}[t["layer"]]
                        chw = shape[1] * shape[2] * shape[3]
                        self.assertEqual(json.loads(t["shape [O, I, H, W]"]), shape)
                        self.assertEqual(int(t["C x H x W"]), chw)
                        self.assertSig(t["mean D per weight"], sum(float(r["D"]) for r in rows) / len(rows) / chw)
                        wc = [float(r["relative_change"]) for r in
                              read_csv(os.path.join(self.fx, m, "weight_change.csv")) if r["layer"] == t["layer"]]
                        self.assertEqual(len(wc), len(rows))
                        self.assertSig(t["mean relative change"], sum(wc) / len(wc))
                    barely = sum(float(r["frac_S_zero"]) >= 0.9 for r in filt)
                    self.assertEqual(int(t["barely changing"]), barely)
                    self.assertAlmostEqual(float(t["barely changing (%)"]), 100 * barely / len(filt), places=2)

    def test_settings_equal_config(self):
        for m in ("vgg16", "resnet50"):
            cfg = load_json((os.path.join(self.fx, m, "config.json")))
            summ = load_json((os.path.join(self.fx, m, "summary.json")))
            t = {r[0]: r[1] for r in self.page.tables[f"settings-{m}"][1:]}
            for k in ("model", "dataset", "device"):
                self.assertEqual(t[k], cfg[k])
            for k in ("width", "lr", "tau", "steps", "batch", "record_every", "seed", "classes"):
                self.assertEqual(float(t[k]), float(cfg[k]))
            self.assertEqual(json.loads(t["lr_halve_steps"]), cfg["lr_halve_steps"])
            for k, v in summ.items():
                self.assertSig(t["summary: " + k], float(v))

    def test_findings_hold_on_fixture(self):
        table = dict_rows(self.page.tables["findings"])
        self.assertEqual(len(table), len(fnd.check_all(fixture_runs("vgg16", "resnet50"))))
        self.assertEqual({r["verdict"] for r in table}, {"holds"})
        # Every finding, in order, each quantity of the per-metric ones, D per weight beside D.
        self.assertEqual(list(dict.fromkeys(r[""] for r in table)), [f.key for f in fnd.FINDINGS])
        f1 = [r for r in table if r[""] == "F1"]
        self.assertEqual([r["quantity"] for r in f1], ["D", "D per weight", "S", "Z"])
        self.assertEqual([r["quantity"] for r in table if r[""] == "F2"], ["D", "D per weight", "S", "Z"])
        # Agrawal et al.'s finding right after F1's D rows, per model, with this paper's D beside it.
        a1 = [r for r in table if r[""] == "A1"]
        self.assertEqual([(r["model"], r["quantity"]) for r in a1],
                         [("VGG-16", "relative change"), ("ResNet-50", "relative change")])
        self.assertEqual(list(dict.fromkeys(r[""] for r in table))[:3], ["F1", "A1", "F2"])
        self.assertIn("Spearman rho(depth, mean relative change) = +1.00, exact one-sided p = 0.008", a1[0]["this run"])
        self.assertIn("beside it, this paper's D (F1: falls with depth): rho(depth, mean D) = -1.00", a1[0]["this run"])
        self.assertIn("over all 13 conv layers rho = ", a1[0]["this run"])
        self.assertIn("over all 53 conv layers rho = ", a1[1]["this run"])
        self.assertIn("\u201cthe overall increase in relative weight change of later layers", a1[0]["the paper (section)"])
        self.assertIn("arXiv 2011.06735", a1[0]["the paper (section)"])
        # The numbers quoted: rho of VGG-16 is -1 (means sqrt(10) apart), exact p = 1/120.
        self.assertIn("Spearman rho(depth, mean D) = -1.00, exact one-sided p = 0.008", f1[0]["this run"])
        self.assertIn("\u201cwe can observe obvious stratification in VGGNet", f1[0]["the paper (section)"])
        self.assertIn("Sec. IV-C", f1[0]["the paper (section)"])
        self.assertNotIn('id="why"', self.html)  # nothing to explain

    def test_findings_files_equal_table(self):
        table = dict_rows(self.page.tables["findings"])
        data = load_json(os.path.join(self.out, "findings.json"))
        rows = read_csv(os.path.join(self.out, "findings.csv"))
        self.assertEqual(len(data["rows"]), len(table))
        self.assertEqual(len(rows), len(table))
        for t, j, c in zip(table, data["rows"], rows):
            self.assertEqual((t[""], t["model"], t["quantity"], t["verdict"], t["this run"]),
                             (j["finding"], j["model"], j["quantity"], j["status"], j["numbers"]))
            self.assertEqual(j["id"], c["id"])
            self.assertEqual((c["status"], c["numbers"]), (j["status"], j["numbers"]))
        self.assertEqual([r["label"] for r in data["runs"]], ["vgg16", "resnet50", "analyze"])
        self.assertEqual(data["runs"][0]["steps"], load_json(os.path.join(self.fx, "vgg16", "config.json"))["steps"])

    def test_page_order(self):
        """Findings first (the first table, nothing drawn before it), then the figures, then the
        settings, folded."""
        first_table = self.html.index("<table")
        self.assertEqual(first_table, self.html.index('<table id="findings"'))
        self.assertLess(first_table, self.html.index("<img"))
        self.assertEqual(self.html[:first_table].count("<p"), 0)
        marks = ['<table id="findings"', 'id="between"', 'alt="Fig. 2', 'alt="Fig. 4', 'id="table4-vgg16"', 'id="layers-vgg16"',
                 'alt="Fig. 1', 'alt="Fig. 3', 'id="settings"', 'id="settings-vgg16"']
        pos = [self.html.index(m) for m in marks]
        self.assertEqual(pos, sorted(pos), marks)
        for m in ("vgg16", "resnet50"):
            self.assertIn(f"settings-{m}", self.page.in_details)
        self.assertNotIn("findings", self.page.in_details)
        self.assertNotIn("<details open", self.html)

    def test_fig2_layout(self):
        """Runs side by side, one row per quantity, each row on one y-range (S, Z: 0 to 1)."""
        runs = fixture_runs("vgg16", "resnet50", "analyze")
        fig, axes, size = figs.fig2_axes(runs)
        try:
            self.assertEqual(size, figs.fig2_size_px(3, 5))
            keys = ["D", "Dw", "R", "S", "Z"]
            self.assertEqual(sorted({k for k, _ in axes}), sorted(keys))
            for key in keys:
                boxes = [axes[(key, r.label)].get_position() for r in runs]
                self.assertEqual(len({round(b.y0, 6) for b in boxes}), 1, key)  # one row
                self.assertEqual([b.x0 for b in boxes], sorted(b.x0 for b in boxes))  # left to right
                drawn = [r for r in runs if (key != "Dw" or r.has_dw()) and (key != "R" or r.has_weight_change)]
                self.assertEqual(len({axes[(key, r.label)].get_ylim() for r in drawn}), 1, key)
            for key in ("S", "Z"):
                self.assertEqual(axes[(key, "vgg16")].get_ylim(), (0.0, 1.0))
            for key in ("D", "Dw", "R"):
                self.assertEqual(axes[(key, "vgg16")].get_yscale(), "log")
            # Rows top to bottom: D, D per weight, relative change, S, Z.
            ys = [axes[(k, "vgg16")].get_position().y0 for k in keys]
            self.assertEqual(ys, sorted(ys, reverse=True))
            # Without weight_change.csv, the panel says why instead of drawing; D per weight is
            # metrics.csv's, drawn for `fevo analyze` output too (its layers' shapes unknown).
            self.assertEqual(len(axes[("Dw", "analyze")].lines), 5)
            self.assertEqual(len(axes[("R", "analyze")].lines), 0)
            self.assertIn("no weight_change.csv", axes[("R", "analyze")].texts[0].get_text())
            for key in ("Dw", "R"):
                self.assertEqual(len(axes[(key, "vgg16")].lines), 5 + 2)  # five layers, two lr halvings
            # The relative change drawn is weight_change.csv's.
            vgg = runs[0]
            np.testing.assert_array_equal(axes[("R", "vgg16")].lines[0].get_ydata(),
                                          vgg.weight_change[vgg.selected[0]].relative)
        finally:
            import matplotlib.pyplot as plt
            plt.close(fig)


def fixture_runs(*models, findings="hold"):
    return report_data.load_runs([os.path.join(Fixture.get(findings), m) for m in models])


def by_id(rows):
    return {r.id: r for r in rows}


def finding(key):
    return next(f for f in fnd.FINDINGS if f.key == key)


class FailingRuns(unittest.TestCase):
    """make_fixture.py --findings fail: every row does not hold, each explained on the page."""

    @classmethod
    def setUpClass(cls):
        cls.fx = Fixture.get("fail")
        cls.out = os.path.join(cls.fx, "out")
        cls.proc = run_tool(os.path.join(cls.fx, "vgg16"), os.path.join(cls.fx, "resnet50"), "--out", cls.out)
        if cls.proc.returncode != 0:
            raise AssertionError(f"fevo_report.py failed ({cls.proc.returncode}):\n{cls.proc.stderr}")
        cls.html = read_text(os.path.join(cls.out, "report.html"))
        cls.page = Page()
        cls.page.feed(cls.html)

    def test_every_row_does_not_hold_with_a_why(self):
        rows = fnd.check_all(fixture_runs("vgg16", "resnet50", findings="fail"))
        self.assertEqual(len(dict_rows(self.page.tables["findings"])), len(rows))
        for r in rows:
            with self.subTest(row=r.id):
                self.assertEqual(r.status, fnd.NOT_HOLD, r.numbers)
                self.assertTrue(r.why)
                self.assertIn(f'id="why-{r.id}"', self.html)
                self.assertIn(f'href="#why-{r.id}"', self.html)
        self.assertEqual({r["verdict"] for r in dict_rows(self.page.tables["findings"])}, {"does not hold why"})
        # The why paragraphs come right after the table, before the figures.
        self.assertLess(self.html.index('id="findings"'), self.html.index('id="why"'))
        self.assertLess(self.html.index('id="why"'), self.html.index("<img"))

    def test_why_is_built_from_the_numbers(self):
        rows = by_id(fnd.check_all(fixture_runs("vgg16", "resnet50", findings="fail")))
        self.assertIn("mean D rises with depth (rho = +1.00)", rows["F1-VGG16-D"].why)
        self.assertIn("Spearman rho(C x H x W, mean D)", rows["F1-VGG16-D"].why)
        self.assertIn("VGG-16's mean Z does not rise with depth", rows["F2-both-Z"].why)
        self.assertIn("conv5's mean D", rows["F3-ResNet50-D"].why)
        self.assertIn("starts at Z =", rows["F4-ResNet50-Z"].why)
        self.assertIn("no filter of the five layers", rows["F7-VGG16-filters"].why)
        self.assertIn("ResNet-50 has 1 barely changing filters", rows["F9-ResNet50-filters"].why)
        self.assertIn("conv5 drops more than conv1", rows["T4-ResNet50-random"].why)
        why = rows["A1-VGG16-R"].why
        self.assertIn("mean relative change falls with depth (rho = -1.00): largest in conv1, smallest in conv5; "
                      "in Agrawal et al. it rises.", why)
        # The fixture's mean absolute change per weight falls, its mean absolute weight rises.
        self.assertIn("the mean absolute change of a weight over the mean absolute weight: the first falls with "
                      "depth (rho = -1.00;", why)
        self.assertIn("the second rises with depth (rho = +1.00;", why)
        self.assertIn("mean relative change falls with depth", rows["A1-ResNet50-R"].why)

    def test_compare_lists_changed_verdicts(self):
        hold_out = os.path.join(self.fx, "out_hold")
        p = run_tool(os.path.join(Fixture.get(), "vgg16"), os.path.join(Fixture.get(), "resnet50"), "--out", hold_out)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(self.fx, "out_cmp")
        p = run_tool(os.path.join(self.fx, "vgg16"), os.path.join(self.fx, "resnet50"), "--out", out,
                     "--compare", hold_out)
        self.assertEqual(p.returncode, 0, p.stderr)
        html = read_text(os.path.join(out, "report.html"))
        page = Page()
        page.feed(html)
        n = len(fnd.check_all(fixture_runs("vgg16", "resnet50")))
        changes = dict_rows(page.tables["changes"])
        self.assertEqual(len(changes), n)
        self.assertEqual({(c["verdict there"], c["verdict here"]) for c in changes}, {("holds", "does not hold why")})
        self.assertIn(f"{n} of {n} rows changed verdict", html)
        self.assertLess(html.index('id="findings"'), html.index('id="verdict-changes"'))
        self.assertLess(html.index('id="changes"'), html.index("<img"))
        # Compared with itself (its findings.json): nothing changed, no table of changes.
        out2 = os.path.join(self.fx, "out_self")
        p = run_tool(os.path.join(self.fx, "vgg16"), os.path.join(self.fx, "resnet50"), "--out", out2,
                     "--compare", os.path.join(out, "findings.json"))
        self.assertEqual(p.returncode, 0, p.stderr)
        html = read_text(os.path.join(out2, "report.html"))
        self.assertIn(f"0 of {n} rows changed verdict, {n} kept it", html)
        page = Page()
        page.feed(html)
        self.assertNotIn("changes", page.tables)

    def test_compare_settings_that_differ(self):
        hold, fail = Fixture.get(), self.fx
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "vgg16")
            shutil.copytree(os.path.join(fail, "vgg16"), run)
            cfg = load_json(os.path.join(run, "config.json"))
            cfg["width"], cfg["steps"] = 0.25, 400
            with open(os.path.join(run, "config.json"), "w") as f:
                json.dump(cfg, f)
            a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            self.assertEqual(run_tool(os.path.join(hold, "vgg16"), "--out", a).returncode, 0)
            p = run_tool(run, "--out", b, "--compare", a)
            self.assertEqual(p.returncode, 0, p.stderr)
            page = Page()
            page.feed(read_text(os.path.join(b, "report.html")))
            diffs = {(r["run"], r["setting"]): (r["there"], r["here"])
                     for r in dict_rows(page.tables["changes-settings"])}
            self.assertEqual(diffs[("vgg16", "width")], ("0.125", "0.25"))
            self.assertEqual(diffs[("vgg16", "steps")], ("200", "400"))

    def test_compare_bad_input(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "findings.json")
            with open(bad, "w") as f:
                f.write('{"rows": 3}')
            p = run_main(os.path.join(self.fx, "vgg16"), "--out", os.path.join(tmp, "out"), "--compare", bad)
            self.assertEqual(p.returncode, 2)
            self.assertIn(bad, p.stderr)
            self.assertIn("not a findings.json", p.stderr)
            p = run_main(os.path.join(self.fx, "vgg16"), "--out", os.path.join(tmp, "out"), "--compare", tmp + "/none")
            self.assertEqual(p.returncode, 2)
            self.assertIn("missing", p.stderr)


def scaled(a, mean):
    """A series rescaled to the given finite mean (its shape over training kept)."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.mean(a) * mean


class Criteria(unittest.TestCase):
    """Each criterion at its edges, on the holding fixture changed in memory."""

    def test_statistics(self):
        self.assertAlmostEqual(fnd.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]), -1.0)
        self.assertAlmostEqual(fnd.spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]), 0.9)
        # Ties take their average rank: y's ranks 1.5 1.5 3 4 5, whose Pearson correlation with
        # 1..5 is 9.5 / sqrt(10 * 9.5).
        self.assertAlmostEqual(fnd.spearman([1, 2, 3, 4, 5], [2, 2, 5, 7, 9]), 9.5 / math.sqrt(95))
        self.assertTrue(math.isnan(fnd.spearman([1, 2, 3], [4, 4, 4])))
        # rho <= -0.9 over the 120 orders of 5 values: the reverse order and its 4 adjacent swaps.
        self.assertAlmostEqual(fnd.spearman_exact_p([1, 2, 3, 4, 5], [5, 4, 3, 1, 2], "less"), 5 / 120)
        self.assertAlmostEqual(fnd.spearman_exact_p([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], "less"), 1 / 120)
        self.assertAlmostEqual(fnd.spearman_exact_p([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "greater"), 1 / 120)
        self.assertAlmostEqual(fnd.spearman_exact_p([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "less"), 1.0)
        # The paper's own Table IV(a) random drops against depth (quoted in T3's criterion).
        rho = fnd.spearman([1, 2, 3, 4, 5], [0.0272, 0.0292, 0.0522, 0.0149, 0.1988])
        p = fnd.spearman_exact_p([1, 2, 3, 4, 5], [0.0272, 0.0292, 0.0522, 0.0149, 0.1988], "greater")
        self.assertAlmostEqual(rho, 0.4)
        self.assertAlmostEqual(p, 31 / 120)
        self.assertIn("rho = +0.40, p = 0.26", finding("T3").criterion)
        # One random trial against draws of mean 2, std 0.5, 5 draws: t = (2 - 0.1) / (0.5 sqrt(1 + 1/5)),
        # 4 degrees of freedom.
        p = fnd.random_vs_one({"draws": 5, "drop_mean": 0.02, "drop_std": 0.005}, 0.001)
        self.assertAlmostEqual(p, float(__import__("scipy").stats.t.sf(0.019 / (0.005 * math.sqrt(1.2)), 4)))
        self.assertTrue(math.isnan(fnd.random_vs_one({"draws": 1, "drop_mean": 0.02, "drop_std": 0.0}, 0.0)))

    def test_D_per_weight_is_the_metrics_csv_column(self):
        """The report computes no D per weight of its own: it reads fevo's, metrics.csv's column."""
        self.assertEqual(report_data.weights_per_filter([4, 2, 3, 3]), 18)
        vgg, = fixture_runs("vgg16")
        name = vgg.selected[1]
        column = [float(r["D_per_weight"]) for r in read_csv(os.path.join(Fixture.get(), "vgg16", "metrics.csv"))
                  if r["layer"] == name]
        np.testing.assert_array_equal(vgg.series(name, "Dw"), column)
        np.testing.assert_allclose(vgg.series(name, "Dw"), vgg.metrics[name].D / 144, rtol=1e-15)  # [16, 16, 3, 3]
        st = fnd.layer_stats(vgg)[1]
        self.assertAlmostEqual(st.mean["Dw"], st.mean["D"] / 144)
        self.assertFalse(hasattr(report_data, "D_per_weight"))

    def test_F1_order_by_chance_or_not_through_training(self):
        vgg, = fixture_runs("vgg16")
        n = vgg.selected
        # conv4 and conv5 swapped: one adjacent pair out of order, rho = -0.9, p = 5/120: holds.
        m = vgg.metrics
        m[n[3]].D, m[n[4]].D = m[n[4]].D, m[n[3]].D
        row = by_id(fnd.check_all([vgg]))["F1-VGG16-D"]
        self.assertEqual(row.status, fnd.HOLDS, row.numbers)
        self.assertIn("rho(depth, mean D) = -0.90, exact one-sided p = 0.042", row.numbers)
        # conv2 and conv4 swapped as well: rho = -0.6, p > 0.05.
        m[n[1]].D, m[n[4]].D = m[n[4]].D, m[n[1]].D
        row = by_id(fnd.check_all([vgg]))["F1-VGG16-D"]
        self.assertEqual(row.status, fnd.NOT_HOLD)
        self.assertIn("arise by chance with p = ", row.why)
        # Ordered over the run, but conv1 the least changed layer in the first third of the records.
        vgg, = fixture_runs("vgg16")
        d = vgg.metrics[vgg.selected[0]].D
        d[:len(fnd.split_thirds(d)[0])] *= 1e-4
        row = by_id(fnd.check_all([vgg]))["F1-VGG16-D"]
        self.assertEqual(row.status, fnd.NOT_HOLD)
        self.assertIn('not "through the entire training"', row.why)
        self.assertIn("the early third", row.why)

    def test_F1_D_rises_with_size_but_holds_per_weight(self):
        """mean D grows with C x H x W while the change per weight falls with depth: the why says so."""
        vgg, = fixture_runs("vgg16")
        for i, name in enumerate(vgg.selected):
            c = (3, 16, 64, 256, 1024)[i]
            vgg.shapes[name] = [8, c, 3, 3]
            vgg.metrics[name].D = scaled(vgg.metrics[name].D, 1e-6 * 0.5 ** i * c * 9)
            vgg.metrics[name].Dw = vgg.metrics[name].D / (c * 9)
        rows = by_id(fnd.check_all([vgg]))
        self.assertEqual(rows["F1-VGG16-D"].status, fnd.NOT_HOLD)
        self.assertEqual(rows["F1-VGG16-Dw"].status, fnd.HOLDS)
        self.assertIn("mean D rises with depth", rows["F1-VGG16-D"].why)
        self.assertIn("Spearman rho(C x H x W, mean D) = +1.00", rows["F1-VGG16-D"].why)
        self.assertIn("the paper's finding holds per weight", rows["F1-VGG16-D"].why)

    def test_no_D_per_weight_column(self):
        """A run recorded before metrics.csv had D_per_weight: its D-per-weight rows cannot be checked."""
        vgg, res = fixture_runs("vgg16", "resnet50")
        for s in vgg.metrics.values():
            s.Dw = None
        rows = by_id(fnd.check_all([vgg, res]))
        for rid in ("F1-VGG16-Dw", "F2-both-Dw"):
            self.assertEqual(rows[rid].status, fnd.CANNOT)
            self.assertIn("has no D_per_weight column", rows[rid].numbers)
        self.assertEqual(rows["F1-VGG16-D"].status, fnd.HOLDS)

    def test_F2_as_strong_in_resnet(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        ctx = fnd.Context([vgg, res])
        self.assertEqual({r.status for r in fnd.check_weaker_in_resnet(ctx, finding("F2"))}, {fnd.HOLDS})
        ctx.resnet = fixture_runs("vgg16")[0]  # a second VGG-16 as "ResNet-50": as strong, as wide
        rows = fnd.check_weaker_in_resnet(ctx, finding("F2"))
        self.assertEqual({r.status for r in rows}, {fnd.NOT_HOLD})
        self.assertIn("as strongly ordered", rows[0].why)

    def test_F3_least_on_average_only(self):
        _, res = fixture_runs("vgg16", "resnet50")
        lowest = np.min([res.metrics[n].D for n in res.selected[:4]], axis=0)
        d5 = res.metrics[res.selected[4]].D
        m = (len(d5) - 1) // 2  # conv5 far below the rest in fewer than half of the records
        d5[:m] = lowest[:m] * 1e-3
        d5[m:] = lowest[m:] * 1.05  # and just above the least of the others in the rest
        ctx = fnd.Context([res])
        rows = by_id(fnd.check_top_least(ctx, finding("F3")))
        row = rows["F3-ResNet50-D"]
        self.assertEqual(row.status, fnd.NOT_HOLD, row.numbers)
        self.assertIn("the least changed layer in only", row.why)

    def test_F4_F6_constant_Z(self):
        _, res = fixture_runs("vgg16", "resnet50")
        res.metrics[res.selected[0]].Z[:] = 0.0
        rows = by_id(fnd.check_all([res]))
        self.assertEqual(rows["F4-ResNet50-Z"].status, fnd.NOT_HOLD)
        self.assertIn("conv1's Z is constant (0)", rows["F4-ResNet50-Z"].why)
        self.assertEqual(rows["F6-ResNet50-SZ"].status, fnd.NOT_HOLD)
        self.assertIn("conv1's Z is constant (0) over its records", rows["F6-ResNet50-SZ"].why)

    def test_F5_S_near_1_in_one_layer(self):
        vgg, = fixture_runs("vgg16")
        s = vgg.metrics[vgg.selected[2]].S
        s[: len(s) // 5 + 1] = 0.95  # just over a fifth of conv3's records: more than 10 %
        row = by_id(fnd.check_all([vgg]))["F5-VGG16-S"]
        self.assertEqual(row.status, fnd.NOT_HOLD)
        self.assertIn("conv3's S is 0.9 or more", row.why)
        vgg, = fixture_runs("vgg16")
        vgg.metrics[vgg.selected[2]].S[0] = 0.95  # one record of 20: 5 %, within the bound
        self.assertEqual(by_id(fnd.check_all([vgg]))["F5-VGG16-S"].status, fnd.HOLDS)

    def test_F8_larger_share_by_chance(self):
        vgg, = fixture_runs("vgg16")
        for n in vgg.selected:
            vgg.filters[n].frac_S_zero[:] = 0.0
        vgg.filters[vgg.selected[4]].frac_S_zero[0] = 1.0  # 1 of 32 in conv5, none below
        rows = by_id(fnd.check_all([vgg]))
        self.assertEqual(rows["F7-VGG16-filters"].status, fnd.HOLDS)
        self.assertEqual(rows["F8-VGG16-filters"].status, fnd.NOT_HOLD)
        self.assertIn("arises by chance", rows["F8-VGG16-filters"].why)

    def test_table4_missing_selection_or_draws(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        vgg.table4 = [r for r in vgg.table4 if r["criterion"] != "most_Z"]
        for r in res.table4:
            if r["criterion"] == "random":
                r["draws"] = 1
        rows = by_id(fnd.check_all([vgg, res]))
        for rid in ("T1-VGG16-most_Z", "T2-VGG16-most_Z"):
            self.assertEqual(rows[rid].status, fnd.CANNOT)
            self.assertIn("no most_Z", rows[rid].numbers)
        self.assertEqual(rows["T1-VGG16-least_D"].status, fnd.HOLDS)
        self.assertEqual(rows["T2-VGG16-least_D"].status, fnd.HOLDS)
        for rid in ("T4-ResNet50-random", "T5-both-random"):
            self.assertEqual(rows[rid].status, fnd.CANNOT)
            self.assertIn("fewer than 2 random draws", rows[rid].numbers)

    def test_T1_T2_T4_edges(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        by = {(r["layer"], r["criterion"]): r for r in vgg.table4}
        by[(vgg.selected[0], "least_D")]["drop_mean"] = 0.006  # just over 0.5 points
        for n in vgg.selected[:3]:  # random no clearer than its spread in three layers: 2 of 5 left
            by[(n, "random")]["drop_std"] = 0.05
        for r in res.table4:
            if r["criterion"] == "random" and r["layer"] == res.selected[0]:
                r["drop_std"] = 0.05  # conv1 largest, but within its draws' spread
        rows = by_id(fnd.check_all([vgg, res]))
        self.assertEqual(rows["T1-VGG16-least_D"].status, fnd.NOT_HOLD)
        self.assertIn("conv1 (0.600 points)", rows["T1-VGG16-least_D"].why)
        self.assertEqual(rows["T1-VGG16-most_Z"].status, fnd.HOLDS)
        self.assertEqual(rows["T2-VGG16-least_D"].status, fnd.NOT_HOLD)
        self.assertIn("in only 2 of 5 layers", rows["T2-VGG16-least_D"].why)
        self.assertEqual(rows["T4-ResNet50-random"].status, fnd.NOT_HOLD)
        self.assertIn("but not clearly more than", rows["T4-ResNet50-random"].why)

    def test_cannot_be_checked_without_the_models(self):
        res, ana = fixture_runs("resnet50", "analyze")
        rows = fnd.check_all([res, ana])
        for r in rows:
            with self.subTest(row=r.id):
                if r.model in ("VGG-16", "both"):
                    self.assertEqual(r.status, fnd.CANNOT)
                    self.assertIn("no VGG-16 paper-driver run", r.numbers)
                else:
                    self.assertEqual(r.status, fnd.HOLDS)
        rows = fnd.check_all(fixture_runs("analyze"))
        self.assertEqual({r.status for r in rows}, {fnd.CANNOT})


class RelativeChange(unittest.TestCase):
    """Agrawal et al.'s relative weight change (A1) and the run placed between the two papers."""

    def test_A1_order_by_chance(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        wc = vgg.weight_change
        n = vgg.selected
        # conv4 and conv5 swapped: rho = +0.9, exact p = 5/120: holds.
        wc[n[3]].relative, wc[n[4]].relative = wc[n[4]].relative, wc[n[3]].relative
        row = by_id(fnd.check_all([vgg, res]))["A1-VGG16-R"]
        self.assertEqual(row.status, fnd.HOLDS, row.numbers)
        self.assertIn("rho(depth, mean relative change) = +0.90, exact one-sided p = 0.042", row.numbers)
        # conv2 and conv5 swapped as well (depth order 1 4 3 5 2): rho = +0.3, p > 0.05.
        wc[n[1]].relative, wc[n[4]].relative = wc[n[4]].relative, wc[n[1]].relative
        row = by_id(fnd.check_all([vgg, res]))["A1-VGG16-R"]
        self.assertEqual(row.status, fnd.NOT_HOLD)
        self.assertIn("mean relative change rises with depth on the whole (rho = +0.30), but not steadily", row.why)
        self.assertIn("arise by chance with p = ", row.why)
        self.assertIn("mean absolute change of a weight over the mean absolute weight", row.why)

    def test_A1_no_order_why(self):
        """The change per weight and the weights fall together: the relative change keeps no order
        over depth, and the why says so."""
        vgg, = fixture_runs("vgg16")
        # The fixture's mean |w| halves with each Table III layer; relative changes with rho = +0.1.
        for i, name in enumerate(vgg.selected):
            w = vgg.weight_change[name]
            w.relative = np.full_like(w.relative, (1.0, 1.2, 0.9, 1.1, 1.05)[i] / 100)
            w.L1_change = w.relative * w.L1_prev
        row = by_id(fnd.check_all([vgg]))["A1-VGG16-R"]
        self.assertEqual(row.status, fnd.NOT_HOLD)
        self.assertIn("rho(depth, mean relative change) = +0.10", row.numbers)
        self.assertIn("the first falls with depth (rho = -1.00;", row.why)
        self.assertIn("the second falls with depth (rho = -1.00;", row.why)
        self.assertIn("Both fall with depth at a similar pace, so their ratio keeps no clear order.", row.why)
        # rho exactly 0 (ranks 2 5 3 1 4): "has no order over depth".
        for i, name in enumerate(vgg.selected):
            w = vgg.weight_change[name]
            w.relative = np.full_like(w.relative, (2.0, 5.0, 3.0, 1.0, 4.0)[i] / 100)
        row = by_id(fnd.check_all([vgg]))["A1-VGG16-R"]
        self.assertIn("mean relative change has no order over depth (rho = +0.00): largest in conv2, smallest in "
                      "conv4; in Agrawal et al. it rises.", row.why)
        self.assertIn("has no order over depth (rho = +0.00)", dict(fnd.between([vgg]))["VGG-16"])

    def test_A1_without_weight_change(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        vgg.weight_change = None
        rows = by_id(fnd.check_all([vgg, res]))
        self.assertEqual(rows["A1-VGG16-R"].status, fnd.CANNOT)
        self.assertIn("vgg16 has no weight_change.csv", rows["A1-VGG16-R"].numbers)
        self.assertEqual(rows["A1-ResNet50-R"].status, fnd.HOLDS)
        self.assertEqual(rows["F1-VGG16-D"].status, fnd.HOLDS)  # the rest is read as before
        text = dict(fnd.between([vgg, res]))["VGG-16"]
        self.assertIn("eq. 1's D falls with depth (rho = -1.00, exact one-sided p = 0.008), as this paper finds (F1)",
                      text)
        self.assertIn("Agrawal et al.'s side cannot be read: vgg16 has no weight_change.csv", text)
        # A relative change that is not finite in a layer: cannot be checked, with the reason.
        vgg, = fixture_runs("vgg16")
        vgg.weight_change[vgg.selected[2]].relative[:] = np.nan
        row = by_id(fnd.check_all([vgg]))["A1-VGG16-R"]
        self.assertEqual(row.status, fnd.CANNOT)
        self.assertIn("mean relative change of a layer is not finite", row.numbers)

    def test_between_the_papers(self):
        """Which paper the run sides with, built from the two trends."""
        vgg, res = fixture_runs("vgg16", "resnet50")
        text = dict(fnd.between([vgg, res]))
        self.assertEqual(list(text), ["VGG-16", "ResNet-50"])
        self.assertIn("the relative weight change rises with depth (rho = +1.00, exact one-sided p = 0.008): "
                      "Agrawal et al.'s finding holds (A1)", text["VGG-16"])
        self.assertIn("Both hold", text["VGG-16"])
        self.assertIn("this paper finds a stratification weaker than VGG-16's (F2)", text["ResNet-50"])
        # mean D rising with the filters' size, falling per weight: the run sides with Agrawal et al.
        for i, name in enumerate(vgg.selected):
            c = (3, 16, 64, 256, 1024)[i]
            vgg.shapes[name] = [8, c, 3, 3]
            vgg.metrics[name].D = scaled(vgg.metrics[name].D, 1e-6 * 0.5 ** i * c * 9)
            vgg.metrics[name].Dw = vgg.metrics[name].D / (c * 9)
        t = dict(fnd.between([vgg]))["VGG-16"]
        self.assertIn("eq. 1's D rises with depth (rho = +1.00, exact one-sided p = 0.008), against this paper's "
                      "finding that it falls (F1)", t)
        self.assertIn("The run sides with Agrawal et al. Per weight, lower layers do change more", t)
        # The relative change falling as well: neither.
        fail_vgg, = fixture_runs("vgg16", findings="fail")
        t = dict(fnd.between([fail_vgg]))["VGG-16"]
        self.assertIn("Neither finding holds in this run.", t)
        self.assertNotIn("Per weight", t)
        # D falling, the relative change falling: the run sides with this paper.
        vgg, = fixture_runs("vgg16")
        for name in vgg.selected:
            vgg.weight_change[name].relative = fail_vgg.weight_change[name].relative
        t = dict(fnd.between([vgg]))["VGG-16"]
        self.assertIn("Agrawal et al.'s finding does not hold (A1)", t)
        self.assertIn("The run sides with this paper.", t)
        self.assertEqual(fnd.between(fixture_runs("analyze")), [])

    def test_run_without_weight_change_renders(self):
        """A run of an older driver (no weight_change.csv) still gives the whole page; the rows and
        panels of the relative change say the data is absent."""
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, os.path.join(HERE, "make_fixture.py"), tmp, "--seed", str(SEED),
                            "--no-weight-change"], check=True)
            self.assertFalse(os.path.exists(os.path.join(tmp, "vgg16", "weight_change.csv")))
            out = os.path.join(tmp, "out")
            p = run_tool(os.path.join(tmp, "vgg16"), os.path.join(tmp, "resnet50"), "--out", out)
            self.assertEqual(p.returncode, 0, p.stderr)
            html = read_text(os.path.join(out, "report.html"))
            page = Page()
            page.feed(html)
            table = dict_rows(page.tables["findings"])
            a1 = [r for r in table if r[""] == "A1"]
            self.assertEqual([r["verdict"] for r in a1], [fnd.CANNOT, fnd.CANNOT])
            self.assertIn("vgg16 has no weight_change.csv", a1[0]["this run"])
            self.assertIn("resnet50 has no weight_change.csv", a1[1]["this run"])
            self.assertEqual({r["verdict"] for r in table if r[""] != "A1"}, {fnd.HOLDS})
            self.assertIn("Agrawal et al.&#x27;s side cannot be read", html)
            # No relative change to draw: Fig. 2 keeps D, D per weight, S and Z; the layer table says so.
            a = mpimg.imread(os.path.join(out, "figures", "fig2.png"))
            self.assertEqual((a.shape[1], a.shape[0]), figs.fig2_size_px(2, 4))
            self.assertEqual({r["mean relative change"] for r in dict_rows(page.tables["layers-vgg16"])}, {"\u2014"})
            self.assertNotIn("weight_change.csv", " ".join(page.hrefs))
            data = load_json(os.path.join(out, "findings.json"))
            self.assertIn("cannot be read", data["between"][0]["text"])
            # One run with it, one without: the relative-change row is drawn, the other panel says why.
            shutil.copy(os.path.join(Fixture.get(), "vgg16", "weight_change.csv"), os.path.join(tmp, "vgg16"))
            runs = report_data.load_runs([os.path.join(tmp, "vgg16"), os.path.join(tmp, "resnet50")])
            fig, axes, size = figs.fig2_axes(runs)
            try:
                self.assertEqual(size, figs.fig2_size_px(2, 5))
                self.assertEqual(len(axes[("R", "vgg16")].lines), 5 + 2)
                self.assertIn("no weight_change.csv", axes[("R", "resnet50")].texts[0].get_text())
            finally:
                import matplotlib.pyplot as plt
                plt.close(fig)


class GrayscaleFirstLayer(unittest.TestCase):
    """One input channel (e.g. Fashion-MNIST): Fig. 1 in grayscale, Fig. 3 with a grayscale input."""

    def test_fig1_and_fig3(self):
        vgg, = fixture_runs("vgg16")
        vgg.first_layer = vgg.first_layer[:, :, :1].copy()
        with tempfile.TemporaryDirectory() as tmp:
            from make_fixture import png_bytes
            gray_input = os.path.join(tmp, "input.png")
            with open(gray_input, "wb") as f:
                f.write(png_bytes(np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) % 251))
            vgg.fig3_input = gray_input
            for draw in (figs.fig1, figs.fig3):
                png, size = draw(vgg, tmp, draw.__name__)
                a = mpimg.imread(png)
                self.assertEqual((a.shape[1], a.shape[0]), size)
                self.assertGreater(float(a[..., :3].std()), 0.0)


class AnalyzeOnly(unittest.TestCase):
    def test_fig2_and_fig4_only(self):
        fx = Fixture.get()
        out = os.path.join(fx, "out_analyze")
        p = run_tool(os.path.join(fx, "analyze"), "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "figures"))),
                         sorted(f"{n}.{e}" for n in ("fig2", "fig4") for e in ("png", "svg")))
        a = mpimg.imread(os.path.join(out, "figures", "fig2.png"))
        self.assertEqual((a.shape[1], a.shape[0]), figs.fig2_size_px(1, 4))  # D, D per weight, S, Z
        html = read_text(os.path.join(out, "report.html"))
        page = Page()
        page.feed(html)
        self.assertEqual({r["verdict"] for r in dict_rows(page.tables["findings"])}, {fnd.CANNOT})
        self.assertNotIn("has no <code>D_per_weight</code>", html)
        self.assertNotIn("table4-analyze", page.tables)
        self.assertEqual(len(page.tables["layers-analyze"]) - 1, 5)
        self.assertEqual(report_data.spread_layers(list("abcdefg")), ["a", "c", "d", "e", "g"])
        self.assertEqual(report_data.spread_layers(list("abc")), ["a", "b", "c"])


class BeforeDPerWeight(unittest.TestCase):
    """A run recorded before metrics.csv had its D_per_weight column is read all the same."""

    def test_older_metrics_csv(self):
        fx = Fixture.get()
        with tempfile.TemporaryDirectory() as tmp:
            d = os.path.join(tmp, "analyze")
            shutil.copytree(os.path.join(fx, "analyze"), d)
            path = os.path.join(d, "metrics.csv")
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            self.assertEqual(rows[0][-1], "D_per_weight")
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(r[:-1] for r in rows)
            run, = report_data.load_runs([d])
            self.assertFalse(run.has_dw())
            self.assertIsNone(run.series(run.selected[0], "Dw"))
            out = os.path.join(tmp, "out")
            p = run_tool(d, "--out", out)
            self.assertEqual(p.returncode, 0, p.stderr)
            a = mpimg.imread(os.path.join(out, "figures", "fig2.png"))
            self.assertEqual((a.shape[1], a.shape[0]), figs.fig2_size_px(1, 3))  # D, S, Z
            html = read_text(os.path.join(out, "report.html"))
            self.assertIn("analyze: metrics.csv has no <code>D_per_weight</code> column", html)
            page = Page()
            page.feed(html)
            self.assertEqual({r["mean D per weight"] for r in dict_rows(page.tables["layers-analyze"])}, {"\u2014"})
            # A header of neither version is refused, naming both the file and what it expected.
            rows[0][-1] = "D_per_filter"
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(rows)
            p = run_tool(d, "--out", os.path.join(tmp, "out2"))
            self.assertEqual(p.returncode, 2)
            self.assertIn("metrics.csv: header is", p.stderr)


class BadInputs(unittest.TestCase):
    """Each case: exit status 2 and one line on stderr naming the file and the problem."""

    def case(self, mutate, expect_file, expect_text):
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "vgg16")
            shutil.copytree(os.path.join(Fixture.get(), "vgg16"), run)
            mutate(run)
            p = run_main(run, "--out", os.path.join(tmp, "out"))
            self.assertEqual(p.returncode, 2, p.stderr)
            lines = p.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertIn(os.path.join(run, expect_file) if expect_file else run, lines[0])
            self.assertIn(expect_text, lines[0])
            self.assertFalse(os.path.exists(os.path.join(tmp, "out", "report.html")))

    @staticmethod
    def write(path, text):
        with open(path, "w") as f:
            f.write(text)

    def test_missing_directory(self):
        self.case(lambda r: shutil.rmtree(r), "", "not a directory")

    def test_missing_metrics(self):
        self.case(lambda r: os.remove(os.path.join(r, "metrics.csv")), "metrics.csv", "missing")

    def test_bad_header(self):
        self.case(lambda r: self.write(os.path.join(r, "filter_summary.csv"), "layer,filter\nx,1\n"),
                  "filter_summary.csv", "header")

    def test_bad_number(self):
        def mutate(r):
            p = os.path.join(r, "metrics.csv")
            lines = read_text(p).splitlines()
            f = lines[3].split(",")
            f[3] = "abc"
            lines[3] = ",".join(f)
            self.write(p, "\n".join(lines) + "\n")
        self.case(mutate, "metrics.csv", "line 4: column 'D' is not a number")

    def test_bad_json(self):
        self.case(lambda r: self.write(os.path.join(r, "config.json"), "{\"model\": "), "config.json", "JSON")

    def test_unknown_table3_layer(self):
        def mutate(r):
            p = os.path.join(r, "config.json")
            cfg = load_json((p))
            cfg["table3"][2] = "block9/conv9_9"
            self.write(p, json.dumps(cfg))
        self.case(mutate, "config.json", "block9/conv9_9")

    def test_bad_layer_shape(self):
        def mutate(r):
            p = os.path.join(r, "config.json")
            cfg = load_json(p)
            cfg["conv_layers"][1]["shape"] = [8, 0, 3, 3]
            self.write(p, json.dumps(cfg))
        self.case(mutate, "config.json", "layer 'block1/conv1_2' has shape [8, 0, 3, 3]")

    def test_missing_table4(self):
        self.case(lambda r: os.remove(os.path.join(r, "table4.csv")), "table4.csv", "missing")

    def test_bad_first_layer(self):
        self.case(lambda r: np.save(os.path.join(r, "first_layer.npy"), np.zeros((2, 3), np.float32)),
                  "first_layer.npy", "dimensions")

    def test_truncated_npy(self):
        def mutate(r):
            p = os.path.join(r, "first_layer_steps.npy")
            with open(p, "rb") as f:
                data = f.read()
            with open(p, "wb") as f:
                f.write(data[:len(data) - 4])
        self.case(mutate, "first_layer_steps.npy", "not a valid .npy")

    def edit_weight_change(self, line, field, value):
        """A mutation of weight_change.csv: `field` (a column index) of data line `line` set."""
        def mutate(r):
            p = os.path.join(r, "weight_change.csv")
            lines = read_text(p).splitlines()
            f = lines[line].split(",")
            f[field] = value
            lines[line] = ",".join(f)
            self.write(p, "\n".join(lines) + "\n")
        return mutate

    def test_bad_weight_change(self):
        self.case(lambda r: self.write(os.path.join(r, "weight_change.csv"), "step,layer,L1_change\n"),
                  "weight_change.csv", "header")
        self.case(self.edit_weight_change(2, 3, "x"), "weight_change.csv", "line 3: column 'L1_change' is not a number")
        self.case(self.edit_weight_change(2, 4, "-1.5"), "weight_change.csv", "line 3: L1_prev is negative")
        self.case(self.edit_weight_change(2, 2, "block9/conv9_9"), "weight_change.csv",
                  "line 3: layer 'block9/conv9_9' has no rows in metrics.csv")
        self.case(self.edit_weight_change(1, 1, "15"), "weight_change.csv", "layer 'block1/conv1_1' has 20 records")

    def test_weight_change_missing_a_layer(self):
        def mutate(r):
            p = os.path.join(r, "weight_change.csv")
            lines = read_text(p).splitlines()
            self.write(p, "\n".join(l for l in lines if ",block3/conv3_2," not in l) + "\n")
        self.case(mutate, "weight_change.csv", "has no rows for layer 'block3/conv3_2'")

    def test_missing_fig3_map(self):
        def mutate(r):
            first = read_csv(os.path.join(r, "fig3", "index.csv"))[0]["file"]
            os.remove(os.path.join(r, "fig3", first))
        self.case(mutate, "fig3", "missing")


def tearDownModule():
    for d in Fixture.dirs.values():
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
