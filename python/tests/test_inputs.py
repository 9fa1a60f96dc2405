"""Bad input raises fevo.Error (a ValueError) with the C++ library's message, never crashes, and
nothing is ever copied behind the caller's back."""
import ctypes

import numpy as np
import pytest

import fevo

GOOD = np.zeros((4, 3, 3, 3), np.float32)


def raises(match, f, *args, **kwargs):
    with pytest.raises(fevo.Error, match=match) as e:
        f(*args, **kwargs)
    assert str(e.value).startswith("fevo: ")
    return str(e.value)


# ---- a DLPack producer for memory fevo must not touch ------------------------------------------

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_no_delete = DELETER(lambda p: None)


class FakeDevice:
    """An array on DLPack device `device_type` (2: CUDA) at an address no one may read: fevo must
    refuse it, or hand it to the CUDA backend, before any byte is read on the host."""

    def __init__(self, shape=(4, 3, 3, 3), device_type=2, code=2, bits=32):
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        strides, s = [], 1
        for n in reversed(shape):
            strides.insert(0, s)
            s *= n
        self.strides = (ctypes.c_int64 * len(shape))(*strides)
        self.m = DLManagedTensor()
        self.m.dl_tensor = DLTensor(ctypes.c_void_p(16), DLDevice(device_type, 0), len(shape), DLDataType(code, bits, 1),
                                    self.shape, self.strides, 0)
        self.m.deleter = _no_delete

    def __dlpack__(self, **kwargs):
        return _capsule_new(ctypes.addressof(self.m), b"dltensor", None)

    def __dlpack_device__(self):
        return (self.m.dl_tensor.device.device_type, 0)


# ---- the cases ----------------------------------------------------------------------------------

def test_shape_mismatch():
    raises(r"shape mismatch: prev has extents \{4, 3, 3, 3\} but next has \{4, 3, 3, 2\}",
           fevo.compute, GOOD, np.zeros((4, 3, 3, 2), np.float32), 0.1)
    raises(r"extent", fevo.compute, np.zeros((4, 0, 3, 3), np.float32), np.zeros((4, 0, 3, 3), np.float32), 0.1)


def test_different_devices():
    raises(r"prev is on cpu but next is on cuda:0; fevo never moves data", fevo.compute, GOOD, FakeDevice(), 0.1)
    raises(r"prev is on cuda:0 but next is on cpu", fevo.compute_partial, FakeDevice(), GOOD, 0.1)
    raises(r"layer 'x': prev is on cpu but next is on cuda:0", fevo.compute_layers, {"x": (GOOD, FakeDevice())}, 0.1)


def test_cuda_memory_without_a_usable_device():
    if fevo.cuda_available():
        pytest.skip("a CUDA device is present")
    # Without CUDA compiled in: said so. With it but no GPU: the CUDA runtime's error. No crash.
    raises(r"CUDA|cuda", fevo.compute, FakeDevice(), FakeDevice(), 0.1)


def test_other_devices():
    raises(r"DLPack device type 7 is not one fevo reads", fevo.compute, FakeDevice(device_type=7), GOOD, 0.1)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int16, np.bool_, np.complex64, np.complex128])
def test_integer_complex_and_bool_dtypes(dtype):
    a = np.zeros((4, 3, 3, 3), dtype)
    raises(r"dtype \w+ is not one fevo reads: float32, float64, float16 or bfloat16", fevo.compute, a, a, 0.1)


def test_mixed_dtypes():
    raises(r"prev is float32 but next is float16", fevo.compute, GOOD, GOOD.astype(np.float16), 0.1)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4, 5, 6)])
def test_ranks_other_than_2_to_4(shape):
    a = np.zeros(shape, np.float32)
    raises(rf"an array of {len(shape)} dimensions .* is not a weight fevo reads", fevo.compute, a, a, 0.1)


@pytest.mark.parametrize("axis", range(4))
def test_negative_strides(axis):
    idx = [slice(None)] * 4
    idx[axis] = slice(None, None, -1)
    rev = GOOD[tuple(idx)]
    msg = raises(rf"prev: stride\({axis}\) .* is negative", fevo.compute, rev, GOOD, 0.1)
    assert "in elements" in msg


@pytest.mark.parametrize("tau, match", [(-1.0, "tau must be finite and non-negative, got -1"),
                                        (float("nan"), "got nan"), (float("inf"), "got inf"),
                                        (-float("inf"), "got -inf"),
                                        (1e300, "not finite in the compute type")])
def test_bad_tau(tau, match):
    raises(match, fevo.compute, GOOD, GOOD, tau)
    raises(match, fevo.compute_partial, GOOD, GOOD, tau)
    raises(match, fevo.compute_layers, {"a": (GOOD, GOOD)}, tau)


def test_tau_too_large_for_float32_is_fine_for_float64():
    a = GOOD.astype(np.float64)
    assert fevo.compute(a, a, 1e300).S == 0.0


def test_arrays_that_need_a_copy_to_be_read():
    raises(r"cannot be read in place \(BufferError: .*byte order", fevo.compute, GOOD.astype(">f4"), GOOD, 0.1)
    rec = np.zeros((4, 3, 3, 3), dtype=[("w", "<f4"), ("pad", "u1")])  # strides of 5 bytes
    raises(r"cannot be read in place", fevo.compute, rec["w"], GOOD, 0.1)


@pytest.mark.parametrize("bad", [[1.0, 2.0], None, "weights", 3.0])
def test_not_an_array(bad):
    raises(r"expected an array .* got (list|NoneType|str|float)", fevo.compute, bad, GOOD, 0.1)


def test_bad_layout():
    raises(r"layout must be 'oihw' \(PyTorch\), 'hwio' .* got 'nchw'", fevo.compute, GOOD, GOOD, 0.1, layout="nchw")


def test_compute_layers_names_the_layer():
    raises(r"layer 'conv2': shape mismatch", fevo.compute_layers,
           {"conv1": (GOOD, GOOD), "conv2": (GOOD, GOOD[:, :2])}, 0.1)
    raises(r"layer 'conv2': next: dtype int32", fevo.compute_layers,
           {"conv1": (GOOD, GOOD), "conv2": (GOOD, GOOD.astype(np.int32))}, 0.1)
    raises(r"layer 'c': expected a \(prev, next\) pair", fevo.compute_layers, {"c": GOOD}, 0.1)
    raises(r"each layer is a \(name, prev, next\) tuple", fevo.compute_layers, [("c", GOOD)], 0.1)
    raises(r"a layer name must be a str", fevo.compute_layers, [(1, GOOD, GOOD)], 0.1)


def test_error_is_a_value_error():
    assert issubclass(fevo.Error, ValueError)


torch = pytest.importorskip("torch")


def test_torch_tensors_that_cannot_be_read_in_place():
    t = torch.rand(4, 3, 3, 3)
    raises(r"negated view", fevo.compute, torch._neg_view(t), t, 0.1)
    raises(r"has layout sparse_coo; fevo reads strided tensors in place", fevo.compute, t.to_sparse(), t, 0.1)
    raises(r"memory on device meta is not one fevo reads", fevo.compute, torch.zeros(4, 3, 3, 3, device="meta"), t, 0.1)
    raises(r"dtype int64", fevo.compute, t.long(), t.long(), 0.1)
    raises(r"dtype complex64", fevo.compute, torch.complex(t, t), torch.complex(t, t), 0.1)
    raises(r"prev is bfloat16 but next is float32", fevo.compute, t.bfloat16(), t, 0.1)
    raises(r"shape mismatch", fevo.compute, t, t.transpose(0, 1), 0.1)
    raises(r"an array of 5 dimensions", fevo.compute, t[None], t[None], 0.1)

    class Wrapper(torch.Tensor):  # a subclass whose attributes fail: refused, not a crash
        @property
        def layout(self):
            raise RuntimeError("no layout here")
    raises(r"cannot be read in place \(RuntimeError: no layout here\)", fevo.compute, t.as_subclass(Wrapper), t, 0.1)


def test_torch_parameters_that_require_grad_are_read_in_place():
    w = torch.nn.Parameter(torch.rand(4, 3, 3, 3))
    before = w.detach().clone()
    with torch.no_grad():
        w.mul_(2)
    m = fevo.compute(before, w, 0.0)
    assert m.D == pytest.approx(float((before.double() ** 2).sum() / 4), rel=1e-6)
    assert w.requires_grad and w.grad is None
