"""The paper's findings, each checked on a run's data by a criterion fixed here, before any data.

Every finding is quoted with its section, and checked per model and, where the paper states it
per metric, per quantity: D (eq. 1), D per weight (D / (C H W), fevo's layer_metrics::D_per_weight
and metrics.csv's D_per_weight column: the size-fair companion of D, shown beside every D finding), S (eq. 2) and Z (eq. 3). Each row ends in
"holds", "does not hold" or "cannot be checked" (with the reason), gives the numbers it was judged
on, and, where it does not hold, a "why" sentence built from the numbers.

Beyond the paper, A1 checks the finding of Agrawal et al. (arXiv 2011.06735) that the relative
weight change ||W_t - W_t-1||_1 / ||W_t-1||_1 (weight_change.csv, written by the paper driver) is
larger in later layers, the opposite direction of this paper's D; between() places the run
between the two papers in a few generated sentences per model. A run without weight_change.csv
gets "cannot be checked" there, with the reason.

Layer statistics (per driver run, per Table III layer conv1..conv5):
  mean X      the mean of the layer's series X over every record with a finite value;
  depth       the layer's position among the five Table III layers (1 = conv1 ... 5 = conv5);
  mean |dw|, mean |w|
              the layer's mean over records of L1_change and of L1_prev (weight_change.csv) per
              weight (divided by O x C x H x W): the relative change is their ratio, record by record;
  barely      the filters that barely change: frac_S_zero >= BARELY_FRAC_S_ZERO in
              filter_summary.csv (in at least 90 % of the records, none of the filter's weights
              moved by more than tau, the paper's threshold);
  thirds      the records split in three consecutive parts of (nearly) equal length: early, middle,
              late training.

The statistics are SciPy's (1.8 or later; results read by position, which every such version supports:
Debian 12's python3-scipy is 1.10): Spearman's rho (scipy.stats.spearmanr; ranks, ties averaged) and,
for the five layers, its exact one-sided permutation p-value over all 5! = 120 orders
(scipy.stats.permutation_test). For five layers p <= 0.05 means |rho| >= 0.9: a monotone order
with at most one adjacent pair swapped. Over records, spearmanr's own p-value is used; it treats the
records as independent, which consecutive records of one training run are not, so it is
optimistic. Counts are compared with Fisher's exact test (scipy.stats.fisher_exact), two sets of
five values with the exact Mann-Whitney U test (scipy.stats.mannwhitneyu), and Table IV's random
draws (only their mean, standard deviation and number are recorded) with t-tests from those
statistics (scipy.stats.ttest_ind_from_stats). Where only one run per model is given, comparisons
between the models are of numbers, with no test across runs.

The findings (F: Sec. IV-C to IV-E and Figs. 2 and 4; T: Table IV) and their criteria are in
FINDINGS below, each with its text; docs/report.md lists them too.
"""

import functools
import math

import numpy as np
from scipy import stats

from report_data import SERIES, finite_mean, weights_per_filter

P_LIMIT = 0.05
BARELY_FRAC_S_ZERO = 0.9
S_CLOSE_TO_1 = 0.9          # F5: S "close to 1" from here on
S_BELOW_SHARE = 0.9         # F5: ... S below it in at least this share of a layer's records
Z_SMALL = 0.1               # F4: "small at the beginning": mean Z over the first tenth <= this
EARLY_SHARE = 0.1           # F4: the beginning and the end of training: the first and last tenth
DROP_ALMOST_NOTHING = 0.005  # T1: "almost does not decline": drop <= 0.5 percentage points
T2_MIN_LAYERS = 3           # T2: random zeroing significantly worse in at least 3 of the 5 layers
HOLDS, NOT_HOLD, CANNOT = "holds", "does not hold", "cannot be checked"
MODELS = {"vgg16": "VGG-16", "resnet50": "ResNet-50"}
# The paper's direction of each quantity over depth: D, its per-weight value and S fall with
# depth ("lower layers change more"), Z rises ("higher layers closer to 1").
FALLS, RISES = "less", "greater"
DIRECTION = {"D": FALLS, "Dw": FALLS, "S": FALLS, "Z": RISES}
# Agrawal et al.'s direction of the relative weight change: larger in later layers.
DIRECTION["R"] = RISES
AGRAWAL = "Agrawal et al."
THIRDS = ("early", "middle", "late")


# ---- statistics ----------------------------------------------------------------------------------

def spearman(x, y):
    """Spearman's rho of two equally long sequences (scipy.stats.spearmanr); nan when either is
    constant or there are fewer than 3 pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.spearmanr(x, y)[0])


def spearman_exact_p(x, y, alternative):
    """Exact one-sided p-value of Spearman's rho by permutation: the share of all len(y)! orders of
    y whose rho with x is as far in the `alternative` direction ("less" or "greater") as the
    observed one (scipy.stats.permutation_test, n_resamples=inf enumerates every order; at most
    8 values). nan when rho is."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if math.isnan(spearman(x, y)) or len(y) > 8:
        return math.nan
    # rho, and so p, depends on the values only through their ranks.
    return _exact_p(tuple(stats.rankdata(x)), tuple(stats.rankdata(y)), alternative)


@functools.lru_cache(maxsize=None)
def _exact_p(rx, ry, alternative):
    x = np.asarray(rx)
    res = stats.permutation_test((np.asarray(ry),), lambda v: stats.spearmanr(x, v)[0], vectorized=False,
                                 permutation_type="pairings", alternative=alternative, n_resamples=np.inf)
    return float(res.pvalue)


def spearman_records_p(x, y, alternative):
    """(rho, one-sided p) over records (scipy.stats.spearmanr's p, from the t distribution)."""
    rho = spearman(x, y)
    if math.isnan(rho):
        return math.nan, math.nan
    return rho, float(stats.spearmanr(x, y, alternative=alternative)[1])


def directed(rho, direction):
    """rho turned so that a positive value is the paper's direction."""
    return -rho if direction == FALLS else rho


def split_thirds(a):
    return np.array_split(np.asarray(a), 3)


# ---- layer statistics ----------------------------------------------------------------------------

class LayerStat:
    """One Table III layer (or, for a `fevo analyze` directory, one selected layer) of a run."""

    def __init__(self, run, index, name):
        s = run.metrics[name]
        f = run.filters[name]
        self.index = index  # 1-based position among the selected layers
        self.name = name
        self.depth = run.depth_index(name)
        self.shape = run.shape(name)
        self.chw = weights_per_filter(self.shape) if self.shape else None
        self.n_filters = int(s.n_filters)
        self.records = int(len(s.D))
        self.steps = s.step
        self.series = {k: run.series(name, k) for k in SERIES}
        self.mean = {k: (finite_mean(v) if v is not None else math.nan) for k, v in self.series.items()}
        self.barely = int(np.sum(f.frac_S_zero >= BARELY_FRAC_S_ZERO))
        self.summary_filters = int(len(f.filter))
        self.max_frac_S_zero = float(np.max(f.frac_S_zero)) if len(f.frac_S_zero) else math.nan
        d = f.D_mean[np.isfinite(f.D_mean)]
        self.D_mean_spread = filter_spread(d)
        # Per weight, from weight_change.csv: the mean absolute change and the mean absolute weight.
        self.abs_change = self.abs_weight = math.nan
        if run.weight_change is not None and self.shape:
            w = run.weight_change[name]
            n = self.shape[0] * self.chw
            self.abs_change = finite_mean(w.L1_change) / n
            self.abs_weight = finite_mean(w.L1_prev) / n

    @property
    def label(self):
        return f"conv{self.index}"

    @property
    def barely_share(self):
        return self.barely / self.summary_filters if self.summary_filters else math.nan

    def thirds_mean(self, key):
        v = self.series[key]
        return [finite_mean(p) for p in split_thirds(v)] if v is not None else [math.nan] * 3


def filter_spread(d):
    """How widely a layer's filters differ in their change: log10(P90 / P10) of the filters'
    D_mean (the 90th and 10th percentiles). 0 when every filter has D_mean = 0; inf when at least a
    tenth of the filters never change but others do."""
    if len(d) == 0:
        return math.nan
    lo, hi = np.quantile(d, [0.1, 0.9])
    if hi <= 0:
        return 0.0
    return math.inf if lo <= 0 else math.log10(hi / lo)


def layer_stats(run):
    return [LayerStat(run, i + 1, name) for i, name in enumerate(run.selected)]


# ---- formatting ----------------------------------------------------------------------------------

def g(x, digits=3):
    """A number as the findings print it: `digits` significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def r2(x):
    """rho and other values in [-1, 1]: two decimals with a sign."""
    return "nan" if math.isnan(x) else f"{x:+.2f}"


def pval(p):
    if math.isnan(p):
        return "nan"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def peq(p):
    """"= 0.042" or "< 0.001", to follow "p"."""
    s = pval(p)
    return s if s.startswith("<") else "= " + s


def pts(x):
    """An accuracy difference (in [0, 1]) in percentage points."""
    return "nan" if not math.isfinite(x) else f"{100 * x:.3f}"


def by_layer(stats_, values, fmt=g):
    return ", ".join(f"{s.label} {fmt(v)}" for s, v in zip(stats_, values))


# ---- the findings --------------------------------------------------------------------------------

class Finding:
    def __init__(self, key, title, section, paper, criterion, check):
        self.key, self.title, self.section, self.paper, self.criterion = key, title, section, paper, criterion
        self.check = check  # check(ctx, self) -> list of Row


class Row:
    """One line of the findings table: a finding for one model and one quantity (or selection)."""

    def __init__(self, finding, model, quantity, status, numbers, why=None):
        self.finding, self.model, self.quantity = finding, model, quantity
        if quantity not in QUANTITY_IDS:
            raise AssertionError(f"{finding.key}: unknown quantity {quantity!r}")
        self.status, self.numbers = status, numbers
        self.why = why if status == NOT_HOLD else None
        if status == NOT_HOLD and not why:
            raise AssertionError(f"{finding.key} {model} {quantity}: a row that does not hold needs a why")

    @property
    def id(self):
        """F1-VGG16-Dw: the row's name in HTML ids and in findings.csv / findings.json."""
        return f"{self.finding.key}-{''.join(c for c in self.model if c.isalnum())}-{QUANTITY_IDS[self.quantity]}"


# The quantity column of a row, and its short name in the row's id.
QUANTITY_IDS = {"D": "D", "D per weight": "Dw", "relative change": "R", "S": "S", "Z": "Z", "S, Z": "SZ", "filters": "filters",
                "filter D_mean": "Dmean", "most_Z (Z record)": "most_Z", "least_D (D record)": "least_D",
                "random": "random"}


class Context:
    """The runs a check looks at: the first VGG-16 and the first ResNet-50 driver runs."""

    def __init__(self, runs):
        self.vgg = next((r for r in runs if r.is_driver and r.model == "vgg16"), None)
        self.resnet = next((r for r in runs if r.is_driver and r.model == "resnet50"), None)
        self._stats = {}

    def stats(self, run):
        if id(run) not in self._stats:
            self._stats[id(run)] = layer_stats(run)
        return self._stats[id(run)]


def no_run(model):
    return f"no {MODELS[model]} paper-driver run was given (config.json with \"model\": \"{model}\")."


def two_models(missing):
    return "it compares two models; " + " ".join(no_run(m) for m in missing)


def quantity_label(key):
    return SERIES[key][0]


def has_dw(stats_):
    """True when every layer's D per weight was read (metrics.csv's D_per_weight column)."""
    return all(s.series["Dw"] is not None for s in stats_)


def cannot_quantity(run, stats_, key):
    """The reason a quantity cannot be read for the run's five layers, or None."""
    if key == "Dw" and not has_dw(stats_):
        return (f"{run.label}'s metrics.csv has no D_per_weight column (recorded before fevo wrote D per "
                "weight; record it again, or rerun `fevo analyze` on its snapshots).")
    if any(not math.isfinite(s.mean[key]) for s in stats_):
        return f"the mean {quantity_label(key)} of a layer is not finite (no finite record)."
    return None


# F1 ---------------------------------------------------------------------------------------------

class Trend:
    """Layer means of one quantity against depth: rho, its exact p, rho per third of the records."""

    def __init__(self, stats_, key):
        self.key = key
        self.values = [s.mean[key] for s in stats_]
        depth = [s.index for s in stats_]
        self.direction = DIRECTION[key]
        self.rho = spearman(depth, self.values)
        self.p = spearman_exact_p(depth, self.values, self.direction)
        self.thirds = [spearman(depth, [s.thirds_mean(key)[t] for s in stats_]) for t in range(3)]
        self.enough_records = min(s.records for s in stats_) >= 3
        self.labels = [s.label for s in stats_]

    @property
    def significant(self):
        return directed(self.rho, self.direction) > 0 and self.p <= P_LIMIT

    @property
    def through_training(self):
        return all(directed(r, self.direction) > 0 for r in self.thirds)

    def numbers(self, stats_):
        word = quantity_label(self.key)
        return (f"mean {word}: {by_layer(stats_, self.values)}; Spearman rho(depth, mean {word}) = "
                f"{r2(self.rho)}, exact one-sided p {peq(self.p)}; rho in the early, middle, late third: "
                + ", ".join(r2(r) for r in self.thirds))

    def why(self, source="the paper"):
        word = quantity_label(self.key)
        want = "falls" if self.direction == FALLS else "rises"
        if math.isnan(self.rho):
            return f"mean {word} is the same in every layer: there is no order over depth."
        hi = self.labels[int(np.argmax(self.values))]
        lo = self.labels[int(np.argmin(self.values))]
        if directed(self.rho, self.direction) <= 0:
            other = "rises" if self.direction == FALLS else "falls"
            return (f"mean {word} {other + ' with depth' if self.rho != 0 else 'has no order over depth'} "
                    f"(rho = {r2(self.rho)}): largest in {hi}, smallest in {lo}; in {source} it {want}.")
        if self.p > P_LIMIT:
            step = [i for i in range(len(self.values) - 1)
                    if directed(self.values[i + 1] - self.values[i], self.direction) < 0]
            swapped = ", ".join(f"{self.labels[i]} {'<' if self.direction == FALLS else '>'} {self.labels[i + 1]}"
                                for i in step)
            return (f"mean {word} {want} with depth on the whole (rho = {r2(self.rho)}), but not steadily "
                    f"({swapped}); five layers in such an order arise by chance with p {peq(self.p)} "
                    f"> {P_LIMIT}.")
        bad = [f"the {THIRDS[t]} third (rho = {r2(r)})" for t, r in enumerate(self.thirds)
               if directed(r, self.direction) <= 0]
        return (f"over the whole run mean {word} {want} with depth (rho = {r2(self.rho)}, p {peq(self.p)}), "
                f"but not in {' and '.join(bad)}: not \"through the entire training\".")


def fan_in_why(stats_):
    """Why mean D can grow with depth while the change per weight does not: D sums a filter's
    C x H x W squared changes."""
    chw = [s.chw for s in stats_]
    if any(c is None for c in chw):
        return " D per weight needs the layers' shapes (config.json conv_layers), which this run lacks."
    d = [s.mean["D"] for s in stats_]
    rho_chw = spearman(chw, d)
    dw = Trend(stats_, "Dw")
    text = (f" D sums the squared change of a filter's C x H x W weights (here {by_layer(stats_, chw, str)}); "
            f"Spearman rho(C x H x W, mean D) = {r2(rho_chw)}.")
    if dw.significant and dw.through_training:
        text += (f" Per weight (D / C x H x W) the change falls with depth (rho = {r2(dw.rho)}, p {peq(dw.p)}): "
                 "the paper's finding holds per weight, and mean D grows with the filters' size.")
    elif directed(dw.rho, FALLS) > 0:
        text += (f" Per weight the change tends to fall with depth (rho = {r2(dw.rho)}, p {peq(dw.p)}), "
                 "short of the criterion.")
    else:
        text += f" Per weight it does not fall with depth either (rho = {r2(dw.rho)})."
    return text


def check_stratification(ctx, finding):
    rows = []
    vgg = ctx.vgg
    for key in ("D", "Dw", "S", "Z"):
        q = quantity_label(key)
        if vgg is None:
            rows.append(Row(finding, "VGG-16", q, CANNOT, no_run("vgg16")))
            continue
        st = ctx.stats(vgg)
        reason = cannot_quantity(vgg, st, key)
        if reason:
            rows.append(Row(finding, "VGG-16", q, CANNOT, reason))
            continue
        t = Trend(st, key)
        if not t.enough_records:
            rows.append(Row(finding, "VGG-16", q, CANNOT, "fewer than 3 records: no thirds of training to compare."))
            continue
        holds = t.significant and t.through_training
        why = None
        if not holds:
            why = t.why()
            if key == "D":
                why += fan_in_why(st)
        rows.append(Row(finding, "VGG-16", q, HOLDS if holds else NOT_HOLD, t.numbers(st), why))
    return rows


# A1 ---------------------------------------------------------------------------------------------

def no_weight_change(run):
    return (f"{run.label} has no weight_change.csv (a run of an older paper driver, or a `fevo analyze` "
            "directory): the relative weight change needs sum |W_t - W_t-1| and sum |W_t-1| per layer and "
            "record, which the paper driver writes there.")


def trend_text(t):
    """"rises with depth (rho = +0.90, exact one-sided p = 0.042)", p in the direction of rho."""
    if math.isnan(t.rho):
        return "is the same in every layer"
    if t.rho == 0:
        return "has no order over depth (rho = +0.00)"
    depth = list(range(1, len(t.values) + 1))
    p = spearman_exact_p(depth, t.values, RISES if t.rho > 0 else FALLS)
    return f"{'rises' if t.rho > 0 else 'falls'} with depth (rho = {r2(t.rho)}, exact one-sided p {peq(p)})"


def all_layers_rho(run):
    """Spearman rho(depth, mean relative change) over every recorded conv layer (no test: the
    layers of one block are not independent), and their number."""
    names = list(run.weight_change)
    return spearman([run.depth_index(n) for n in names],
                    [finite_mean(run.weight_change[n].relative) for n in names]), len(names)


def beside_D(st, model):
    """This paper's D over the same layers, as A1's rows quote it beside the relative change; p is
    in this paper's direction (falling)."""
    d = Trend(st, "D")
    claim = "F1: falls with depth" if model == "vgg16" else "F2: a weaker stratification than VGG-16's"
    text = (f"beside it, this paper's D ({claim}): rho(depth, mean D) = {r2(d.rho)}, exact one-sided p (falling) "
            f"{peq(d.p)}")
    if has_dw(st):
        dw = Trend(st, "Dw")
        text += f"; D per weight rho = {r2(dw.rho)}, p {peq(dw.p)}"
    return text


def relative_why(st):
    """Why the relative change orders the layers as it does: it is, record by record, the mean
    absolute change of a weight over the mean absolute weight."""
    if any(not (math.isfinite(s.abs_change) and math.isfinite(s.abs_weight)) for s in st):
        return ""
    depth = [s.index for s in st]
    dw, w = [s.abs_change for s in st], [s.abs_weight for s in st]

    def moves(rho):
        return ("is the same in every layer" if math.isnan(rho) else
                "has no order over depth" if rho == 0 else ("rises" if rho > 0 else "falls") + " with depth")
    rdw, rw = spearman(depth, dw), spearman(depth, w)
    rr = spearman(depth, [s.mean["R"] for s in st])
    text = (f" The relative change is the mean absolute change of a weight over the mean absolute weight: "
            f"the first {moves(rdw)} (rho = {r2(rdw)}; {by_layer(st, dw)}), the second {moves(rw)} "
            f"(rho = {r2(rw)}; {by_layer(st, w)}).")
    if rdw * rw > 0 and not abs(rr) >= 0.9:
        text += (f" Both {'rise' if rw > 0 else 'fall'} with depth at a similar pace, so their ratio keeps no "
                 "clear order.")
    return text


def check_relative_change(ctx, finding):
    rows = []
    q = quantity_label("R")
    for model, run in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)):
        label = MODELS[model]
        if run is None:
            rows.append(Row(finding, label, q, CANNOT, no_run(model)))
            continue
        if not run.has_weight_change:
            rows.append(Row(finding, label, q, CANNOT, no_weight_change(run)))
            continue
        st = ctx.stats(run)
        reason = cannot_quantity(run, st, "R")
        if reason:
            rows.append(Row(finding, label, q, CANNOT, reason))
            continue
        t = Trend(st, "R")
        rho_all, n_all = all_layers_rho(run)
        nums = (f"mean relative change per record: {by_layer(st, t.values)}; Spearman rho(depth, mean relative "
                f"change) = {r2(t.rho)}, exact one-sided p {peq(t.p)}; over all {n_all} conv layers rho = "
                f"{r2(rho_all)}; {beside_D(st, model)}")
        if t.significant:
            rows.append(Row(finding, label, q, HOLDS, nums))
        else:
            rows.append(Row(finding, label, q, NOT_HOLD, nums, t.why(AGRAWAL) + relative_why(st)))
    return rows


def between(runs):
    """A few sentences per model placing the run between this paper (lower layers change more:
    D falls with depth in VGG-16, Sec. IV-C) and Agrawal et al. (the relative weight change rises
    with depth): a list of (model, text), one per model with a paper-driver run."""
    ctx = Context(runs)
    out = []
    for model, run in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)):
        if run is None:
            continue
        st = ctx.stats(run)
        d = Trend(st, "D")
        dw = Trend(st, "Dw") if has_dw(st) else None
        if model == "vgg16":
            paper = (f"eq. 1's D {trend_text(d)}, "
                     + ("as this paper finds (F1)" if d.significant else "against this paper's finding that it falls (F1)"))
            if dw is not None:
                paper += f"; D per weight {trend_text(dw)}"
        else:
            paper = (f"eq. 1's D {trend_text(d)}; this paper finds a stratification weaker than VGG-16's (F2), "
                     "with the top layer changing least (F3)")
        if not run.has_weight_change or any(not math.isfinite(s.mean["R"]) for s in st):
            why = no_weight_change(run) if not run.has_weight_change else \
                "the mean relative change of a layer is not finite."
            out.append((MODELS[model], f"{MODELS[model]}: {paper}. Agrawal et al.'s side cannot be read: {why}"))
            continue
        r = Trend(st, "R")
        agrawal = (f"the relative weight change {trend_text(r)}: "
                   + ("Agrawal et al.'s finding holds (A1)" if r.significant else
                      "Agrawal et al.'s finding does not hold (A1)"))
        text = f"{MODELS[model]}: {agrawal}; {paper}."
        if model == "vgg16":
            if r.significant and not d.significant:
                text += " The run sides with Agrawal et al."
            elif d.significant and not r.significant:
                text += " The run sides with this paper."
            elif d.significant and r.significant:
                text += (" Both hold: lower layers change more in D, later layers change more relative to "
                         "their weights.")
            else:
                text += " Neither finding holds in this run."
            if dw is not None and dw.significant and not d.significant:
                text += " Per weight, lower layers do change more, as this paper finds."
        out.append((MODELS[model], text))
    return out


# F2 ---------------------------------------------------------------------------------------------

def spread_of(values, key):
    """How far apart five layer means are: log10(max / min) for D and D per weight (they span
    orders of magnitude), max - min for the shares S and Z."""
    lo, hi = min(values), max(values)
    if key in ("D", "Dw"):
        if hi <= 0:
            return 0.0
        return math.inf if lo <= 0 else math.log10(hi / lo)
    return hi - lo


def spread_name(key):
    w = quantity_label(key)
    return f"log10(max/min mean {w})" if key in ("D", "Dw") else f"max - min of mean {w}"


def check_weaker_in_resnet(ctx, finding):
    rows = []
    for key in ("D", "Dw", "S", "Z"):
        q = quantity_label(key)
        missing = [m for m, r in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)) if r is None]
        if missing:
            rows.append(Row(finding, "both", q, CANNOT, two_models(missing)))
            continue
        sv, sr = ctx.stats(ctx.vgg), ctx.stats(ctx.resnet)
        reason = cannot_quantity(ctx.vgg, sv, key) or cannot_quantity(ctx.resnet, sr, key)
        if reason:
            rows.append(Row(finding, "both", q, CANNOT, reason))
            continue
        tv, tr = Trend(sv, key), Trend(sr, key)
        if math.isnan(tv.rho) or math.isnan(tr.rho):
            rows.append(Row(finding, "both", q, CANNOT, f"mean {q} is the same in every layer of a model."))
            continue
        strength_v = directed(tv.rho, tv.direction)
        strength_r = abs(tr.rho)
        spread_v, spread_r = spread_of(tv.values, key), spread_of(tr.values, key)
        nums = (f"stratification strength: VGG-16 {r2(strength_v)} (rho in the paper's direction), ResNet-50 "
                f"{r2(strength_r)} (|rho|); spread {spread_name(key)}: VGG-16 {g(spread_v)}, ResNet-50 {g(spread_r)}")
        if strength_v <= 0:
            rows.append(Row(finding, "both", q, NOT_HOLD, nums,
                            f"VGG-16's mean {q} does not {'fall' if tv.direction == FALLS else 'rise'} with depth "
                            f"(rho = {r2(tv.rho)}): there is no stratification in the paper's direction for "
                            "ResNet-50's to be weaker than."))
            continue
        weaker, narrower = strength_r < strength_v, spread_r < spread_v
        if weaker and narrower:
            rows.append(Row(finding, "both", q, HOLDS, nums))
            continue
        why = []
        if not weaker:
            why.append(f"ResNet-50's layers are as strongly ordered over depth (|rho| = {r2(strength_r)} "
                       f">= {r2(strength_v)})")
        if not narrower:
            why.append(f"ResNet-50's layer means lie as far apart or farther ({g(spread_r)} >= {g(spread_v)}; "
                       f"ResNet-50: {by_layer(sr, tr.values)}; VGG-16: {by_layer(sv, tv.values)})")
        rows.append(Row(finding, "both", q, NOT_HOLD, nums, "; ".join(why) + "."))
    return rows


# F3 ---------------------------------------------------------------------------------------------

def check_top_least(ctx, finding):
    rows = []
    run = ctx.resnet
    for key in ("D", "Dw"):
        q = quantity_label(key)
        if run is None:
            rows.append(Row(finding, "ResNet-50", q, CANNOT, no_run("resnet50")))
            continue
        st = ctx.stats(run)
        reason = cannot_quantity(run, st, key)
        if reason:
            rows.append(Row(finding, "ResNet-50", q, CANNOT, reason))
            continue
        means = [s.mean[key] for s in st]
        n = min(s.records for s in st)
        stacked = np.stack([s.series[key][:n] for s in st])  # layers x records
        least_share = float(np.mean(np.argmin(np.where(np.isfinite(stacked), stacked, np.inf), axis=0) == 4)) \
            if n else math.nan
        rank = 1 + sum(m < means[4] for m in means[:4])
        nums = (f"mean {q}: {by_layer(st, means)}; conv5 is the {ordinal(rank)}smallest of five; conv5 is the "
                f"least changed layer in {g(100 * least_share)} % of {n} records")
        holds = rank == 1 and least_share >= 0.5
        why = None
        if not holds:
            lo = st[int(np.argmin(means))]
            why = (f"conv5's mean {q} ({g(means[4])}) is the {ordinal(rank)}smallest; the least changed layer "
                   f"is {lo.label} ({g(lo.mean[key])})" if rank != 1 else
                   f"conv5 has the smallest mean {q}, but is the least changed layer in only "
                   f"{g(100 * least_share)} % of the records")
            if key == "D" and st[4].chw is not None:
                top = max(st, key=lambda s: s.chw)
                if top is st[4]:
                    why += (f"; conv5's filters are the largest of the five (C x H x W = {st[4].chw}), "
                            "which D grows with")
            why += "."
        rows.append(Row(finding, "ResNet-50", q, HOLDS if holds else NOT_HOLD, nums, why))
    return rows


def ordinal(n):
    """'' for 1 (the smallest), else '2nd ', '3rd ', '4th ' (the 2nd smallest)."""
    return "" if n == 1 else {2: "2nd ", 3: "3rd "}.get(n, f"{n}th ")


# F4 ---------------------------------------------------------------------------------------------

def edge_means(a, share=EARLY_SHARE):
    """Mean over the first and over the last `share` of the records (at least one record each)."""
    k = max(1, int(round(share * len(a))))
    return finite_mean(a[:k]), finite_mean(a[-k:])


def check_z_grows(ctx, finding):
    run = ctx.resnet
    if run is None:
        return [Row(finding, "ResNet-50", "Z", CANNOT, no_run("resnet50"))]
    st = ctx.stats(run)
    if min(s.records for s in st) < 3:
        return [Row(finding, "ResNet-50", "Z", CANNOT, "fewer than 3 records: no trend over training.")]
    parts, bad = [], []
    for s in st:
        z = s.series["Z"]
        ok = np.isfinite(z)
        first, last = edge_means(z[ok])
        rho, p = spearman_records_p(s.steps[ok], z[ok], RISES)
        parts.append(f"{s.label} {g(first, 2)} -> {g(last, 2)} (rho {r2(rho)}, p {peq(p)})")
        if not first <= Z_SMALL:
            bad.append(f"{s.label} starts at Z = {g(first, 2)} (> {Z_SMALL})")
        if math.isnan(rho):
            bad.append(f"{s.label}'s Z is constant ({g(float(z[ok][0]) if ok.any() else math.nan, 2)})")
        elif not (rho > 0 and p <= P_LIMIT):
            bad.append(f"{s.label}'s Z does not rise over training (rho = {r2(rho)}, p {peq(p)})")
    nums = ("mean Z over the first tenth -> last tenth of the records (Spearman rho(step, Z), one-sided p): "
            + "; ".join(parts))
    if bad:
        return [Row(finding, "ResNet-50", "Z", NOT_HOLD, nums, "; ".join(bad) + ".")]
    return [Row(finding, "ResNet-50", "Z", HOLDS, nums)]


# F5 ---------------------------------------------------------------------------------------------

def check_s_below_1(ctx, finding):
    rows = []
    for model, run in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)):
        if run is None:
            rows.append(Row(finding, MODELS[model], "S", CANNOT, no_run(model)))
            continue
        st = ctx.stats(run)
        parts, bad = [], []
        for s in st:
            v = s.series["S"]
            v = v[np.isfinite(v)]
            below = float(np.mean(v < S_CLOSE_TO_1)) if len(v) else math.nan
            parts.append(f"{s.label} mean {g(s.mean['S'], 2)}, below {S_CLOSE_TO_1} in {g(100 * below)} %")
            if not below >= S_BELOW_SHARE:
                high = s.steps[np.isfinite(s.series["S"])][v >= S_CLOSE_TO_1]
                where = (f", at steps {int(high[0])} to {int(high[-1])}" if len(high) else "")
                bad.append(f"{s.label}'s S is {S_CLOSE_TO_1} or more in {g(100 * (1 - below))} % of its records "
                           f"(largest {g(float(v.max()) if len(v) else math.nan)}{where})")
        nums = "S per layer: " + "; ".join(parts)
        if bad:
            rows.append(Row(finding, MODELS[model], "S", NOT_HOLD, nums, "; ".join(bad) + "."))
        else:
            rows.append(Row(finding, MODELS[model], "S", HOLDS, nums))
    return rows


# F6 ---------------------------------------------------------------------------------------------

def check_complementary(ctx, finding):
    rows = []
    for model, run in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)):
        if run is None:
            rows.append(Row(finding, MODELS[model], "S, Z", CANNOT, no_run(model)))
            continue
        st = ctx.stats(run)
        parts, bad = [], []
        for s in st:
            S, Z = s.series["S"], s.series["Z"]
            ok = np.isfinite(S) & np.isfinite(Z)
            rho, p = spearman_records_p(S[ok], Z[ok], FALLS)
            parts.append(f"{s.label} {r2(rho)} (p {peq(p)})")
            if math.isnan(rho):
                flat = "Z" if ok.any() and np.all(Z[ok] == Z[ok][0]) else "S"
                val = (Z if flat == "Z" else S)[ok]
                bad.append(f"{s.label}'s {flat} is constant ({g(float(val[0]) if len(val) else math.nan, 2)}) "
                           "over its records: nothing moves against it")
            elif not (rho < 0 and p <= P_LIMIT):
                bad.append(f"in {s.label} S and Z do not move against each other (rho = {r2(rho)}, p {peq(p)})")
        across = spearman([s.mean["S"] for s in st], [s.mean["Z"] for s in st])
        nums = ("Spearman rho(S_t, Z_t) over the records, one-sided p: " + "; ".join(parts) +
                f"; across the five layers' means rho(mean S, mean Z) = {r2(across)}")
        if bad:
            rows.append(Row(finding, MODELS[model], "S, Z", NOT_HOLD, nums, "; ".join(bad) + "."))
        else:
            rows.append(Row(finding, MODELS[model], "S, Z", HOLDS, nums))
    return rows


# F7-F10 -----------------------------------------------------------------------------------------

def barely_numbers(st):
    return "barely changing filters: " + ", ".join(f"{s.label} {s.barely}/{s.summary_filters}" for s in st)


def check_vgg_has_barely(ctx, finding):
    if ctx.vgg is None:
        return [Row(finding, "VGG-16", "filters", CANNOT, no_run("vgg16"))]
    st = ctx.stats(ctx.vgg)
    nums = barely_numbers(st)
    if sum(s.barely for s in st):
        return [Row(finding, "VGG-16", "filters", HOLDS, nums)]
    top = max(st, key=lambda s: s.max_frac_S_zero)
    return [Row(finding, "VGG-16", "filters", NOT_HOLD, nums,
                f"no filter of the five layers has frac_S_zero >= {BARELY_FRAC_S_ZERO}; the stillest filter "
                f"(in {top.label}) had no weight move by more than tau in {g(100 * top.max_frac_S_zero)} % of "
                "the records.")]


def check_vgg_barely_top(ctx, finding):
    if ctx.vgg is None:
        return [Row(finding, "VGG-16", "filters", CANNOT, no_run("vgg16"))]
    st = ctx.stats(ctx.vgg)
    b5, n5 = st[4].barely, st[4].summary_filters
    b14, n14 = sum(s.barely for s in st[:4]), sum(s.summary_filters for s in st[:4])
    share5 = b5 / n5 if n5 else math.nan
    share14 = b14 / n14 if n14 else math.nan
    p = float(stats.fisher_exact([[b5, n5 - b5], [b14, n14 - b14]], alternative="greater")[1]) \
        if n5 and n14 else math.nan
    nums = (f"{barely_numbers(st)}; share in conv5 {g(100 * share5)} %, in conv1-conv4 {g(100 * share14)} %; "
            f"Fisher's exact one-sided p {peq(p)}")
    if share5 > share14 and p <= P_LIMIT:
        return [Row(finding, "VGG-16", "filters", HOLDS, nums)]
    if b5 + b14 == 0:
        why = "no filter of the five layers barely changes, so none can be more frequent in conv5."
    elif not share5 > share14:
        why = (f"conv5 has {b5} of {n5} barely changing filters ({g(100 * share5)} %), not a larger share than "
               f"conv1-conv4 together ({b14} of {n14}, {g(100 * share14)} %).")
    else:
        why = (f"conv5's share ({g(100 * share5)} %) is larger than conv1-conv4's ({g(100 * share14)} %), but "
               f"with these counts such a difference arises by chance with p {peq(p)} > {P_LIMIT}.")
    return [Row(finding, "VGG-16", "filters", NOT_HOLD, nums, why)]


def check_resnet_none(ctx, finding):
    if ctx.resnet is None:
        return [Row(finding, "ResNet-50", "filters", CANNOT, no_run("resnet50"))]
    st = ctx.stats(ctx.resnet)
    run = ctx.resnet
    all_barely = sum(int(np.sum(f.frac_S_zero >= BARELY_FRAC_S_ZERO)) for f in run.filters.values())
    all_n = sum(len(f.filter) for f in run.filters.values())
    nums = f"{barely_numbers(st)}; over all {len(run.filters)} conv layers {all_barely}/{all_n}"
    total = sum(s.barely for s in st)
    if total == 0:
        return [Row(finding, "ResNet-50", "filters", HOLDS, nums)]
    where = ", ".join(f"{s.label} {s.barely}" for s in st if s.barely)
    return [Row(finding, "ResNet-50", "filters", NOT_HOLD, nums,
                f"ResNet-50 has {total} barely changing filters in the five layers ({where}).")]


def check_narrow_range(ctx, finding):
    missing = [m for m, r in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)) if r is None]
    if missing:
        return [Row(finding, "both", "filter D_mean", CANNOT, two_models(missing))]
    sv, sr = ctx.stats(ctx.vgg), ctx.stats(ctx.resnet)
    xv = [s.D_mean_spread for s in sv]
    xr = [s.D_mean_spread for s in sr]
    if any(math.isnan(x) for x in xv + xr):
        return [Row(finding, "both", "filter D_mean", CANNOT, "a layer has no filter with a finite D_mean.")]
    p = float(stats.mannwhitneyu(xr, xv, alternative="less", method="exact").pvalue)
    nums = (f"log10(P90/P10) of the filters' D_mean per layer: VGG-16 {by_layer(sv, xv, lambda x: g(x, 2))}; "
            f"ResNet-50 {by_layer(sr, xr, lambda x: g(x, 2))}; Mann-Whitney U exact one-sided p {peq(p)}")
    if p <= P_LIMIT:
        return [Row(finding, "both", "filter D_mean", HOLDS, nums)]
    mv, mr = float(np.median(xv)), float(np.median(xr))
    why = (f"ResNet-50's layers spread their filters' change no less than VGG-16's (median {g(mr, 2)} vs "
           f"{g(mv, 2)} decades)." if mr >= mv else
           f"ResNet-50's layers spread less (median {g(mr, 2)} vs {g(mv, 2)} decades), but five layers against "
           f"five give p {peq(p)} > {P_LIMIT}.")
    return [Row(finding, "both", "filter D_mean", NOT_HOLD, nums, why)]


# T1-T5 ------------------------------------------------------------------------------------------

SELECTIONS = (("most_Z", "most_Z (Z record)"), ("least_D", "least_D (D record)"))


def table4_rows(run):
    """Per selected layer: (name, least_D row, most_Z row or None, random row)."""
    out = []
    for name in run.selected:
        by = {r["criterion"]: r for r in run.table4 if r["layer"] == name}
        out.append((name, by.get("least_D"), by.get("most_Z"), by.get("random")))
    return out


def table4_by(run, criterion):
    """The five Table III layers' rows of one criterion, or None when a layer has none."""
    rows = []
    for name in run.selected:
        r = next((r for r in run.table4 if r["layer"] == name and r["criterion"] == criterion), None)
        if r is None:
            return None
        rows.append(r)
    return rows


def check_almost_nothing(ctx, finding):
    rows = []
    for crit, label in SELECTIONS:
        if ctx.vgg is None:
            rows.append(Row(finding, "VGG-16", label, CANNOT, no_run("vgg16")))
            continue
        t = table4_by(ctx.vgg, crit)
        if t is None:
            rows.append(Row(finding, "VGG-16", label, CANNOT, f"table4.csv has no {crit} rows for every layer."))
            continue
        drops = [r["drop_mean"] for r in t]
        nums = "accuracy drop in percentage points: " + ", ".join(
            f"conv{i} {pts(d)} ({r['zeroed']}/{r['filters']} zeroed)" for i, (d, r) in enumerate(zip(drops, t), 1))
        if not all(math.isfinite(d) for d in drops):
            rows.append(Row(finding, "VGG-16", label, CANNOT, nums + "; a drop is not finite."))
            continue
        over = [f"conv{i} ({pts(d)} points)" for i, d in enumerate(drops, 1) if d > DROP_ALMOST_NOTHING]
        if over:
            shares = [r["zeroed"] / r["filters"] for r in t if r["filters"]]
            rows.append(Row(finding, "VGG-16", label, NOT_HOLD, nums,
                            f"zeroing the {crit} filters costs more than {pts(DROP_ALMOST_NOTHING)} points in "
                            f"{', '.join(over)}; the paper's ratios zero {g(100 * min(shares))} % to "
                            f"{g(100 * max(shares))} % of a layer's filters here."))
        else:
            rows.append(Row(finding, "VGG-16", label, HOLDS, nums))
    return rows


def random_vs_one(rnd, value):
    """One-sided p that the random draws' drops exceed a single trial's drop: Student's two-sample
    t-test with the single trial as a sample of one (the draws' variance pooled), from the draws'
    mean, standard deviation (ddof 1) and number. Draws of zero spread: 0 when they all exceed
    it, 1 otherwise. nan with fewer than 2 draws."""
    n, m, sd = int(rnd["draws"]), rnd["drop_mean"], rnd["drop_std"]
    if n < 2 or not (math.isfinite(m) and math.isfinite(sd) and math.isfinite(value)):
        return math.nan
    if sd == 0:
        return 0.0 if m > value else 1.0
    return float(stats.ttest_ind_from_stats(m, sd, n, value, 0.0, 1, equal_var=True, alternative="greater").pvalue)


def welch_greater(a, b):
    """One-sided Welch t-test p that draws `a` have a larger mean drop than draws `b`, from their
    means, standard deviations and numbers (table4.csv random rows). Both of zero spread: 0 when
    a's mean is larger, 1 otherwise. nan with fewer than 2 draws on either side."""
    if int(a["draws"]) < 2 or int(b["draws"]) < 2:
        return math.nan
    if a["drop_std"] == 0 and b["drop_std"] == 0:
        return 0.0 if a["drop_mean"] > b["drop_mean"] else 1.0
    return float(stats.ttest_ind_from_stats(a["drop_mean"], a["drop_std"], int(a["draws"]), b["drop_mean"],
                                            b["drop_std"], int(b["draws"]), equal_var=False,
                                            alternative="greater").pvalue)


def check_random_costs_more(ctx, finding):
    rows = []
    for crit, label in SELECTIONS:
        if ctx.vgg is None:
            rows.append(Row(finding, "VGG-16", label, CANNOT, no_run("vgg16")))
            continue
        sel, rnd = table4_by(ctx.vgg, crit), table4_by(ctx.vgg, "random")
        if sel is None or rnd is None:
            rows.append(Row(finding, "VGG-16", label, CANNOT,
                            f"table4.csv has no {crit} and random rows for every layer."))
            continue
        ps = [random_vs_one(r, s["drop_mean"]) for s, r in zip(sel, rnd)]
        if any(math.isnan(p) for p in ps):
            rows.append(Row(finding, "VGG-16", label, CANNOT,
                            "a layer has fewer than 2 random draws (or a non-finite drop): no test."))
            continue
        sig = [p <= P_LIMIT for p in ps]
        nums = "drop in points, random (mean +- std over draws) vs " + crit + ", one-sided p: " + "; ".join(
            f"conv{i} {pts(r['drop_mean'])} +- {pts(r['drop_std'])} vs {pts(s['drop_mean'])}, p {peq(p)}"
            for i, (s, r, p) in enumerate(zip(sel, rnd, ps), 1))
        nums += f"; random significantly worse in {sum(sig)} of 5 layers"
        if sum(sig) >= T2_MIN_LAYERS:
            rows.append(Row(finding, "VGG-16", label, HOLDS, nums))
            continue
        parts = [f"conv{i} ({'random drops less' if r['drop_mean'] <= s['drop_mean'] else 'p ' + peq(p)})"
                 for i, (s, r, p, ok) in enumerate(zip(sel, rnd, ps, sig), 1) if not ok]
        rows.append(Row(finding, "VGG-16", label, NOT_HOLD, nums,
                        f"random zeroing costs significantly more than {crit} in only {sum(sig)} of 5 layers "
                        f"(needed {T2_MIN_LAYERS}); not in {', '.join(parts)}."))
    return rows


def check_vgg_bottom_least(ctx, finding):
    if ctx.vgg is None:
        return [Row(finding, "VGG-16", "random", CANNOT, no_run("vgg16"))]
    rnd = table4_by(ctx.vgg, "random")
    if rnd is None:
        return [Row(finding, "VGG-16", "random", CANNOT, "table4.csv has no random rows for every layer.")]
    drops = [r["drop_mean"] for r in rnd]
    depth = list(range(1, 6))
    rho = spearman(depth, drops)
    p = spearman_exact_p(depth, drops, RISES)
    nums = ("random drop mean in points: " + ", ".join(f"conv{i} {pts(d)}" for i, d in enumerate(drops, 1)) +
            f"; Spearman rho(depth, drop) = {r2(rho)}, exact one-sided p {peq(p)}")
    if rho > 0 and p <= P_LIMIT:
        return [Row(finding, "VGG-16", "random", HOLDS, nums)]
    least = int(np.argmin(drops)) + 1
    if math.isnan(rho):
        why = "every layer drops the same: no order over depth."
    elif rho <= 0:
        why = (f"random zeroing does not hurt lower layers less (rho = {r2(rho)}); the least hurt layer is "
               f"conv{least}.")
    else:
        why = (f"the drop tends to grow with depth (rho = {r2(rho)}), but five layers in such an order arise by "
               f"chance with p {peq(p)} > {P_LIMIT}; the least hurt layer is conv{least}.")
    return [Row(finding, "VGG-16", "random", NOT_HOLD, nums, why)]


def check_resnet_conv1_most(ctx, finding):
    if ctx.resnet is None:
        return [Row(finding, "ResNet-50", "random", CANNOT, no_run("resnet50"))]
    rnd = table4_by(ctx.resnet, "random")
    if rnd is None:
        return [Row(finding, "ResNet-50", "random", CANNOT, "table4.csv has no random rows for every layer.")]
    drops = [r["drop_mean"] for r in rnd]
    other = max(range(1, 5), key=lambda i: drops[i])  # the most hurt of conv2..conv5
    p = welch_greater(rnd[0], rnd[other])
    nums = ("random drop mean +- std in points: " + ", ".join(
        f"conv{i} {pts(r['drop_mean'])} +- {pts(r['drop_std'])}" for i, r in enumerate(rnd, 1)) +
        f"; conv1 vs the most hurt other layer (conv{other + 1}), Welch one-sided p {peq(p)}")
    if math.isnan(p):
        return [Row(finding, "ResNet-50", "random", CANNOT, nums + "; fewer than 2 random draws: no test.")]
    if drops[0] > drops[other] and p <= P_LIMIT:
        return [Row(finding, "ResNet-50", "random", HOLDS, nums)]
    why = (f"conv1 drops most ({pts(drops[0])} points), but not clearly more than conv{other + 1} "
           f"({pts(drops[other])}; p {peq(p)} > {P_LIMIT})." if drops[0] > drops[other] else
           f"conv{other + 1} drops {'as much as' if drops[other] == drops[0] else 'more than'} conv1 "
           f"({pts(drops[other])} vs {pts(drops[0])} points).")
    return [Row(finding, "ResNet-50", "random", NOT_HOLD, nums, why)]


def check_conv5_robust(ctx, finding):
    missing = [m for m, r in (("vgg16", ctx.vgg), ("resnet50", ctx.resnet)) if r is None]
    if missing:
        return [Row(finding, "both", "random", CANNOT, two_models(missing))]
    rv, rr = table4_by(ctx.vgg, "random"), table4_by(ctx.resnet, "random")
    if rv is None or rr is None:
        return [Row(finding, "both", "random", CANNOT, "table4.csv has no random rows for every layer.")]
    v, r = rv[4], rr[4]
    p = welch_greater(v, r)
    nums = (f"conv5 random drop mean +- std in points: VGG-16 {pts(v['drop_mean'])} +- {pts(v['drop_std'])} "
            f"({v['zeroed']}/{v['filters']} zeroed), ResNet-50 {pts(r['drop_mean'])} +- {pts(r['drop_std'])} "
            f"({r['zeroed']}/{r['filters']}); Welch one-sided p {peq(p)}")
    if math.isnan(p):
        return [Row(finding, "both", "random", CANNOT, nums + "; fewer than 2 random draws: no test.")]
    if r["drop_mean"] < v["drop_mean"] and p <= P_LIMIT:
        return [Row(finding, "both", "random", HOLDS, nums)]
    why = (f"ResNet-50's conv5 drops {'as much or more' if r['drop_mean'] >= v['drop_mean'] else 'less'} "
           f"({pts(r['drop_mean'])} vs {pts(v['drop_mean'])} points)" +
           ("." if r["drop_mean"] >= v["drop_mean"] else
            f", but within the draws' spread (p {peq(p)} > {P_LIMIT})."))
    return [Row(finding, "both", "random", NOT_HOLD, nums, why)]


# The list: key, title, section, the paper's words, criterion, check. ----------------------------

TREND_CRITERION = (
    "Over the five Table III layers: Spearman rho(depth, layer mean) in the paper's direction (D, D per weight, "
    "S fall with depth; Z rises) with exact one-sided permutation p <= 0.05 (for five layers |rho| >= 0.9), "
    "and the same sign of rho in each third of the records (\"always\", \"through the entire training\").")

FINDINGS = [
    Finding("F1", "Lower layers change more than upper layers (VGG-16)",
            "Sec. IV-C, Fig. 2(a)-(c); Sec. IV-D",
            "\u201cwe can observe obvious stratification in VGGNet that filters of lower layers always change "
            "relatively larger than those of upper layers\u201d (Fig. 2(a)); Fig. 2(b): \u201cwe can also observe "
            "the similar phenomena\u201d; Fig. 2(c): \u201cthe metrics of higher layers are found to be closer to 1 "
            "through the entire training\u201d",
            TREND_CRITERION, check_stratification),
    Finding("A1", "The relative weight change is larger in later layers (Agrawal et al.; beyond the paper)",
            "Agrawal et al., arXiv 2011.06735, abstract; beside F1",
            "Agrawal et al. find \u201cthe overall increase in relative weight change of later layers as compared "
            "to earlier ones\u201d, the relative weight change being ||W_t - W_t-1||_1 / ||W_t-1||_1: the opposite "
            "direction of this paper's D (F1)",
            "Per model, over the five Table III layers: Spearman rho(depth, the layer's mean relative change over "
            "the records; t - 1 is the previous record) > 0 with exact one-sided permutation p <= 0.05 (F1's "
            "test, in Agrawal et al.'s direction). Needs weight_change.csv (the paper driver's).",
            check_relative_change),
    Finding("F2", "The stratification is weaker in ResNet-50 than in VGG-16",
            "Sec. IV-C, Fig. 2(a)-(c); Sec. IV-D",
            "\u201cThe stratification in ResNet is not as obvious as VGGNet\u201d (Fig. 2(a)); \u201cstratification is "
            "also more obvious in VGGNet than ResNet\u201d (Fig. 2(b)); \u201cthe gap of the update of the filters "
            "between different layers is much smaller\u201d (IV-D)",
            "Per quantity: VGG-16's five layer means ordered in the paper's direction (rho > 0 once turned to "
            "it), and ResNet-50's both less ordered (|rho| smaller) and closer together (spread: log10(max/min) "
            "of the means for D and D per weight, max - min for S and Z). One run per model: the numbers are "
            "compared, with no test across runs.",
            check_weaker_in_resnet),
    Finding("F3", "The top layer of ResNet-50 changes least",
            "Sec. IV-C, Fig. 2(a)",
            "\u201cit can still be found that the top layer has the least change\u201d",
            "conv5 has the smallest mean of the five layers, and is the least changed layer in at least half of "
            "the records. No test: the chance that one given layer of five is the smallest is 1/5, never "
            "below 0.05.",
            check_top_least),
    Finding("F4", "In ResNet-50, Z is small at the beginning and gradually increases",
            "Sec. IV-C, Fig. 2(c)",
            "\u201cWhile in ResNet, the Z_t is small at the beginning and gradually increase to 1\u201d",
            f"In every one of the five layers: mean Z over the first tenth of the records <= {Z_SMALL}, and Z "
            "rises with the step: Spearman rho(step, Z_t) > 0 with one-sided p <= 0.05 (spearmanr's p, records "
            "taken as independent).",
            check_z_grows),
    Finding("F5", "Not all parameters of a filter change: S well below 1",
            "Sec. IV-C, Fig. 2(b)",
            "\u201cNot all the parameters in a filter are changing since the ratios are not close to 1\u201d",
            f"In every one of the five layers, S_t < {S_CLOSE_TO_1} in at least {int(100 * S_BELOW_SHARE)} % of "
            "the records. No test: a bound on the observed values.",
            check_s_below_1),
    Finding("F6", "S and Z move against each other",
            "Sec. IV-C, Fig. 2(b), (c)",
            "\u201cThe Z_t is complementary against [S_t], so the figures of the two statistics metrics are "
            "against each other\u201d",
            "In every one of the five layers, Spearman rho(S_t, Z_t) over the records < 0 with one-sided "
            "p <= 0.05 (spearmanr's p, records taken as independent).",
            check_complementary),
    Finding("F7", "VGG-16 has filters that change by nearly zero",
            "Sec. IV-E, Fig. 4",
            "\u201cwe can observe that many filters change by near zero in VGGNet\u201d",
            f"At least one filter of the five layers barely changes (frac_S_zero >= {BARELY_FRAC_S_ZERO}: in at "
            "least 90 % of the records none of its weights moved by more than tau).",
            check_vgg_has_barely),
    Finding("F8", "More of them in VGG-16's top layer",
            "Sec. IV-E, Fig. 4",
            "\u201cthe polyline of conv5 contains more filters that change slightly or even by nearly zero\u201d; "
            "\u201chigher layers have more redundant filters than lower layers\u201d",
            "The share of barely changing filters in conv5 is larger than in conv1-conv4 pooled, with Fisher's "
            "exact one-sided p <= 0.05.",
            check_vgg_barely_top),
    Finding("F9", "ResNet-50 has no filter that changes by nearly zero",
            "Sec. IV-E, Fig. 4",
            "\u201cWhile in ResNet, there are no filters that change by near zero\u201d",
            "No filter of ResNet-50's five layers barely changes (frac_S_zero >= 0.9). No test: a count of zero.",
            check_resnet_none),
    Finding("F10", "ResNet-50's filters of a layer change within a narrow range",
            "Sec. IV-E, Fig. 4",
            "\u201cstrong inconsistency of the distributions of filters among different layers\u201d (VGGNet); "
            "\u201cin ResNet, none of filters changes by nearly zero and all the filters of each layer change in "
            "a narrow range\u201d",
            "Per layer, the spread of its filters' D_mean: log10(P90/P10) (90th over 10th percentile). ResNet-50's "
            "five spreads are smaller than VGG-16's five: exact Mann-Whitney U one-sided p <= 0.05.",
            check_narrow_range),
    Finding("T1", "Zeroing the chosen filters costs almost nothing (VGG-16)",
            "Sec. IV-E, Table IV(a)",
            "\u201cin VGGNet, our approach almost does not decline\u201d; the filters are \u201cselected according to "
            "the Z_t record\u201d, \u201cfilters change near zero\u201d",
            f"The accuracy drop of zeroing the selected filters is <= {pts(DROP_ALMOST_NOTHING)} percentage "
            "points in every one of the five layers; checked for the most_Z selection (the Z record) and the "
            "least_D selection (the smallest D). One trial per layer: no test.",
            check_almost_nothing),
    Finding("T2", "Random zeroing costs more than zeroing the chosen filters (VGG-16)",
            "Sec. IV-E, Table IV(a)",
            "\u201cthis way of choosing redundant filters is appropriate\u201d (random zeroing drops more in "
            "conv2-conv5)",
            "Per layer, the random draws' drops exceed the selection's single drop: Student's t-test with the "
            "selection as a sample of one (scipy.stats.ttest_ind_from_stats), one-sided p <= 0.05; holds in at "
            f"least {T2_MIN_LAYERS} of the 5 layers.",
            check_random_costs_more),
    Finding("T3", "Random zeroing hurts VGG-16's bottom layers least",
            "Sec. IV-E, Table IV(a)",
            "\u201cFor randomly zeroing, filters closer to the bottom drop smaller (e.g. conv1 drops 0.0272%, "
            "smaller than conv2, conv3 and conv5)\u201d",
            "Spearman rho(depth, random drop mean) > 0 over the five layers with exact one-sided permutation "
            "p <= 0.05. (The paper's own Table IV(a) gives rho = +0.40, p = 0.26.)",
            check_vgg_bottom_least),
    Finding("T4", "Random zeroing hurts ResNet-50's conv1 most",
            "Sec. IV-E, Table IV(b)",
            "\u201cfilters closer to the bottom drop larger (0.431% of conv1)\u201d; \u201cSince the first layer sees "
            "the original data input without any residual connection before itself, it is affected more\u201d",
            "conv1 has the largest random drop mean of the five layers, larger than the next one's by a "
            "one-sided Welch t-test from the draws' means and standard deviations, p <= 0.05.",
            check_resnet_conv1_most),
    Finding("T5", "ResNet-50's conv5 is more robust than VGG-16's",
            "Sec. IV-E, Table IV",
            "\u201cTaking conv5 for comparison, when randomly zeroing out filters, ResNet drops only 0.0028% while "
            "VGGNet drops 0.1988%\u201d",
            "ResNet-50's conv5 random drop mean is smaller than VGG-16's: one-sided Welch t-test from the "
            "draws' means and standard deviations, p <= 0.05.",
            check_conv5_robust),
]


def check_all(runs):
    """Every row of every finding, in FINDINGS order (the first VGG-16 and ResNet-50 driver runs)."""
    ctx = Context(runs)
    rows = []
    for f in FINDINGS:
        rows += f.check(ctx, f)
    return rows
