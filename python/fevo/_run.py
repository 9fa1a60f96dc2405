"""fevo.read_run: a recorded run (fevo.Recorder, the C++ recorder, `fevo analyze`) as pandas
DataFrames and NumPy arrays."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ._fevo import Error


@dataclass
class Run:
    """A recorded run. metrics: one row per (record, layer) (step_prev, step, layer, D, S, Z,
    n_filters, nonfinite). filter_summary: one row per (layer, filter) (layer, filter, steps,
    D_mean, D_min, D_max, frac_S_zero, frac_Z_one), None while the run is open. series: with
    per_filter_series, {layer: {"D", "S", "Z": records x N float64 arrays}}, memory-mapped;
    steps: the records' (step_prev, step), records x 2 int64, or None."""

    dir: str
    metrics: "pandas.DataFrame"  # noqa: F821
    filter_summary: "Optional[pandas.DataFrame]" = None  # noqa: F821
    series: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    steps: Optional[np.ndarray] = None


def _read_csv(path: str, dtypes: Dict[str, str], optional: Optional[Dict[str, str]] = None):
    import pandas as pd

    # Layer names are strings whatever they read like ("nan", "1"). The numbers are written as the
    # shortest decimal that reads back to the same double ("nan", "inf", "-inf"): read them back
    # exactly (pandas' default float parser may be off by an ulp).
    optional = optional or {}
    every = {**dtypes, **optional}
    df = pd.read_csv(path, dtype={"layer": str}, keep_default_na=False, float_precision="round_trip",
                     na_values={k: ["nan"] for k in every if every[k] == "float64"})
    for col, dt in every.items():
        if col not in df.columns:
            if col in optional:
                continue
            raise Error(f"fevo: read_run: '{path}' has no column '{col}' (columns {list(df.columns)})")
        df[col] = df[col].astype(dt)
    return df


def read_run(dir: "os.PathLike[str] | str") -> Run:
    """Reads the run in `dir`: metrics.csv and filter_summary.csv as pandas DataFrames (with the
    C++ recorder's columns) and, when the run has them, the per-filter series as memory-mapped
    NumPy arrays (series/<name>.{D,S,Z}.npy through series/index.csv). Reading an open run is
    safe: metrics.csv gets whole records only (a torn last line, if a writer died mid-write, is
    dropped), and filter_summary.csv and series/ appear when the run is closed."""
    d = os.fspath(dir)
    metrics_path = os.path.join(d, "metrics.csv")
    if not os.path.exists(metrics_path):
        raise Error(f"fevo: read_run: '{d}' holds no run ({metrics_path} is missing)")
    import io

    with open(metrics_path, "rb") as f:
        data = f.read()
    # A writer killed in the middle of a record leaves a last line without its newline.
    cut = data.rfind(b"\n")
    data = data[: cut + 1]
    metrics = _read_csv(io.BytesIO(data), {"step_prev": "int64", "step": "int64", "D": "float64",
                                           "S": "float64", "Z": "float64", "n_filters": "int64",
                                           "nonfinite": "int64"},
                        # runs recorded before fevo wrote D per weight have no such column
                        optional={"D_per_weight": "float64"})
    summary = None
    summary_path = os.path.join(d, "filter_summary.csv")
    if os.path.exists(summary_path):
        summary = _read_csv(summary_path, {"filter": "int64", "steps": "int64", "D_mean": "float64",
                                           "D_min": "float64", "D_max": "float64", "frac_S_zero": "float64",
                                           "frac_Z_one": "float64"})
    series: Dict[str, Dict[str, np.ndarray]] = {}
    steps = None
    index_path = os.path.join(d, "series", "index.csv")
    if os.path.exists(index_path):
        with open(index_path, newline="") as f:
            for row in csv.DictReader(f):
                series[row["layer"]] = {m: np.load(os.path.join(d, "series", row[m]), mmap_mode="r")
                                        for m in ("D", "S", "Z")}
        steps = np.load(os.path.join(d, "series", "steps.npy"), mmap_mode="r")
    return Run(dir=d, metrics=metrics, filter_summary=summary, series=series, steps=steps)
