"""Reading and validating the inputs of fevo_report.py.

Two kinds of directory are read:
  * a driver run (config.json present): every file of the run directory contract that the report
    uses must be there and well formed (config.json, summary.json, train_log.csv, metrics.csv,
    filter_summary.csv, first_layer.npy, first_layer_steps.npy, fig3/index.csv and its PNGs,
    table4.csv);
  * a `fevo analyze --out DIR` directory: metrics.csv and filter_summary.csv only.
In either, weight_change.csv (the relative weight change of Agrawal et al., which the paper driver
writes) is read when it is there and must then be well formed; a directory without it (an older
run, `fevo analyze` output) is read all the same, and the report says the data is absent.
Any problem raises InputError(path, problem); the command turns it into one line and exit 2.

It also names the quantities a layer's series is read as (SERIES). D per weight (D / (C H W)) is
not computed here: it is fevo's own layer_metrics::D_per_weight, the D_per_weight column of
metrics.csv (a run recorded before fevo wrote that column has none, and the report says so).
"""

import csv
import json
import math
import os
import re

import numpy as np

METRICS_HEADER = ["step_prev", "step", "layer", "D", "S", "Z", "n_filters", "nonfinite", "D_per_weight"]
# metrics.csv of runs recorded before fevo wrote D per weight: read all the same, without it.
METRICS_HEADER_V1 = METRICS_HEADER[:-1]
SUMMARY_HEADER = ["layer", "filter", "steps", "D_mean", "D_min", "D_max", "frac_S_zero", "frac_Z_one"]
TRAIN_LOG_HEADER = ["step", "epoch", "loss", "accuracy", "lr", "time_s"]
TABLE4_HEADER = ["layer", "filters", "zeroed", "criterion", "draws", "baseline_accuracy",
                 "accuracy_mean", "accuracy_std", "drop_mean", "drop_std"]
FIG3_HEADER = ["step", "filter", "file"]
WEIGHT_CHANGE_HEADER = ["step_prev", "step", "layer", "L1_change", "L1_prev", "relative_change"]
WEIGHT_CHANGE_FILE = "weight_change.csv"
TABLE4_CRITERIA = ("least_D", "most_Z", "random")
CONFIG_REQUIRED = ("model", "table3", "conv_layers", "lr_halve_steps", "steps", "tau")
# Number of layers drawn for a directory without Table III information (fevo analyze output).
SPREAD_LAYERS = 5


def weights_per_filter(shape):
    """The number of weights of one filter of a conv layer of shape [O, I, H, W]: C x H x W with
    C = I input channels. Every filter of a layer has the same number."""
    _, c, h, w = shape
    return int(c) * int(h) * int(w)


# The quantities of a layer's series, as the report names them: key -> (short label, description).
# "Dw" is metrics.csv's D_per_weight: D / (C H W) = 1/(N C H W) sum_i ||f_i(t+1) - f_i(t)||_2^2,
# the mean over the layer's weights of their squared change. D sums over a filter's C H W weights,
# so it grows with the filter's size even when every weight moves by the same amount (with Adam,
# each weight moves by about the learning rate per step); D per weight does not.
# "R" is the relative weight change of Agrawal et al. (arXiv 2011.06735) between consecutive
# records, ||W_t - W_t-1||_1 / ||W_t-1||_1, from weight_change.csv; a run without that file has none.
SERIES = {
    "D": ("D", "D (mean squared filter change, eq. 1)"),
    "Dw": ("D per weight", "D per weight (D / (C H W): mean squared change of one weight)"),
    "R": ("relative change", "relative weight change (||W_t - W_t-1||_1 / ||W_t-1||_1, Agrawal et al.)"),
    "S": ("S", "S (share of weights changed by more than tau, eq. 2)"),
    "Z": ("Z", "Z (share of channels with no weight changed by more than tau, eq. 3)"),
}


class InputError(Exception):
    """A missing or malformed input file: `path` and what is wrong with it."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _parse(path, lineno, column, text, kind):
    try:
        if kind is int:
            return int(text)
        return float(text)  # accepts "nan", "inf", "-inf" as the recorder writes them
    except ValueError:
        raise InputError(path, f"line {lineno}: column '{column}' is not a number: {text!r}") from None


def read_csv(path, header, types, older=None):
    """Rows of a CSV file whose first line must be exactly `header` (or `older`, the header of an
    earlier version of the file); `types` maps a column to int or float (other columns stay
    strings). Returns a list of dicts."""
    if not os.path.isfile(path):
        raise InputError(path, "missing")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"cannot be read: {e}") from None
    if not rows:
        raise InputError(path, "empty (expected the header " + ",".join(header) + ")")
    if older is not None and rows[0] == older:
        header = older
    if rows[0] != header:
        raise InputError(path, "header is " + ",".join(rows[0]) + ", expected " + ",".join(header))
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(path, f"line {lineno}: {len(row)} fields, expected {len(header)}")
        rec = {}
        for col, text in zip(header, row):
            kind = types.get(col)
            rec[col] = _parse(path, lineno, col, text, kind) if kind else text
        out.append(rec)
    return out


def read_json(path):
    if not os.path.isfile(path):
        raise InputError(path, "missing")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(path, f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InputError(path, "not a JSON object")
    return value


def read_npy(path, ndim, kinds):
    """A .npy array of `ndim` dimensions whose dtype kind is in `kinds` ('f', 'i')."""
    if not os.path.isfile(path):
        raise InputError(path, "missing")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a valid .npy file: {e}") from None
    if a.ndim != ndim:
        raise InputError(path, f"has {a.ndim} dimensions {a.shape}, expected {ndim}")
    if a.dtype.kind not in kinds:
        raise InputError(path, f"has dtype {a.dtype}, expected {'float' if 'f' in kinds else 'integer'}")
    return a


class LayerSeries:
    """One layer's rows of metrics.csv, in file order."""

    def __init__(self, name):
        self.name = name
        self.step_prev, self.step, self.D, self.S, self.Z, self.Dw = [], [], [], [], [], []
        self.n_filters = None

    def finish(self, has_dw):
        for k in ("step_prev", "step"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.int64))
        for k in ("D", "S", "Z", "Dw"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float64))
        if not has_dw:
            self.Dw = None  # a run recorded before metrics.csv had D_per_weight


class FilterSummary:
    """One layer's rows of filter_summary.csv."""

    def __init__(self, name):
        self.name = name
        self.filter, self.steps, self.D_mean, self.frac_S_zero, self.frac_Z_one = [], [], [], [], []

    def finish(self):
        self.filter = np.asarray(self.filter, dtype=np.int64)
        self.steps = np.asarray(self.steps, dtype=np.int64)
        for k in ("D_mean", "frac_S_zero", "frac_Z_one"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float64))


def read_metrics(path):
    rows = read_csv(path, METRICS_HEADER, {"step_prev": int, "step": int, "D": float, "S": float,
                                           "Z": float, "n_filters": int, "nonfinite": int, "D_per_weight": float},
                    older=METRICS_HEADER_V1)
    if not rows:
        raise InputError(path, "has no rows")
    has_dw = "D_per_weight" in rows[0]
    layers = {}
    for r in rows:
        s = layers.get(r["layer"])
        if s is None:
            s = layers[r["layer"]] = LayerSeries(r["layer"])
            s.n_filters = r["n_filters"]
        for k in ("step_prev", "step", "D", "S", "Z"):
            getattr(s, k).append(r[k])
        if has_dw:
            s.Dw.append(r["D_per_weight"])
    for s in layers.values():
        s.finish(has_dw)
    return layers  # dict keeps the layers in the file's (registration, i.e. depth) order


class WeightChange:
    """One layer's rows of weight_change.csv, in file order: the sums of |W_t - W_t-1| and of
    |W_t-1| over the layer's weights, and their ratio, the relative change."""

    def __init__(self, name):
        self.name = name
        self.step_prev, self.step, self.L1_change, self.L1_prev, self.relative = [], [], [], [], []

    def finish(self):
        for k in ("step_prev", "step"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.int64))
        for k in ("L1_change", "L1_prev", "relative"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float64))


def read_weight_change(path, metrics):
    """weight_change.csv: per layer, a WeightChange whose records are those of the layer in
    metrics.csv (the same steps, in order), for every layer of metrics.csv; sums that are negative
    are refused."""
    rows = read_csv(path, WEIGHT_CHANGE_HEADER, {"step_prev": int, "step": int, "L1_change": float,
                                                 "L1_prev": float, "relative_change": float})
    if not rows:
        raise InputError(path, "has no rows")
    layers = {}
    for lineno, r in enumerate(rows, start=2):
        if r["layer"] not in metrics:
            raise InputError(path, f"line {lineno}: layer '{r['layer']}' has no rows in metrics.csv")
        for col in ("L1_change", "L1_prev"):
            if r[col] < 0:
                raise InputError(path, f"line {lineno}: {col} is negative ({r[col]!r}), a sum of absolute values")
        w = layers.setdefault(r["layer"], WeightChange(r["layer"]))
        for k, col in (("step_prev", "step_prev"), ("step", "step"), ("L1_change", "L1_change"),
                       ("L1_prev", "L1_prev"), ("relative", "relative_change")):
            getattr(w, k).append(r[col])
    for name in metrics:
        if name not in layers:
            raise InputError(path, f"has no rows for layer '{name}' (metrics.csv has)")
    for w in layers.values():
        w.finish()
        m = metrics[w.name]
        if not (np.array_equal(w.step_prev, m.step_prev) and np.array_equal(w.step, m.step)):
            raise InputError(path, f"layer '{w.name}' has {len(w.step)} records (steps {_steps_text(w.step)}), "
                                   f"metrics.csv {len(m.step)} (steps {_steps_text(m.step)}): not the same records")
    return layers


def _steps_text(steps):
    return "none" if len(steps) == 0 else f"{int(steps[0])} to {int(steps[-1])}"


def read_filter_summary(path):
    rows = read_csv(path, SUMMARY_HEADER, {"filter": int, "steps": int, "D_mean": float, "D_min": float,
                                           "D_max": float, "frac_S_zero": float, "frac_Z_one": float})
    if not rows:
        raise InputError(path, "has no rows")
    layers = {}
    for r in rows:
        s = layers.setdefault(r["layer"], FilterSummary(r["layer"]))
        for k in ("filter", "steps", "D_mean", "frac_S_zero", "frac_Z_one"):
            getattr(s, k).append(r[k])
    for s in layers.values():
        s.finish()
    return layers


def spread_layers(names, k=SPREAD_LAYERS):
    """k layer names spread evenly over depth (first and last included); all when there are <= k."""
    names = list(names)
    if len(names) <= k:
        return names
    idx = np.round(np.linspace(0, len(names) - 1, k)).astype(int)
    return [names[i] for i in idx]


class Run:
    """One input directory of the report."""

    def __init__(self, path):
        self.path = path
        self.dirname = os.path.basename(os.path.normpath(os.path.abspath(path)))
        self.config = None  # driver runs only
        self.summary = None
        self.train_log = None
        self.table4 = None
        self.first_layer = None
        self.first_layer_steps = None
        self.fig3 = None  # list of (step, filter, absolute file path)
        self.fig3_input = None
        self.label = None  # unique display name, set by load_runs
        self.shapes = {}  # layer -> [O, I, H, W]: from config.json conv_layers (driver runs only)
        if not os.path.isdir(path):
            raise InputError(path, "not a directory")
        self.metrics = read_metrics(self.file("metrics.csv"))
        self.filters = read_filter_summary(self.file("filter_summary.csv"))
        # layer -> WeightChange, or None when the directory has no weight_change.csv.
        wpath = self.file(WEIGHT_CHANGE_FILE)
        self.weight_change = read_weight_change(wpath, self.metrics) if os.path.exists(wpath) else None
        if os.path.exists(self.file("config.json")):
            self._load_driver_files()
            self.selected = list(self.config["table3"])
            self.selected_from = "Table III (config.json)"
        else:
            self.selected = spread_layers(self.metrics.keys())
            self.selected_from = ("all layers" if len(self.selected) == len(self.metrics) else
                                  f"{len(self.selected)} of {len(self.metrics)} layers spread evenly over depth")
        for name in self.selected:
            if name not in self.filters:
                raise InputError(self.file("filter_summary.csv"), f"has no rows for layer '{name}'")

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def is_driver(self):
        return self.config is not None

    @property
    def model(self):
        return self.config.get("model") if self.config else None

    def _load_driver_files(self):
        cpath = self.file("config.json")
        self.config = cfg = read_json(cpath)
        for key in CONFIG_REQUIRED:
            if key not in cfg:
                raise InputError(cpath, f"has no key '{key}'")
        if not isinstance(cfg["model"], str) or not cfg["model"]:
            raise InputError(cpath, "'model' is not a non-empty string")
        t3 = cfg["table3"]
        if not isinstance(t3, list) or len(t3) != 5 or not all(isinstance(x, str) for x in t3):
            raise InputError(cpath, "'table3' is not a list of 5 layer names")
        for name in t3:
            if name not in self.metrics:
                raise InputError(cpath, f"table3 layer '{name}' has no rows in metrics.csv")
        if not isinstance(cfg["conv_layers"], list) or not cfg["conv_layers"]:
            raise InputError(cpath, "'conv_layers' is not a non-empty list")
        for entry in cfg["conv_layers"]:
            if (not isinstance(entry, dict) or not isinstance(entry.get("name"), str)
                    or not isinstance(entry.get("shape"), list) or len(entry["shape"]) != 4):
                raise InputError(cpath, "'conv_layers' entries must be {\"name\": str, \"shape\": [O, I, H, W]}")
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in entry["shape"]):
                raise InputError(cpath, f"conv_layers: layer '{entry['name']}' has shape {entry['shape']}, "
                                        "expected 4 positive integers [O, I, H, W]")
        self.shapes = {e["name"]: list(e["shape"]) for e in cfg["conv_layers"]}
        for name in t3:
            if name not in self.shapes:
                raise InputError(cpath, f"table3 layer '{name}' is not in conv_layers")
        if not isinstance(cfg["lr_halve_steps"], list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in cfg["lr_halve_steps"]):
            raise InputError(cpath, "'lr_halve_steps' is not a list of steps")

        self.summary = read_json(self.file("summary.json"))
        self.train_log = read_csv(self.file("train_log.csv"), TRAIN_LOG_HEADER,
                                  {"step": int, "epoch": float, "loss": float, "accuracy": float,
                                   "lr": float, "time_s": float})

        tpath = self.file("table4.csv")
        self.table4 = read_csv(tpath, TABLE4_HEADER,
                               {"filters": int, "zeroed": int, "draws": int, "baseline_accuracy": float,
                                "accuracy_mean": float, "accuracy_std": float, "drop_mean": float,
                                "drop_std": float})
        for i, r in enumerate(self.table4, start=2):
            if r["criterion"] not in TABLE4_CRITERIA:
                raise InputError(tpath, f"line {i}: unknown criterion '{r['criterion']}' "
                                        f"(expected one of {', '.join(TABLE4_CRITERIA)})")
        for name in t3:
            have = {r["criterion"] for r in self.table4 if r["layer"] == name}
            if "least_D" not in have or "random" not in have:
                raise InputError(tpath, f"has no least_D and random rows for layer '{name}'")

        fpath = self.file("first_layer.npy")
        self.first_layer = read_npy(fpath, 5, "f")
        spath = self.file("first_layer_steps.npy")
        self.first_layer_steps = read_npy(spath, 1, "iu")
        if self.first_layer.shape[0] != self.first_layer_steps.shape[0]:
            raise InputError(spath, f"holds {self.first_layer_steps.shape[0]} steps but first_layer.npy "
                                    f"holds {self.first_layer.shape[0]} snapshots")
        if self.first_layer.shape[0] == 0 or self.first_layer.shape[1] == 0:
            raise InputError(fpath, f"is empty, shape {self.first_layer.shape}")

        ipath = self.file("fig3", "index.csv")
        rows = read_csv(ipath, FIG3_HEADER, {"step": int, "filter": int})
        if not rows:
            raise InputError(ipath, "has no rows")
        self.fig3 = []
        for r in rows:
            f = self.file("fig3", r["file"])
            if not os.path.isfile(f):
                raise InputError(f, "missing (named in fig3/index.csv)")
            self.fig3.append((r["step"], r["filter"], f))
        self.fig3_input = self.file("fig3", "input.png")
        if not os.path.isfile(self.fig3_input):
            raise InputError(self.fig3_input, "missing")

    def shape(self, name):
        """[O, I, H, W] of a layer, or None where the run does not say (a `fevo analyze` directory)."""
        return self.shapes.get(name)

    def has_dw(self, names=None):
        """True when metrics.csv has D per weight for the layers (all of them, or `names`)."""
        return all(self.metrics[n].Dw is not None for n in (self.selected if names is None else names))

    @property
    def has_weight_change(self):
        """True when weight_change.csv was read (it then holds every layer of metrics.csv)."""
        return self.weight_change is not None

    def series(self, name, key):
        """A layer's series of one quantity of SERIES, float64 per record; None for "Dw" when
        metrics.csv has no D_per_weight column, and for "R" when weight_change.csv is absent."""
        s = self.metrics[name]
        if key == "Dw":
            return s.Dw
        if key == "R":
            return None if self.weight_change is None else self.weight_change[name].relative
        return getattr(s, key)

    def depth_index(self, name):
        """1-based depth of a layer: its position in config conv_layers, else in metrics.csv."""
        if self.config:
            names = [e["name"] for e in self.config["conv_layers"]]
            if name in names:
                return names.index(name) + 1
        return list(self.metrics.keys()).index(name) + 1


def finite_mean(a):
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def load_runs(paths):
    runs = [Run(p) for p in paths]
    seen = {}
    for r in runs:
        # The label names figure files and HTML ids: only [A-Za-z0-9._-].
        base = re.sub(r"[^A-Za-z0-9._-]", "_", r.model if r.is_driver else r.dirname) or "run"
        n = seen.get(base, 0) + 1
        seen[base] = n
        r.label = base if n == 1 else f"{base}_{n}"
    return runs
