#!/usr/bin/env python3
"""Bad input to the fevo command: every malformed file, and every bad usage, must give exit
status 2 and exactly one line on stderr that starts with "fevo: " and names the file.

    bad_inputs.py FEVO_BINARY WORKDIR"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib


def safetensors_bytes(header, data, raw_len=None):
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    n = len(h) if raw_len is None else raw_len
    return struct.pack("<Q", n) + h + data


def good_header():
    return {"w": {"dtype": "F32", "shape": [2, 1, 1, 2], "data_offsets": [0, 16]}}


def npy_bytes(header_text, data, magic=b"\x93NUMPY", version=b"\x01\x00"):
    h = header_text.encode("latin1")
    pad = 64 - (len(magic) + 2 + 2 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return magic + version + struct.pack("<H", len(h)) + h + data


def main():
    fevo, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data16 = struct.pack("<4f", 0, 1, 2, 3)
    cases = {}
    good = safetensors_bytes(good_header(), data16)
    cases["truncated_by_one.safetensors"] = good[:-1]
    cases["header_longer_than_file.safetensors"] = safetensors_bytes(good_header(), data16, raw_len=10**6)
    cases["header_len_max.safetensors"] = struct.pack("<Q", 2**64 - 1) + b"{}"
    cases["overlap.safetensors"] = safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, data16[:12])
    cases["out_of_range.safetensors"] = safetensors_bytes(
        {"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, data16)
    cases["gap.safetensors"] = safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, data16)
    cases["trailing.safetensors"] = good + b"\0\0\0\0"
    cases["duplicate.safetensors"] = safetensors_bytes(
        b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', data16)
    cases["unknown_dtype.safetensors"] = safetensors_bytes(
        {"w": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, data16)
    cases["shape_overflow.safetensors"] = safetensors_bytes(
        {"w": {"dtype": "F32", "shape": [2**32, 2**32, 16], "data_offsets": [0, 16]}}, data16)
    cases["not_object.safetensors"] = safetensors_bytes(b"[1, 2]", b"")
    cases["bad_utf8.safetensors"] = safetensors_bytes(b'{"w\xff":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', data16)
    cases["metadata_not_string.safetensors"] = safetensors_bytes(
        {"__metadata__": {"step": 3}, **good_header()}, data16)
    cases["bad_magic.npy"] = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data16, magic=b"\x93NUMPX")
    cases["bad_version.npy"] = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data16, version=b"\x09\x00")
    cases["missing_key.npy"] = npy_bytes("{'descr': '<f4', 'shape': (4,), }", data16)
    cases["short_data.npy"] = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data16[:12])
    cases["checkpoint.pt"] = b"\x80\x02}q\x00."
    cases["zip_pickle.pth"] = b"PK\x03\x04" + b"\0" * 40
    # A zip bomb: a member that inflates far beyond any sane array (2 GiB of zeros, a few KiB packed).
    bomb = os.path.join(work, "bomb.npz")
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("w.npy", "w", force_zip64=True) as f:
            hdr = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }", b"")
            f.write(hdr)
            chunk = b"\0" * (1 << 24)
            for _ in range(128):
                f.write(chunk)
    for name, blob in cases.items():
        with open(os.path.join(work, name), "wb") as f:
            f.write(blob)
    good_path = os.path.join(work, "good_0.safetensors")
    with open(good_path, "wb") as f:
        f.write(good)

    runs = [(["inspect", os.path.join(work, n)], n) for n in list(cases) + ["bomb.npz"]]
    runs += [(["analyze", good_path, os.path.join(work, n), "--tau", "0.1", "--out", os.path.join(work, "o_" + n)], n)
             for n in list(cases) + ["bomb.npz"]]
    runs += [(["analyze", good_path, good_path, "--tau", "nan", "--out", os.path.join(work, "o")], "--tau"),
             (["analyze", good_path, "--tau", "0.1", "--out", os.path.join(work, "o")], "two snapshots"),
             (["analyze", good_path, good_path, "--tau", "0.1", "--out", os.path.join(work, "o"), "--backend", "gpu"], "--backend"),
             (["frobnicate"], "fevo"),
             (["inspect", os.path.join(work, "missing.safetensors")], "missing.safetensors")]
    bad = 0
    for args, must_name in runs:
        p = subprocess.run([fevo] + args, capture_output=True, text=True, timeout=120)
        lines = p.stderr.strip("\n").split("\n") if p.stderr else []
        ok = p.returncode == 2 and len(lines) == 1 and lines[0].startswith("fevo: ") and must_name in lines[0]
        print(("ok   " if ok else "FAIL ") + f"rc={p.returncode} {' '.join(args[:2])}: {p.stderr.strip()[:200]}")
        bad += not ok
    print(f"{len(runs) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
