"""fevo.Recorder and fevo.read_run: a training loop's files equal, byte for byte, what the C++
recorder writes for the same weights (a C++ program built here from cxx/record_reference.cpp); a
run killed with -9 resumes with no row lost or doubled; the values are fevo.compute's."""
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import fevo
from conftest import SEED

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def record_reference(tmp_path_factory):
    """The C++ recorder driven by a script (cxx/record_reference.cpp), built against this tree."""
    exe = str(tmp_path_factory.mktemp("cxx") / "record_reference")
    cxx = os.environ.get("CXX", "c++")
    cmd = [cxx, "-std=c++17", "-O2", "-fopenmp", f"-I{ROOT}/include", f"-I{ROOT}/backends/cpu/include",
           os.path.join(HERE, "cxx", "record_reference.cpp"), "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return exe


class Net(torch.nn.Module):
    """Two Conv2d (one channels_last-free, contiguous), a Conv1d and a Linear (not recorded)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.AdaptiveAvgPool2d(1))
        self.seq = torch.nn.Conv1d(4, 6, 5)
        self.head = torch.nn.Linear(16 + 6, 10)

    def forward(self, x, s):
        return self.head(torch.cat([self.features(x).flatten(1), self.seq(s).mean(-1)], dim=1))


def conv_weights(model):
    return [(n, p) for n, p in model.named_parameters() if n in ("features.0.weight", "features.2.weight", "seq.weight")]


def train(out, script_dir, steps, every, tau, **options):
    """A small training loop with fevo.Recorder; writes the C++ program's script and the weights
    of every record beside it. Returns the script's path."""
    torch.manual_seed(SEED % 1000)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lines = [f"out {script_dir}/cxx_run", f"tau {float(tau).hex()}",
             f"series {int(options.get('per_filter_series', False))}",
             f"tensorboard {int(options.get('tensorboard', False))}",
             f"compact {options.get('journal_compact_bytes', 64 << 20)}"]
    for name, w in conv_weights(model):
        shape = tuple(w.shape) if w.dim() == 4 else (w.shape[0], w.shape[1], 1, w.shape[2])
        lines.append("layer %d %d %d %d %s" % (*shape, name))

    def dump(cmd, step):
        path = os.path.join(script_dir, f"w{step}.bin")
        with open(path, "wb") as f:
            for _, w in conv_weights(model):
                f.write(w.detach().contiguous().numpy().tobytes())
        lines.append(f"{cmd} {step} {path}")

    dump("start", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
    try:
        record_loop(model, opt, out, tau, steps, every, dump, options)
    finally:
        torch.set_num_threads(threads)
    lines.append("close")
    script = os.path.join(script_dir, "script.txt")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def record_loop(model, opt, out, tau, steps, every, dump, options):
    with fevo.Recorder(model, tau, out, every=every, **options) as rec:
        assert rec.layers == [n for n, _ in conv_weights(model)]
        for step in range(1, steps + 1):
            x, s = torch.randn(8, 3, 6, 6), torch.randn(8, 4, 9)
            loss = torch.nn.functional.cross_entropy(model(x, s), torch.randint(0, 10, (8,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            got = rec.step(step)
            if step % every == 0:
                dump("record", step)
                assert list(got) == rec.layers
            else:
                assert got is None


def events(path):
    """The records of a TensorBoard event file with each event's wall time (field 1, a double)
    zeroed: what two runs of the same weights share."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        body = bytearray(data[pos + 12: pos + 12 + n])
        assert body[0] == 0x09, "an event starts with its wall time"
        body[1:9] = bytes(8)
        out.append(bytes(body))
        pos += 12 + n + 4
    return out


def journal(data):
    """journal.bin with its run_id (16 random hex digits, new for every run) and the header's CRC
    zeroed; the records are compared as they are (docs: journal.hpp's layout)."""
    (text_len,) = struct.unpack_from("<I", data, 12)
    end = 24 + text_len
    text = data[24:end]
    key = text.index(b"run_id ") + len(b"run_id ")
    assert text[key + 16: key + 17] == b"\n"
    text = text[:key] + b"0" * 16 + text[key + 16:]
    return data[:24] + text + bytes(4) + data[end + 4:]


def checkpoint(data):
    """summary.ckpt with the journal header's CRC (which covers the run_id) and its own CRC zeroed."""
    return data[:12] + bytes(4) + data[16:-4] + bytes(4)


def run_files(d):
    """A run directory's files, each as two runs of the same weights share it: the event file
    modulo wall times, the journal and checkpoint modulo the run_id."""
    files = {}
    for root, _, names in os.walk(d):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), d)
            if name.startswith("events.out.tfevents."):
                files["<events>"] = events(os.path.join(root, name))
                continue
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            if name == "journal.bin":
                data = journal(data)
            elif name == "summary.ckpt":
                data = checkpoint(data)
            files[rel] = data
    return files


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["series", "compact"])
def test_files_equal_the_cxx_recorders_byte_for_byte(tmp_path, record_reference, mode):
    options = ({"per_filter_series": True, "tensorboard": True} if mode == "series"
               else {"journal_compact_bytes": 2048})  # the journal is compacted every few records
    script = train(str(tmp_path / "py_run"), str(tmp_path), steps=40, every=4, tau=1e-3, **options)
    subprocess.run([record_reference, script], check=True)
    py, cxx = run_files(tmp_path / "py_run"), run_files(tmp_path / "cxx_run")
    assert sorted(py) == sorted(cxx)
    expect = {"metrics.csv", "filter_summary.csv", os.path.join("fevo-state", "journal.bin")}
    if mode == "series":
        expect |= {"<events>", os.path.join("series", "index.csv"), os.path.join("series", "steps.npy")}
    else:
        expect.add(os.path.join("fevo-state", "summary.ckpt"))
    assert expect <= set(py), sorted(py)
    for name in sorted(py):
        assert py[name] == cxx[name], name
    run = fevo.read_run(tmp_path / "py_run")
    assert len(run.metrics) == 10 * 3
    assert list(run.metrics["layer"][:3]) == ["features.0.weight", "features.2.weight", "seq.weight"]


def test_metrics_are_those_of_fevo_compute(tmp_path):
    rng = np.random.default_rng(SEED)
    w = {"a": rng.standard_normal((6, 4, 3, 3)).astype(np.float32),
         "b,c": rng.standard_normal((5, 2, 1, 1)).astype(np.float32)}
    history = [{k: v.copy() for k, v in w.items()}]
    with fevo.Recorder(w, 0.01, tmp_path, every=2, per_filter_series=True) as rec:
        for step in range(1, 7):
            for v in w.values():
                v += rng.standard_normal(v.shape).astype(np.float32) * 0.01
            if step % 2 == 0:
                history.append({k: v.copy() for k, v in w.items()})
            got = rec.step(step)
            if got:
                for name, m in got.items():
                    e = fevo.compute(history[-2][name], history[-1][name], 0.01)
                    assert (m.D, m.S, m.Z, m.n_filters, m.D_per_weight) == (e.D, e.S, e.Z, e.n_filters, e.D_per_weight)
        assert rec.records == 3 and rec.last_recorded_step == 6 and rec.snapshot_step == 6
        assert rec.copy_bytes == sum(v.nbytes for v in w.values())
    run = fevo.read_run(tmp_path)
    m = run.metrics
    assert list(m.columns) == ["step_prev", "step", "layer", "D", "S", "Z", "n_filters", "nonfinite", "D_per_weight"]
    assert list(m["layer"]) == ["a", "b,c"] * 3
    assert list(m["step"]) == [2, 2, 4, 4, 6, 6] and list(m["step_prev"]) == [0, 0, 2, 2, 4, 4]
    for k in range(3):
        for name in w:
            e = fevo.compute(history[k][name], history[k + 1][name], 0.01, per_filter=True)
            row = m[(m["layer"] == name) & (m["step"] == 2 * (k + 1))].iloc[0]
            assert (row.D, row.S, row.Z, row.D_per_weight) == (e.D, e.S, e.Z, e.D_per_weight)
            np.testing.assert_array_equal(run.series[name]["D"][k], e.filters.D)
            np.testing.assert_array_equal(run.series[name]["S"][k], e.filters.S)
    assert isinstance(run.series["a"]["D"], np.memmap)
    np.testing.assert_array_equal(run.steps, [[0, 2], [2, 4], [4, 6]])
    fs = run.filter_summary
    assert list(fs.columns) == ["layer", "filter", "steps", "D_mean", "D_min", "D_max", "frac_S_zero", "frac_Z_one"]
    assert len(fs) == 6 + 5 and (fs["steps"] == 3).all()


def test_layer_names_that_read_like_numbers_stay_strings(tmp_path):
    w = {"nan": np.ones((2, 2, 1, 1), np.float32), "1": np.ones((2, 2, 1, 1), np.float32)}
    with fevo.Recorder(w, 0.1, tmp_path, every=1) as rec:
        w["nan"][0] = np.nan
        rec.step(1)
    m = fevo.read_run(tmp_path).metrics
    assert list(m["layer"]) == ["nan", "1"]
    assert np.isnan(m["D"][0]) and m["nonfinite"][0] == 2 and m["D"][1] == 0.0
    assert np.isnan(m["D_per_weight"][0]) and m["D_per_weight"][1] == 0.0


def test_read_run_reads_a_run_recorded_before_the_D_per_weight_column(tmp_path):
    (tmp_path / "metrics.csv").write_text("step_prev,step,layer,D,S,Z,n_filters,nonfinite\n"
                                          "0,1,conv1,0.5,0.25,nan,4,0\n")
    m = fevo.read_run(tmp_path).metrics
    assert list(m.columns) == ["step_prev", "step", "layer", "D", "S", "Z", "n_filters", "nonfinite"]
    assert m["D"][0] == 0.5 and np.isnan(m["Z"][0])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_without_losing_or_doubling_a_row(tmp_path):
    """Three kills at random moments (seeded by the run's seed), then a run to the end: the files
    equal an uninterrupted run's (the event file modulo wall times)."""
    worker = [sys.executable, os.path.join(HERE, "record_worker.py")]
    steps = 120
    for mode in ("compact", "series"):
        ref = str(tmp_path / f"ref-{mode}")
        subprocess.run(worker + [ref, mode, str(SEED), str(steps)], check=True, stdout=subprocess.DEVNULL)
        run = str(tmp_path / f"run-{mode}")
        rnd = random.Random(f"{SEED}-{mode}")
        killed_at = []
        for _ in range(3):
            p = subprocess.Popen(worker + [run, mode, str(SEED), str(steps)], stdout=subprocess.PIPE, text=True)
            first = p.stdout.readline()
            assert first.startswith("resumed"), first
            time.sleep(rnd.uniform(0.0, 0.4))
            p.send_signal(signal.SIGKILL)
            rest = p.stdout.read()
            p.wait()
            done = [int(line.split()[1]) for line in rest.splitlines() if line.startswith("step")]
            killed_at.append((first.split()[1], done[-1] if done else None))
        out = subprocess.run(worker + [run, mode, str(SEED), str(steps)], check=True, capture_output=True, text=True)
        assert out.stdout.rstrip().endswith("done"), out.stdout[-200:]
        got, want = run_files(run), run_files(ref)
        assert sorted(got) == sorted(want), (mode, killed_at)
        for name in sorted(want):
            if name.startswith("fevo-state"):
                continue  # checkpoints fall where each session compacted
            assert got[name] == want[name], (mode, name, killed_at)
        m = fevo.read_run(run).metrics
        assert len(m) == 3 * steps and not m.duplicated(["step", "layer"]).any()
        print(mode, "killed after (resumed, last step done):", killed_at)


def test_replayed_steps_are_skipped_and_gaps_show(tmp_path):
    w = {"a": np.zeros((2, 2, 3, 3), np.float32)}
    with fevo.Recorder(w, 0.1, tmp_path, every=1) as rec:
        for step in (1, 2, 3):
            w["a"] += 1
            rec.step(step)
    with fevo.Recorder(w, 0.1, tmp_path, every=1, start_step=1) as rec:  # restarted from step 1
        assert rec.last_recorded_step == 3
        assert rec.step(2) == {} and rec.step(3) == {}
        w["a"] += 1
        assert list(rec.step(4)) == ["a"]
    with fevo.Recorder(w, 0.1, tmp_path, every=1, start_step=10) as rec:  # a gap: 4 -> 10
        rec.step(11)
    m = fevo.read_run(tmp_path).metrics
    assert list(zip(m["step_prev"], m["step"])) == [(0, 1), (1, 2), (2, 3), (3, 4), (10, 11)]


def test_recorder_errors(tmp_path):
    w32 = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(fevo.Error, match="one element type"):
        fevo.Recorder({"a": w32, "b": w32.astype(np.float64)}, 0.1, tmp_path / "x")
    with pytest.raises(fevo.Error, match="no layer to record"):
        fevo.Recorder(torch.nn.Linear(3, 4), 0.1, tmp_path / "x")
    with pytest.raises(fevo.Error, match="model must be a torch.nn.Module"):
        fevo.Recorder(object(), 0.1, tmp_path / "x")
    with pytest.raises(fevo.Error, match="every must be a positive int"):
        fevo.Recorder({"a": w32}, 0.1, tmp_path / "x", every=0)
    with pytest.raises(fevo.Error, match="tau must be finite"):
        fevo.Recorder({"a": w32}, -0.1, tmp_path / "x")
    with pytest.raises(fevo.Error, match=r"layer 'a': weights: dtype int32"):
        fevo.Recorder({"a": w32.astype(np.int32)}, 0.1, tmp_path / "x")
    rec = fevo.Recorder({"a": w32}, 0.1, tmp_path / "y")
    with pytest.raises(fevo.Error, match="in use by another recorder|locked"):
        fevo.Recorder({"a": w32}, 0.1, tmp_path / "y")
    with pytest.raises(fevo.Error, match="must be greater than the kept snapshot"):
        rec.record(0)
    rec.close()
    rec.close()
    with pytest.raises(fevo.Error, match="after close"):
        rec.record(5)
    with pytest.raises(fevo.Error, match="recorded with other layers|layer"):
        fevo.Recorder({"b": w32}, 0.1, tmp_path / "y")
    with pytest.raises(fevo.Error, match="already holds a run"):
        fevo.Recorder({"a": w32}, 0.1, tmp_path / "y", resume=False)


def test_weights_that_moved_are_refused(tmp_path):
    model = torch.nn.Conv2d(3, 4, 3)
    rec = fevo.Recorder(model, 0.1, tmp_path)
    model.weight.data = model.weight.data.clone()
    with pytest.raises(fevo.Error, match="layer 'weight': its weights moved in memory"):
        rec.record(10)
    rec.close()


def test_channels_last_weights(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)).to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    before = [p.detach().clone() for p in (model[0].weight, model[1].weight)]
    with fevo.Recorder(model, 1e-3, tmp_path) as rec:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-2)
        got = rec.record(1)
    for (name, m), b, p in zip(got.items(), before, (model[0].weight, model[1].weight)):
        e = fevo.compute(b, p, 1e-3)
        assert (m.S, m.Z) == (e.S, e.Z), name
        assert m.D == pytest.approx(e.D, rel=1e-6)


@pytest.mark.slow
def test_report_tool_reads_a_python_run(tmp_path):
    w = {f"conv{k}": np.zeros((4, 3, 3, 3), np.float32) for k in range(3)}
    with fevo.Recorder(w, 1e-3, tmp_path / "run", every=1) as rec:
        for step in range(1, 6):
            for v in w.values():
                v += np.float32(0.01 * step)
            rec.step(step)
    pythons = [p for p in (os.environ.get("FEVO_REPORT_PYTHON"), sys.executable, shutil.which("python3")) if p]
    for py in pythons:
        if subprocess.run([py, "-c", "import matplotlib, numpy, scipy"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no python with matplotlib and scipy for tools/fevo_report.py (set FEVO_REPORT_PYTHON)")
    r = subprocess.run([py, os.path.join(ROOT, "tools", "fevo_report.py"), str(tmp_path / "run"), "--out",
                        str(tmp_path / "report")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].endswith("report.html")
