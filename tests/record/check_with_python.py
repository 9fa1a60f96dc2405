#!/usr/bin/env python3
"""Oracle checks of the recorder's files with the reference readers.

  check_with_python.py tensorboard WORKER   TensorBoard's own reader (the `tensorboard` package)
                                            reads the event file back with the values of
                                            metrics.csv (float32), every step once, CRCs checked.
  check_with_python.py numpy WORKER         np.load reads the per-filter series; they agree with
                                            metrics.csv and filter_summary.csv.

WORKER is fevo_record_crash_worker. The run it records is interrupted once (torn tails are added
to metrics.csv and the event file) and reopened, so the repaired files are what gets checked.
Exit 0: passed, 1: failed, 77: skipped (numpy missing, for the numpy check only).
"""
import csv
import math
import os
import struct
import subprocess
import sys
import tempfile

LAYERS = ["conv1", "block/conv,2", "fc"]
SEED = "4242"
STEPS = 25


def record_run(worker, d):
    run = os.path.join(d, "run")
    subprocess.run([worker, run, "series", SEED, "0", "12"], check=True, stdout=subprocess.DEVNULL)
    # The tails a kill in the middle of a write leaves behind.
    with open(os.path.join(run, "metrics.csv"), "ab") as f:
        f.write(b"12,13,conv1,0.01")
    events = [n for n in os.listdir(run) if n.startswith("events.out.tfevents.")]
    assert len(events) == 1, events
    with open(os.path.join(run, events[0]), "ab") as f:
        f.write(b"\x30\x00\x00\x00\x00\x00\x00\x00\x12")
    out = subprocess.run([worker, run, "series", SEED, "10", str(STEPS)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    assert "resumed 12" in out, out
    return run, os.path.join(run, events[0])


def read_metrics(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step_prev", "step", "layer", "D", "S", "Z", "n_filters", "nonfinite", "D_per_weight"], rows[0]
    rows = rows[1:]
    assert len(rows) == STEPS * len(LAYERS), len(rows)
    seen = set()
    for r in rows:
        key = (int(r[1]), r[2])
        assert key not in seen, f"duplicate row {key}"
        seen.add(key)
        assert int(r[0]) == int(r[1]) - 1
    return rows


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def check_tensorboard(worker):
    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub import errors as tb_errors
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_pywrap
    except ImportError as e:
        print(f"FAILED: cannot import tensorboard ({e}); install it with: pip install tensorboard")
        return 1
    with tempfile.TemporaryDirectory() as d:
        run, events_path = record_run(worker, d)
        rows = read_metrics(run)
        expected = {}
        for r in rows:
            for name, value in zip("DSZ", r[3:6]):
                expected.setdefault(f"fevo/{r[2]}/{name}", []).append((int(r[1]), f32(float(value))))

        # 1. The record reader TensorBoard uses without TensorFlow: framing and both masked
        #    CRC32Cs of every record (a DataLossError here fails the test; TensorBoard's loaders
        #    would silently stop at it).
        reader = tb_pywrap.PyRecordReader_New(events_path)
        raw = []
        while True:
            try:
                reader.GetNext()
            except tb_errors.OutOfRangeError:
                break
            raw.append(event_pb2.Event.FromString(reader.record()))
        assert raw[0].file_version == "brain.Event:2", raw[0]
        steps = [e.step for e in raw[1:]]
        assert steps == list(range(1, STEPS + 1)), steps
        for e in raw[1:]:
            assert e.wall_time > 1e9
            tags = [v.tag for v in e.summary.value]
            assert tags == [f"fevo/{l}/{m}" for l in LAYERS for m in "DSZ"], tags
            for v in e.summary.value:
                want = dict(expected[v.tag])[e.step]
                assert same(v.simple_value, want), (v.tag, e.step, v.simple_value, want)

        # 2. The EventAccumulator TensorBoard's UI is fed from.
        acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        tags = sorted(acc.Tags()["scalars"])
        assert tags == sorted(expected), (tags, sorted(expected))
        n = 0
        for tag, want in expected.items():
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert len(got) == len(want), (tag, len(got), len(want))
            for (gs, gv), (ws, wv) in zip(got, want):
                assert gs == ws and same(gv, wv), (tag, gs, gv, ws, wv)
                n += 1
        print(f"tensorboard: {len(raw) - 1} events, {n} scalars equal metrics.csv (float32)")
    return 0


def check_numpy(worker):
    try:
        import numpy as np
    except ImportError as e:
        print(f"SKIPPED: cannot import numpy ({e}); install it with: pip install numpy")
        return 77
    with tempfile.TemporaryDirectory() as d:
        run, _ = record_run(worker, d)
        rows = read_metrics(run)
        series = os.path.join(run, "series")
        with open(os.path.join(series, "index.csv"), newline="") as f:
            index = list(csv.reader(f))
        assert index[0] == ["layer", "D", "S", "Z", "n_filters"], index[0]
        assert [r[0] for r in index[1:]] == LAYERS
        steps = np.load(os.path.join(series, "steps.npy"), allow_pickle=False)
        assert steps.dtype == np.int64 and steps.shape == (STEPS, 2), (steps.dtype, steps.shape)
        assert (steps[:, 1] == np.arange(1, STEPS + 1)).all() and (steps[:, 0] == steps[:, 1] - 1).all()
        with open(os.path.join(run, "filter_summary.csv"), newline="") as f:
            summary = list(csv.reader(f))
        assert summary[0] == ["layer", "filter", "steps", "D_mean", "D_min", "D_max", "frac_S_zero",
                              "frac_Z_one"], summary[0]
        summary = {(r[0], int(r[1])): r for r in summary[1:]}
        for k, (layer, fd, fs, fz, nf) in enumerate(index[1:]):
            D, S, Z = (np.load(os.path.join(series, x), allow_pickle=False) for x in (fd, fs, fz))
            for a in (D, S, Z):
                assert a.dtype == np.float64 and a.shape == (STEPS, int(nf)), (a.dtype, a.shape)
            mine = [r for r in rows if r[2] == layer]
            csv_D = np.array([float(r[3]) for r in mine])
            csv_S = np.array([float(r[4]) for r in mine])
            csv_Z = np.array([float(r[5]) for r in mine])
            np.testing.assert_allclose(D.mean(axis=1), csv_D, rtol=1e-12, atol=0)
            np.testing.assert_allclose(S.mean(axis=1), csv_S, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(Z.mean(axis=1), csv_Z, rtol=1e-12, atol=1e-15)
            assert ((S >= 0) & (S <= 1)).all() and ((Z >= 0) & (Z <= 1)).all()
            for i in range(int(nf)):
                r = summary[(layer, i)]
                assert int(r[2]) == STEPS
                np.testing.assert_allclose(float(r[3]), D[:, i].mean(), rtol=1e-12)
                assert float(r[4]) == D[:, i].min() and float(r[5]) == D[:, i].max(), (layer, i)
                assert float(r[6]) == np.count_nonzero(S[:, i] == 0) / STEPS, (layer, i)
                assert float(r[7]) == np.count_nonzero(Z[:, i] == 1) / STEPS, (layer, i)
            assert len(summary) >= int(nf)
        print(f"numpy: series of {len(index) - 1} layers x {STEPS} steps agree with metrics.csv and "
              f"filter_summary.csv")
    return 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("tensorboard", "numpy"):
        print(__doc__)
        return 2
    try:
        return check_tensorboard(sys.argv[2]) if sys.argv[1] == "tensorboard" else check_numpy(sys.argv[2])
    except AssertionError as e:
        import traceback
        traceback.print_exc()
        print(f"FAILED: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
