"""fevo.Recorder: D, S and Z of a model's conv layers recorded during training, through the C++
recorder (fevo::record::recorder on the CPU, fevo::record::cuda_recorder on a GPU)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import _fevo
from ._fevo import Error, LayerMetrics


def _conv_weights(model: Any) -> List[Tuple[str, Any]]:
    """(name, weight) of every Conv1d and Conv2d of a torch.nn.Module, in module order."""
    import torch.nn as nn

    layers = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and isinstance(getattr(module, "weight", None), nn.Parameter):
            layers.append((f"{name}.weight" if name else "weight", module.weight))
    return layers


def _layers_of(model: Any) -> List[Tuple[str, Any]]:
    if isinstance(model, Mapping):
        layers = [(str(k), v) for k, v in model.items()]
    else:
        try:
            import torch.nn as nn
        except ImportError:  # pragma: no cover - torch is optional
            nn = None
        if nn is None or not isinstance(model, nn.Module):
            raise Error("fevo: Recorder: model must be a torch.nn.Module (its Conv1d and Conv2d weights are "
                        f"recorded) or a mapping of layer names to weight arrays, got {type(model).__name__}")
        layers = _conv_weights(model)
    if not layers:
        raise Error("fevo: Recorder: no layer to record (the model has no Conv1d or Conv2d layer)")
    return layers


def _where(w: Any) -> Any:
    """What identifies a torch tensor's memory: its address, strides and device (None otherwise)."""
    if hasattr(w, "data_ptr") and hasattr(w, "stride"):
        return (w.data_ptr(), tuple(w.stride()), str(w.device))
    return None


class Recorder:
    """Records D, S and Z of a model's conv layers while it trains, into the files of fevo's C++
    recorder (metrics.csv, filter_summary.csv, series/, a TensorBoard event file, the journal):
    `fevo analyze`'s readers, tools/fevo_report.py and fevo.read_run read a Python run unchanged.

        rec = fevo.Recorder(model, tau=2e-4, out_dir="runs/fevo", every=10)
        for step in range(1, steps + 1):
            train_step()
            rec.step(step)        # records when step % every == 0
        rec.close()               # filter_summary.csv (and series/); or use `with`

    It keeps one copy of the recorded weights (the previous snapshot) on the weights' device. At
    each record it computes the metrics of every layer between that copy and the live weights in
    one pass (on a GPU: one compare-and-advance pass that also updates the copy), writes them
    before it returns, and makes the copy the live weights. The metrics are those of
    fevo.compute (see help(fevo.compute): eq. 1-3, tau strictly, the NaN rule).

    Args:
        model: a torch.nn.Module, whose Conv1d and Conv2d weights are recorded under their
            parameter names ("features.0.weight"), or a mapping {name: weight array}. The weights
            are read in place: they must stay where they are (an optimiser's in-place updates
            do; model.to(...) or assigning param.data does not, and the next record says so).
            One dtype on one device per Recorder.
        tau: the threshold of S and Z (the paper: the initial learning rate).
        out_dir: the run directory, created if missing. A run already there is reopened and
            continued (resume=True): after a crash (kill -9), run the same script again; every
            record whose step() returned is kept, none is written twice, and records of steps
            the files already hold are skipped (a loop restarted from an older checkpoint).
        every: step(step) records when step % every == 0.
        per_filter_series: also write series/<layer>.{D,S,Z}.npy (records x N) at close.
        tensorboard: also write TensorBoard scalars fevo/<layer>/{D,S,Z} at every record.
        start_step: the step of the weights as they are now (the first record's step_prev).
        layout: the weights' layout, as in fevo.compute (for a mapping of arrays).
        resume, fsync_each_record, journal_compact_bytes: as in the C++ recorder_options
            (docs/recorder.md).

    Raises fevo.Error on I/O errors, on a run in out_dir recorded with other layers, tau, dtype
    or per_filter_series, on a run in use by another recorder, and on bad weights.
    """

    def __init__(self, model: Any, tau: float, out_dir: "os.PathLike[str] | str", *, every: int = 10,
                 per_filter_series: bool = False, tensorboard: bool = False, start_step: int = 0,
                 layout: str = "oihw", resume: bool = True, fsync_each_record: bool = False,
                 journal_compact_bytes: int = 64 << 20) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise Error(f"fevo: Recorder: every must be a positive int, got {every!r}")
        self.every = every
        self.out_dir = os.fspath(out_dir)
        self._layers = _layers_of(model)
        self._where = [_where(w) for _, w in self._layers]
        self._core = _fevo._Recorder(self.out_dir, tau, list(self._layers), layout,
                                     per_filter_series, tensorboard, resume, fsync_each_record,
                                     journal_compact_bytes)
        self._core.start(start_step)

    @property
    def layers(self) -> List[str]:
        """The recorded layers' names, in the order of metrics.csv's rows."""
        return [n for n, _ in self._layers]

    @property
    def records(self) -> int:
        """Records in the run (every session of it)."""
        return self._core.records

    @property
    def last_recorded_step(self) -> Optional[int]:
        """The last step in the files; None before the first record."""
        return self._core.last_recorded_step

    @property
    def snapshot_step(self) -> int:
        """The step of the kept copy (the next record's step_prev)."""
        return self._core.snapshot_step

    @property
    def copy_bytes(self) -> int:
        """Bytes of the kept copy of the weights."""
        return self._core.copy_bytes

    @property
    def events_path(self) -> str:
        """The TensorBoard event file in use ("" without tensorboard)."""
        return self._core.events_path

    def step(self, step: int) -> Optional[Dict[str, LayerMetrics]]:
        """Records at `step` when step % every == 0 (see record); otherwise does nothing and
        returns None."""
        if step % self.every:
            return None
        return self.record(step)

    def record(self, step: int) -> Dict[str, LayerMetrics]:
        """Records the metrics between the kept copy and the live weights at `step` (which must be
        greater than the kept copy's step) and returns them by layer; an empty dict for a step the
        files already hold (a replay after a restart). A record whose write failed raises
        fevo.Error and changed nothing on the CPU (it may be retried)."""
        for (name, w), where in zip(self._layers, self._where):
            if where is not None and _where(w) != where:
                raise Error(f"fevo: Recorder: layer '{name}': its weights moved in memory since the Recorder "
                            "was made (model.to(), or an assignment to .data); make a new Recorder")
        metrics = self._core.record(step)
        return dict(zip(self.layers, metrics)) if metrics else {}

    def close(self) -> None:
        """Writes filter_summary.csv (and series/) atomically and closes the files. Idempotent;
        record() after it raises."""
        self._core.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
