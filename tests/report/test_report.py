#!/usr/bin/env python3
"""Tests of tools/fevo_report.py on the synthetic runs of make_fixture.py (unittest, no pytest):

  * every figure is written as PNG and SVG; each PNG decodes, has the size of its layout and is
    not one colour; each SVG parses as XML;
  * report.html is self-contained (every image a PNG data URI equal to the file, no script, no
    network reference) and links files that exist;
  * the numbers of its tables equal the CSV files (Table IV, per-layer statistics, settings);
  * the observations on the fixture (built so that all four hold), and each check turning to
    "does not hold" / "cannot be checked" when the data say so;
  * a `fevo analyze` directory alone: Fig. 2 and Fig. 4, five layers spread over depth;
  * missing and malformed inputs: exit status 2 and one line naming the file.

    python3 tests/report/test_report.py [-v]
"""

import base64
import csv
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

import report_data  # noqa: E402
import report_figures as figs  # noqa: E402
import report_observations as obs  # noqa: E402


class Page(HTMLParser):
    """Tables (by id: list of rows of cell texts, header row first), img srcs, hrefs, scripts."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.hrefs, self.srcs, self.scripts = {}, [], [], [], 0
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"anon{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if k in a:
                self.srcs.append(a[k])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
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
    dir = None

    @classmethod
    def get(cls):
        if cls.dir is None:
            cls.dir = tempfile.mkdtemp(prefix="fevo_report_test_")
            subprocess.run([sys.executable, os.path.join(HERE, "make_fixture.py"), cls.dir], check=True)
        return cls.dir


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
        for m in ("vgg16", "resnet50", "analyze"):
            for k in "DSZ":
                exp[f"fig2_{m}_{k}"] = figs.FIG2_SIZE_PX
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

    def test_observations_hold_on_fixture(self):
        table = self.page.tables["observations"]
        self.assertEqual([r[2] for r in table[1:]], ["holds"] * 4)
        # The numbers quoted: rho of VGG-16 is -1 (means sqrt(10) apart).
        self.assertIn("Spearman rho(depth, mean D) = -1.00", table[1][3])


def fixture_runs(*models):
    return report_data.load_runs([os.path.join(Fixture.get(), m) for m in models])


class Observations(unittest.TestCase):
    def test_spearman(self):
        self.assertAlmostEqual(obs.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]), -1.0)
        self.assertAlmostEqual(obs.spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]), 0.9)
        # Ties take their average rank: ranks of y are 1.5 1.5 3 4 5.
        self.assertEqual(list(obs.ranks([2, 2, 5, 7, 9])), [1.5, 1.5, 3, 4, 5])
        self.assertTrue(math.isnan(obs.spearman([1, 2, 3], [4, 4, 4])))
        # p of rho <= -0.9 over the 120 orders of 5 values: the reverse order and its 4 adjacent swaps.
        self.assertAlmostEqual(obs.spearman_p_below([1, 2, 3, 4, 5], [5, 4, 3, 1, 2]), 5 / 120)
        self.assertAlmostEqual(obs.spearman_p_below([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]), 1 / 120)

    def test_1_does_not_hold_when_means_rise(self):
        vgg, = fixture_runs("vgg16")
        names = vgg.selected
        ds = [vgg.metrics[n].D for n in names]
        for n, d in zip(names, reversed(ds)):
            vgg.metrics[n].D = d
        v = obs.check_1(vgg)
        self.assertEqual(v.status, obs.NOT_HOLD)
        self.assertIn("rho(depth, mean D) = 1.00", v.text)

    def test_2_does_not_hold_with_models_swapped(self):
        vgg, res = fixture_runs("vgg16", "resnet50")
        self.assertEqual(obs.check_2(vgg, res).status, obs.HOLDS)
        self.assertEqual(obs.check_2(res, vgg).status, obs.NOT_HOLD)

    def test_3_does_not_hold_without_barely_changing_filters(self):
        vgg, = fixture_runs("vgg16")
        for n in vgg.selected:
            vgg.filters[n].frac_S_zero[:] = 0.5
        v = obs.check_3(vgg)
        self.assertEqual(v.status, obs.NOT_HOLD)
        self.assertIn("no filter", v.text)
        # Only in the lower layers: exist, but not more in the upper ones.
        vgg.filters[vgg.selected[0]].frac_S_zero[:2] = 1.0
        self.assertEqual(obs.check_3(vgg).status, obs.NOT_HOLD)

    def test_4_does_not_hold_when_gap_within_spread(self):
        vgg, = fixture_runs("vgg16")
        for r in vgg.table4:
            if r["criterion"] == "random":
                r["drop_std"] = 0.05  # larger than the gap of 0.02
        v = obs.check_4(vgg)
        self.assertEqual(v.status, obs.NOT_HOLD)
        self.assertIn("gap > std in 0 of 5", v.text)

    def test_cannot_be_checked_without_the_models(self):
        res, ana = fixture_runs("resnet50", "analyze")
        verdicts = obs.check_all([res, ana])
        self.assertEqual([v.status for v in verdicts], [obs.CANNOT] * 4)


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
                         sorted(f"{n}.{e}" for n in ("fig2_analyze_D", "fig2_analyze_S", "fig2_analyze_Z", "fig4")
                                for e in ("png", "svg")))
        page = Page()
        page.feed(read_text(os.path.join(out, "report.html")))
        self.assertEqual([r[2] for r in page.tables["observations"][1:]], [obs.CANNOT] * 4)
        self.assertNotIn("table4-analyze", page.tables)
        self.assertEqual(len(page.tables["layers-analyze"]) - 1, 5)
        self.assertEqual(report_data.spread_layers(list("abcdefg")), ["a", "c", "d", "e", "g"])
        self.assertEqual(report_data.spread_layers(list("abc")), ["a", "b", "c"])


class BadInputs(unittest.TestCase):
    """Each case: exit status 2 and one line on stderr naming the file and the problem."""

    def case(self, mutate, expect_file, expect_text):
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "vgg16")
            shutil.copytree(os.path.join(Fixture.get(), "vgg16"), run)
            mutate(run)
            p = run_tool(run, "--out", os.path.join(tmp, "out"))
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

    def test_missing_fig3_map(self):
        def mutate(r):
            first = read_csv(os.path.join(r, "fig3", "index.csv"))[0]["file"]
            os.remove(os.path.join(r, "fig3", first))
        self.case(mutate, "fig3", "missing")


def tearDownModule():
    if Fixture.dir:
        shutil.rmtree(Fixture.dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
