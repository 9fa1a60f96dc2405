"""The installed package: the CUDA entry points are there when nvcc was (FEVO_EXPECT_CUDA=1, set by
./run.sh test where it finds nvcc), typed stubs and py.typed, help(fevo.compute), the fevo
command in the environment's scripts, the CPU kernels chosen at run time."""
import importlib.util
import os
import pydoc
import shutil
import subprocess
import sys
import sysconfig

import fevo
from fevo import _fevo


def test_cuda_entry_points_when_nvcc_was_found():
    expect = os.environ.get("FEVO_EXPECT_CUDA")
    if expect is not None:
        assert _fevo.cuda_compiled() == (expect == "1")
    if not _fevo.cuda_compiled():
        assert fevo.cuda_available() is False


def test_stubs_and_py_typed():
    here = os.path.dirname(fevo.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    with open(os.path.join(here, "_fevo.pyi")) as f:
        stub = f.read()
    for what in ("class LayerMetrics", "class Partial", "class FilterMetrics", "def compute(",
                 "def D(self) -> numpy.typing.NDArray[numpy.float64]", "class Error(ValueError)"):
        assert what in stub, what


def test_help_documents_the_equations_tau_and_the_nan_rule():
    text = pydoc.render_doc(fevo.compute, renderer=pydoc.plaintext)
    for what in ("eq. 1", "eq. 2", "eq. 3", "||f_i(t+1) - f_i(t)||^2", "|d| > tau, strictly",
                 "NaN rule", "counted in `nonfinite`", "never counted", "layout"):
        assert what in text, what


def test_the_fevo_command_is_installed():
    scripts = sysconfig.get_path("scripts")
    exe = os.path.join(scripts, "fevo")
    assert os.path.exists(exe) or shutil.which("fevo"), f"no fevo command in {scripts}"
    exe = exe if os.path.exists(exe) else shutil.which("fevo")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "analyze" in r.stdout, r.stdout + r.stderr


def test_import_alone_does_not_import_torch_or_pandas():
    r = subprocess.run([sys.executable, "-c", "import sys, fevo; print('torch' in sys.modules, 'pandas' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stdout + r.stderr


def test_cpu_kernels_chosen_at_run_time():
    # The extension is built without -march: it still runs the best kernel the CPU has, the same
    # one the installed fevo command names.
    k = fevo.cpu_kernels()
    assert k in ("avx512", "avx2", "generic"), k
    # The kernel the CPU's flags call for, as the `fevo --version` test (tests/cli/version.py) reads them.
    spec = importlib.util.spec_from_file_location(
        "fevo_cli_version_test", os.path.join(os.path.dirname(__file__), "..", "..", "tests", "cli", "version.py"))
    version_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(version_test)
    expect = version_test.expected_kernel()
    if expect is not None:
        assert k == expect, (k, expect)
    scripts = sysconfig.get_path("scripts")
    exe = os.path.join(scripts, "fevo")
    exe = exe if os.path.exists(exe) else shutil.which("fevo")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and f"CPU kernels: {k}" in r.stdout.splitlines(), r.stdout + r.stderr
