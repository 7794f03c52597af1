"""A GGUF file's metadata and tensor table.

MLX's own GGUF reader (``mx.load``) knows only F32/F16/Q4_0/Q4_1/Q8_0, crashes on other types
with a message that names neither tensor nor type, hands BF16 over as (lossy) float16 and trusts
the file's length. This module walks the header itself, so the importer can refuse an unknown
quantisation or a truncated file by name *before* anything is loaded or written; the tensors'
bytes are then decoded by ``gguf_quants`` in chunks (``gguf_stream``).

GGUF layout (little endian): magic ``GGUF``, u32 version, u64 tensor count, u64 key/value count,
the key/values, then per tensor: name, u32 n_dims, u64 dims (innermost first), u32 type, u64 offset
relative to the data section, which starts at the next multiple of ``general.alignment`` (32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from cherry_mlx.models.gguf_quants import BLOCKS

# type id -> (name, elements per block, bytes per block); the types the importer can dequantise.
SUPPORTED = BLOCKS
# Names of the others, for the error message only: the rare low-bit codebook types (IQ1-IQ3),
# ternary and FP4 types, and integer tensors no language model's weights use.
OTHER_TYPES = {
    9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 21: "IQ3_S",
    22: "IQ2_S", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4", 40: "NVFP4",
}  # fmt: skip
SUPPORTED_NAMES = ", ".join(name for name, _, _ in SUPPORTED.values())
# Fixed-size scalar value types of the key/value section: type id -> struct format.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[int, ...]  # numpy order (outermost first)
    type_id: int
    offset: int  # absolute, from the start of the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return SUPPORTED.get(
            self.type_id, (OTHER_TYPES.get(self.type_id, f"type {self.type_id}"),)
        )[0]


class _Cursor:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(
                f"{self.path} is truncated (its header ends early); download or export it again"
            )
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out[0] if len(out) == 1 else out

    def string(self) -> str:
        n = self.take("Q")
        raw = self.take(f"{n}s")
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            itype, n = self.take("I"), self.take("Q")
            if itype in _SCALARS:  # fixed-size elements: one numpy read
                fmt = _SCALARS[itype]
                size = n * struct.calcsize(fmt)
                if self.pos + size > len(self.buf):
                    raise ValueError(f"{self.path} is truncated (its header ends early)")
                dtype = np.dtype("<" + fmt) if fmt != "?" else np.bool_
                out = np.frombuffer(self.buf, dtype, count=n, offset=self.pos).tolist()
                self.pos += size
                return out
            return [self.value(itype) for _ in range(n)]
        raise ValueError(f"{self.path}: unknown GGUF value type {vtype}; the file is corrupt")


def read_tensor_table(path: str | Path) -> Dict[str, TensorInfo]:
    """Tensor name -> info; raises ValueError for a non-GGUF, truncated or unsupported file."""
    return read_gguf(path)[0]


def read_gguf(path: str | Path) -> Tuple[Dict[str, TensorInfo], Dict[str, Any]]:
    """(tensor name -> info, metadata key -> value); ValueError for a non-GGUF, truncated or
    unsupported file."""
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < 24:
            raise ValueError(f"{path} is not a GGUF file (only {size} bytes)")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _parse(buf, path, size)
        finally:
            buf.close()


def _parse(buf, path: Path, size: int):
    cur = _Cursor(buf, path)
    if cur.take("4s") != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic); pass a .gguf model file")
    version = cur.take("I")
    if version not in (2, 3):  # 1 predates the layout; newer ones may change it
        raise ValueError(
            f"{path} is GGUF version {version}; cherry-mlx reads versions 2 and 3 (re-export it "
            "with a llama.cpp of that format)"
        )
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    meta = {}
    for _ in range(n_kv):
        key, vtype = cur.string(), cur.take("I")
        meta[key] = cur.value(vtype)
    alignment = int(meta.get("general.alignment", 32))
    raw = []
    for _ in range(n_tensors):
        name, n_dims = cur.string(), cur.take("I")
        dims = [cur.take("Q") for _ in range(n_dims)]
        raw.append((name, tuple(reversed(dims)), cur.take("I"), cur.take("Q")))
    data_start = -(-cur.pos // alignment) * alignment
    table = {}
    for name, shape, type_id, offset in raw:
        if type_id not in SUPPORTED:
            info = TensorInfo(name, shape, type_id, 0, 0)
            raise ValueError(
                f"{path}: tensor {name} is stored as {info.type_name}, which cherry-mlx cannot "
                f"dequantise; use a {SUPPORTED_NAMES} export of the model (e.g. llama-quantize "
                "--allow-requantize IN OUT Q8_0)"
            )
        _, block, block_bytes = SUPPORTED[type_id]
        count = int(np.prod(shape, dtype=np.int64))
        if count % block or (shape and shape[-1] % block):
            raise ValueError(
                f"{path}: tensor {name} has shape {shape}, which {SUPPORTED[type_id][0]} blocks "
                f"of {block} cannot tile; the file is corrupt, export it again"
            )
        nbytes = count // block * block_bytes
        table[name] = TensorInfo(name, shape, type_id, data_start + offset, nbytes)
    end = max((t.offset + t.nbytes for t in table.values()), default=data_start)
    if end > size:
        raise ValueError(
            f"{path} is truncated ({size} of {end} bytes); download or export it again"
        )
    return table, meta
