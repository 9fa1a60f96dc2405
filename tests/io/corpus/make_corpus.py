#!/usr/bin/env python3
"""Regenerates the fuzzers' seed corpus (small files, committed): valid files from the real writers
(NumPy, the safetensors package) and a few malformed ones.  python3 make_corpus.py  (in this dir)"""
import os
import struct

import numpy as np
import ml_dtypes
from safetensors.numpy import save_file

here = os.path.dirname(os.path.abspath(__file__))
st = os.path.join(here, "safetensors")
npy = os.path.join(here, "npy")
npz = os.path.join(here, "npz")
for d in (st, npy, npz):
    os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(1)


def raw_st(name, header, data=b"", length=None):
    h = header.encode()
    with open(os.path.join(st, name), "wb") as f:
        f.write(struct.pack("<Q", len(h) if length is None else length) + h + data)


# valid, from the reference writer
save_file({"conv.weight": rng.standard_normal((2, 3, 2, 2)).astype(np.float32),
           "fc.weight": rng.standard_normal((3, 4)).astype(np.float16)},
          os.path.join(st, "valid_f32_f16.safetensors"), metadata={"step": "7"})
save_file({"w": rng.standard_normal((2, 1, 1, 3)).astype(ml_dtypes.bfloat16),
           "d": rng.standard_normal((1, 2, 1, 1)).astype(np.float64)},
          os.path.join(st, "valid_bf16_f64.safetensors"))
save_file({}, os.path.join(st, "valid_empty.safetensors"))
# hand-built: unaligned data, other dtypes, and malformed headers
raw_st("unaligned_f64.safetensors", '{"w":{"dtype":"F64","shape":[1,1,1,2],"data_offsets":[0,16]}}', bytes(16))
raw_st("other_dtypes.safetensors",
       '{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F4","shape":[4],"data_offsets":[8,10]},'
       '"c":{"dtype":"BOOL","shape":[2],"data_offsets":[10,12]}}', bytes(12))
raw_st("overlap.safetensors",
       '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}',
       bytes(16))
raw_st("duplicate.safetensors",
       '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
       bytes(8))
raw_st("metadata_nonstring.safetensors", '{"__metadata__":{"step":3}}')
raw_st("header_too_long.safetensors", '{}', b"", length=2**64 - 1)

# .npy from NumPy: versions, orders, dtypes
np.save(os.path.join(npy, "f32_4d.npy"), rng.standard_normal((2, 2, 1, 3)).astype(np.float32))
np.save(os.path.join(npy, "f16_2d.npy"), rng.standard_normal((3, 2)).astype(np.float16))
np.save(os.path.join(npy, "f64_fortran.npy"), np.asfortranarray(rng.standard_normal((2, 3, 2))))
np.save(os.path.join(npy, "f32_big_endian.npy"), rng.standard_normal((2, 2)).astype(">f4"))
np.save(os.path.join(npy, "bf16.npy"), rng.standard_normal((2, 2, 1, 1)).astype(ml_dtypes.bfloat16))
np.save(os.path.join(npy, "scalar.npy"), np.float32(1.5))
for v in [(2, 0), (3, 0)]:
    with open(os.path.join(npy, f"v{v[0]}.npy"), "wb") as f:
        np.lib.format.write_array(f, rng.standard_normal((2, 1, 1, 2)).astype(np.float32), version=v)
with open(os.path.join(npy, "truncated.npy"), "wb") as f:
    f.write(open(os.path.join(npy, "f32_4d.npy"), "rb").read()[:-1])

# .npz from NumPy: stored and deflated members, an empty archive, and a truncated one
np.savez(os.path.join(npz, "stored.npz"), conv=rng.standard_normal((2, 2, 1, 3)).astype(np.float32),
         fc=rng.standard_normal((3, 2)).astype(np.float16))
np.savez_compressed(os.path.join(npz, "deflated.npz"), w=rng.standard_normal((2, 1, 1, 2)).astype(np.float32),
                    b=np.asfortranarray(rng.standard_normal((2, 3))))
np.savez(os.path.join(npz, "empty.npz"))
with open(os.path.join(npz, "truncated.npz"), "wb") as f:
    f.write(open(os.path.join(npz, "stored.npz"), "rb").read()[:-30])
