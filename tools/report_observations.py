"""The paper's four observations, checked on a run's data.

Layer statistics (per run, per selected layer):
  mean D      the mean of the layer's D_t (eq. 1) over every record of metrics.csv with a finite D;
  depth       the layer's position among the five Table III layers (1 = conv1 ... 5 = conv5);
  barely      the number of filters that barely change. A filter barely changes when, in at least
              BARELY_FRAC_S_ZERO (90 %) of the records, none of its weights changed by more than
              tau (filter_summary.csv frac_S_zero >= 0.9; tau is the paper's threshold, the initial
              learning rate).

The observations and when each is said to hold:
  (1) Lower layers change more than upper layers in VGG-16. rho = Spearman rank correlation of
      depth with mean D over the five Table III layers (ranks with ties averaged). Holds when rho < 0
      and its exact one-sided permutation p-value (the share of the 5! orders of the five values
      whose rho is <= the observed one) is <= 0.05; for five layers that is rho <= -0.9: mean D falls
      with depth, with at most one adjacent pair out of order.
  (2) The stratification is weaker in ResNet-50 than in VGG-16. Two measures per model: the
      strength -rho of (1), and the spread log10(max mean D / min mean D) over the five layers.
      Holds when VGG-16 shows a decrease (rho_VGG < 0) and ResNet-50 has both a smaller strength
      (rho_ResNet > rho_VGG) and a smaller spread.
  (3) Filters that barely change exist, more in upper VGG-16 layers. Holds when at least one of
      the five VGG-16 layers has a barely changing filter and the share of barely changing filters
      in conv4 + conv5 (pooled) is larger than in conv1 + conv2 (pooled).
  (4) Zeroing them costs less accuracy than zeroing random filters (VGG-16, Table IV). Per layer,
      gap = drop_mean(random) - drop(least_D), the least_D rows standing for the filters that
      barely change. Holds when the mean gap over the five layers is > 0 and the gap exceeds the
      random draws' standard deviation (drop_std) in at least 3 of the 5 layers.
Each check returns a verdict "holds", "does not hold" or "cannot be checked" with a sentence that
gives the numbers.
"""

import itertools
import math

import numpy as np

from report_data import finite_mean

BARELY_FRAC_S_ZERO = 0.9
P_LIMIT = 0.05
HOLDS, NOT_HOLD, CANNOT = "holds", "does not hold", "cannot be checked"


def ranks(values):
    """1-based ranks, ties given their average rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v), dtype=np.float64)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def spearman(x, y):
    """Spearman's rho: the Pearson correlation of the ranks; nan when either is constant."""
    rx, ry = ranks(x), ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else math.nan


def spearman_p_below(x, y):
    """Exact one-sided p-value: the share of the permutations of y whose rho with x is <= the
    observed rho (n <= 8, so at most 40320 orders)."""
    obs = spearman(x, y)
    if math.isnan(obs) or len(y) > 8:
        return math.nan
    count = total = 0
    for perm in itertools.permutations(y):
        total += 1
        count += spearman(x, perm) <= obs + 1e-12
    return count / total


class LayerStat:
    def __init__(self, run, index, name):
        s = run.metrics[name]
        f = run.filters[name]
        self.index = index  # 1-based position among the selected layers
        self.name = name
        self.depth = run.depth_index(name)
        self.n_filters = int(s.n_filters)
        self.records = int(len(s.D))
        self.mean_D = finite_mean(s.D)
        self.mean_S = finite_mean(s.S)
        self.mean_Z = finite_mean(s.Z)
        self.barely = int(np.sum(f.frac_S_zero >= BARELY_FRAC_S_ZERO))
        self.summary_filters = int(len(f.filter))

    @property
    def barely_share(self):
        return self.barely / self.summary_filters if self.summary_filters else math.nan


def layer_stats(run):
    return [LayerStat(run, i + 1, name) for i, name in enumerate(run.selected)]


def fmt(x, digits=4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.{digits}g}"


class Verdict:
    def __init__(self, number, title, status, text, criterion):
        self.number, self.title, self.status, self.text, self.criterion = number, title, status, text, criterion


CRITERIA = {
    1: ("Spearman rho(depth, mean D) over the five Table III layers of VGG-16 < 0 with exact one-sided "
        "permutation p <= 0.05 (for five layers: rho <= -0.9, mean D falls with depth with at most one "
        "adjacent pair out of order)."),
    2: ("VGG-16 shows a decrease (rho < 0), and ResNet-50 has both a weaker one (rho_ResNet > rho_VGG) "
        "and a smaller spread log10(max mean D / min mean D) over its five layers."),
    3: (f"A filter barely changes when frac_S_zero >= {BARELY_FRAC_S_ZERO} (in at least 90 % of the "
        "records no weight moved by more than tau). Holds when a VGG-16 Table III layer has one, and "
        "the share in conv4 + conv5 (pooled) exceeds the share in conv1 + conv2 (pooled)."),
    4: ("Table IV of VGG-16, per layer gap = drop_mean(random) - drop(least_D). Holds when the mean gap "
        "over the five layers is > 0 and the gap exceeds the random draws' std in at least 3 of 5 layers."),
}
TITLES = {
    1: "Lower layers change more than upper layers (VGG-16)",
    2: "The stratification is weaker in ResNet-50 than in VGG-16",
    3: "Filters that barely change exist, more in upper VGG-16 layers",
    4: "Zeroing them costs less accuracy than zeroing random filters",
}


def _verdict(n, status, text):
    return Verdict(n, TITLES[n], status, text, CRITERIA[n])


def stratification(stats):
    """(rho, p, spread, order) of mean D against depth for one run's selected layers."""
    depth = [s.index for s in stats]
    d = [s.mean_D for s in stats]
    if any(not math.isfinite(x) for x in d):
        return math.nan, math.nan, math.nan, []
    rho = spearman(depth, d)
    p = spearman_p_below(depth, d)
    lo, hi = min(d), max(d)
    spread = math.log10(hi / lo) if lo > 0 else math.inf
    order = [f"conv{s.index}" for s in sorted(stats, key=lambda s: -s.mean_D)]
    return rho, p, spread, order


def check_1(vgg):
    if vgg is None:
        return _verdict(1, CANNOT, "no VGG-16 driver run was given.")
    stats = layer_stats(vgg)
    rho, p, _, order = stratification(stats)
    if math.isnan(rho):
        return _verdict(1, CANNOT, "mean D is not finite, or the same, in every layer.")
    values = ", ".join(f"conv{s.index} {fmt(s.mean_D)}" for s in stats)
    holds = rho < 0 and p <= P_LIMIT
    return _verdict(1, HOLDS if holds else NOT_HOLD,
                    f"mean D: {values}; largest to smallest: {' > '.join(order)}; "
                    f"Spearman rho(depth, mean D) = {rho:.2f}, one-sided p = {p:.3f}.")


def check_2(vgg, resnet):
    if vgg is None or resnet is None:
        missing = " and ".join(m for m, r in (("VGG-16", vgg), ("ResNet-50", resnet)) if r is None)
        return _verdict(2, CANNOT, f"it compares two models, and no {missing} driver run was given.")
    rv, _, sv, _ = stratification(layer_stats(vgg))
    rr, _, sr, _ = stratification(layer_stats(resnet))
    if any(math.isnan(x) for x in (rv, rr, sv, sr)):
        return _verdict(2, CANNOT, "mean D is not finite, or the same, in every layer of a model.")
    nums = (f"rho(depth, mean D) VGG-16 {rv:.2f}, ResNet-50 {rr:.2f}; spread log10(max/min mean D) "
            f"VGG-16 {sv:.2f}, ResNet-50 {sr:.2f}")
    if rv >= 0:
        return _verdict(2, NOT_HOLD, f"{nums}: VGG-16 shows no decrease of mean D with depth to compare.")
    weaker_rho, smaller_spread = rr > rv, sr < sv
    if weaker_rho and smaller_spread:
        return _verdict(2, HOLDS, nums + ".")
    why = []
    if not weaker_rho:
        why.append("ResNet-50's rank correlation is as strong or stronger")
    if not smaller_spread:
        why.append("ResNet-50's spread is as large or larger")
    return _verdict(2, NOT_HOLD, f"{nums}: {'; '.join(why)}.")


def check_3(vgg):
    if vgg is None:
        return _verdict(3, CANNOT, "no VGG-16 driver run was given.")
    stats = layer_stats(vgg)
    total = sum(s.barely for s in stats)
    per = ", ".join(f"conv{s.index} {s.barely}/{s.summary_filters}" for s in stats)
    low = stats[0:2]
    up = stats[3:5]
    low_share = sum(s.barely for s in low) / max(1, sum(s.summary_filters for s in low))
    up_share = sum(s.barely for s in up) / max(1, sum(s.summary_filters for s in up))
    nums = (f"barely changing filters: {per}; share in conv1+conv2 {100 * low_share:.1f} %, "
            f"in conv4+conv5 {100 * up_share:.1f} %")
    if total == 0:
        return _verdict(3, NOT_HOLD, nums + ": no filter of the five layers barely changes.")
    if up_share > low_share:
        return _verdict(3, HOLDS, nums + ".")
    return _verdict(3, NOT_HOLD, nums + ": the upper layers do not have the larger share.")


def table4_rows(run):
    """Per selected layer: (name, least_D row, most_Z row or None, random row)."""
    out = []
    for name in run.selected:
        by = {r["criterion"]: r for r in run.table4 if r["layer"] == name}
        out.append((name, by.get("least_D"), by.get("most_Z"), by.get("random")))
    return out


def check_4(vgg):
    if vgg is None:
        return _verdict(4, CANNOT, "no VGG-16 driver run (with table4.csv) was given.")
    gaps, exceed, parts = [], 0, []
    for i, (name, least, _, rnd) in enumerate(table4_rows(vgg), start=1):
        gap = rnd["drop_mean"] - least["drop_mean"]
        if not math.isfinite(gap):
            return _verdict(4, CANNOT, f"conv{i} ({name}) has a non-finite drop in table4.csv.")
        gaps.append(gap)
        over = gap > rnd["drop_std"]
        exceed += over
        parts.append(f"conv{i} least_D {100 * least['drop_mean']:.3f} vs random "
                     f"{100 * rnd['drop_mean']:.3f} \u00b1 {100 * rnd['drop_std']:.3f}"
                     f"{' (gap > std)' if over else ''}")
    mean_gap = float(np.mean(gaps))
    nums = (f"accuracy drop in percentage points: {'; '.join(parts)}; mean gap {100 * mean_gap:.3f}, "
            f"gap > std in {exceed} of {len(gaps)} layers")
    holds = mean_gap > 0 and exceed >= 3
    return _verdict(4, HOLDS if holds else NOT_HOLD, nums + ".")


def check_all(runs):
    """The four verdicts; the first VGG-16 and the first ResNet-50 driver runs are used."""
    vgg = next((r for r in runs if r.is_driver and r.model == "vgg16"), None)
    resnet = next((r for r in runs if r.is_driver and r.model == "resnet50"), None)
    return [check_1(vgg), check_2(vgg, resnet), check_3(vgg), check_4(vgg)]
