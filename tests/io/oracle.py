#!/usr/bin/env python3
"""Oracle test of fevo::io against the real writers and readers.

  oracle.py write DIR    NumPy writes .npy/.npz files and the reference `safetensors` package
                         writes safetensors files of every dtype fevo analyses (F16, BF16, F32,
                         F64); every array's values are dumped as raw little-endian float64
                         (exact for all four types) and listed in DIR/manifest.json.
  (then fevo_test_io "[oracle]" reads every file with fevo::io, compares dtype, shape and every
   value exactly, and writes the same arrays back with fevo's writers, listed in
   DIR/cpp/manifest.json)
  oracle.py verify DIR   NumPy and `safetensors` read fevo's files back and compare them exactly.

Needs numpy, safetensors and ml_dtypes (bfloat16):  python3 -m pip install numpy safetensors ml_dtypes
A missing package fails the test. The seed is FEVO_TEST_SEED when set, else random; it is printed.
"""
import json
import os
import random
import sys

try:
    import numpy as np
    import ml_dtypes
    import safetensors
    from safetensors.numpy import save_file, load_file
except ImportError as e:  # fail, never skip: the test command installs these packages
    print(f"io.oracle: FAILED: cannot import {e.name!r}; the oracle test needs numpy, safetensors "
          f"and ml_dtypes: python3 -m pip install numpy safetensors ml_dtypes", file=sys.stderr)
    sys.exit(1)

DTYPES = {
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
}


def sample(rng, dt, shape):
    """Random normal values with the special ones mixed in (NaN, +-Inf, -0, a subnormal, max)."""
    a = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 30.0])).astype(dt)
    flat = a.reshape(-1)
    if flat.size >= 8:
        info = ml_dtypes.finfo(dt) if dt == DTYPES["BF16"] else np.finfo(dt)
        specials = [np.nan, np.inf, -np.inf, -0.0, float(info.smallest_subnormal),
                    float(info.max), -float(info.max), float(info.tiny)]
        idx = rng.choice(flat.size, size=len(specials), replace=False)
        for i, v in zip(idx, specials):
            flat[i] = dt.type(v)
    return a


def dump_values(d, name, arr):
    """Values in C order as little-endian float64 (exact for f16, bf16, f32 and f64)."""
    path = os.path.join(d, name + ".f64")
    np.ascontiguousarray(arr).astype("<f8").tofile(path)
    return os.path.basename(path)


def write(d):
    seed = int(os.environ.get("FEVO_TEST_SEED") or random.SystemRandom().randrange(2**63))
    print(f"io.oracle seed: {seed} (set FEVO_TEST_SEED={seed} to reproduce); numpy "
          f"{np.__version__}, safetensors {safetensors.__version__}, ml_dtypes {ml_dtypes.__version__}")
    rng = np.random.default_rng(seed % 2**63)
    os.makedirs(d, exist_ok=True)
    entries = []

    def add(file, fmt, key, arr, **extra):
        vname = f"{file}.{key or 'array'}".replace("/", "_")
        e = {"file": file, "format": fmt, "key": key, "dtype": name_of(arr.dtype),
             "shape": list(arr.shape), "values": dump_values(d, vname, arr)}
        e.update(extra)
        entries.append(e)

    def name_of(dt):
        for n, t in DTYPES.items():
            if np.dtype(dt).newbyteorder("<") == t.newbyteorder("<"):
                return n
        raise ValueError(dt)

    # safetensors, one file per dtype (the reference package, torch-free numpy API; BF16 through
    # ml_dtypes), plus one file mixing every dtype.
    mixed = {}
    for n, dt in DTYPES.items():
        tensors = {
            "features.0.weight": sample(rng, dt, (8, 3, 3, 3)),
            "features.3.weight": sample(rng, dt, (16, 8, 5, 5)),
            "classifier.weight": sample(rng, dt, (10, 20)),
            "classifier.bias": sample(rng, dt, (10,)),
            "hwio_kernel": sample(rng, dt, (3, 3, 4, 6)),
            "empty": np.zeros((0, 3), dt),
        }
        meta = {"step": str(int(rng.integers(0, 10**6))), "format": "np", "note": "ünïcødé \"q\""}
        file = f"st_{n.lower()}.safetensors"
        save_file(tensors, os.path.join(d, file), metadata=meta)
        for k, a in tensors.items():
            add(file, "safetensors", k, a, metadata=meta)
        mixed[f"{n.lower()}.w"] = sample(rng, dt, (4, 2, 3, 3))
        mixed[f"{n.lower()}.odd"] = sample(rng, dt, (3, 1, 1, 1))
    save_file(mixed, os.path.join(d, "st_mixed.safetensors"))
    for k, a in mixed.items():
        add("st_mixed.safetensors", "safetensors", k, a)

    # .npy: every dtype, C and Fortran order, big-endian, format versions 1.0, 2.0 and 3.0.
    for n, dt in DTYPES.items():
        ln = n.lower()
        shapes = {"4d": (6, 4, 3, 3), "2d": (7, 5), "1d": (11,), "0d": (), "empty": (0, 4)}
        for tag, shape in shapes.items():
            a = sample(rng, dt, shape)
            file = f"npy_{ln}_{tag}.npy"
            np.save(os.path.join(d, file), a)
            add(file, "npy", "", a, void2=(n == "BF16"))
        a = np.asfortranarray(sample(rng, dt, (5, 4, 3, 2)))
        np.save(os.path.join(d, f"npy_{ln}_fortran.npy"), a)
        add(f"npy_{ln}_fortran.npy", "npy", "", a, fortran=True, void2=(n == "BF16"))
        for ver in [(2, 0), (3, 0)]:
            a = sample(rng, dt, (4, 3, 2, 2))
            file = f"npy_{ln}_v{ver[0]}.npy"
            with open(os.path.join(d, file), "wb") as f:
                np.lib.format.write_array(f, a, version=ver)
            add(file, "npy", "", a, void2=(n == "BF16"), version=f"{ver[0]}.0")
        if n != "BF16":
            a = sample(rng, dt, (3, 4, 2, 2)).astype(dt.newbyteorder(">"))
            file = f"npy_{ln}_big_endian.npy"
            np.save(os.path.join(d, file), a)
            add(file, "npy", "", a.astype(dt))

    # .npz: np.savez and np.savez_compressed, several dtypes per archive.
    for fn, compressed in [("plain.npz", False), ("compressed.npz", True)]:
        arrays = {f"{n.lower()}_conv": sample(rng, dt, (4, 3, 3, 3)) for n, dt in DTYPES.items()
                  if n != "BF16"}
        arrays["fc"] = sample(rng, np.dtype(np.float32), (6, 9))
        arrays["bf16_conv"] = sample(rng, DTYPES["BF16"], (2, 3, 1, 1))
        (np.savez_compressed if compressed else np.savez)(os.path.join(d, fn), **arrays)
        for k, a in arrays.items():
            add(fn, "npz", k, a, void2=(a.dtype == DTYPES["BF16"]))

    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"seed": seed, "entries": entries}, f, indent=1, ensure_ascii=False)
    print(f"io.oracle: wrote {len(entries)} arrays in "
          f"{len(set(e['file'] for e in entries))} files to {d}")


def same(a, b):
    """Bit-level agreement of values: equal, or both NaN, and -0 distinct from +0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        return False
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and
                np.array_equal(a[~nan], b[~nan]) and
                np.array_equal(np.signbit(a[~nan]), np.signbit(b[~nan])))


def verify(d):
    cpp = os.path.join(d, "cpp")
    with open(os.path.join(cpp, "manifest.json")) as f:
        entries = json.load(f)["entries"]
    bad = 0
    cache = {}
    for e in entries:
        path = os.path.join(cpp, e["file"])
        want = np.fromfile(os.path.join(d, e["values"]), dtype="<f8")
        if e["format"] == "safetensors":
            if path not in cache:
                cache[path] = load_file(path)
                with safetensors.safe_open(path, framework="np") as f:
                    md = f.metadata() or {}
                if md != e.get("metadata", {}):
                    print(f"FAIL {e['file']}: metadata {md} != {e.get('metadata')}")
                    bad += 1
            a = cache[path][e["key"]]
        else:
            a = np.load(path)
            if e["dtype"] == "BF16":
                if a.dtype != np.dtype("V2"):
                    print(f"FAIL {e['file']}: bf16 saved as {a.dtype}, expected V2")
                    bad += 1
                a = a.view(ml_dtypes.bfloat16)
            if a.dtype.byteorder == ">" or a.flags.f_contiguous and a.ndim > 1 and not a.flags.c_contiguous:
                print(f"FAIL {e['file']}: fevo wrote byte order {a.dtype.byteorder}, fortran={a.flags.f_contiguous}")
                bad += 1
        if a.dtype.newbyteorder("<") != DTYPES[e["dtype"]].newbyteorder("<"):
            print(f"FAIL {e['file']} {e['key']}: dtype {a.dtype}, expected {e['dtype']}")
            bad += 1
            continue
        if list(a.shape) != e["shape"]:
            print(f"FAIL {e['file']} {e['key']}: shape {a.shape}, expected {e['shape']}")
            bad += 1
            continue
        if not same(a.astype(np.float64), want):
            print(f"FAIL {e['file']} {e['key']}: values differ")
            bad += 1
    print(f"io.oracle verify: {len(entries) - bad} of {len(entries)} arrays written by fevo read "
          f"back identically by numpy / safetensors")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "verify"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "write":
        write(sys.argv[2])
        sys.exit(0)
    sys.exit(verify(sys.argv[2]))
