"""GGUF tensors decoded in row chunks straight into a ``.safetensors`` file.

A 270M-parameter model is ~1 GB in float32 and its embedding alone ~0.7 GB; holding every
decoded tensor (and the decoder's temporaries of the largest) in memory before saving would more
than double the output's size in peak memory. Instead the safetensors header (names, dtypes,
shapes, byte offsets) is written first, computed from the shapes alone, and each tensor follows
chunk by chunk: the file is read with plain reads (no memory map kept resident) and a chunk's
arrays are freed before the next is decoded, so the peak is the tokenizer plus one chunk.
"""

from __future__ import annotations

import json
import struct
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import mlx.core as mx
import numpy as np

from cherry_mlx.models.gguf_file import TensorInfo
from cherry_mlx.models.gguf_quants import dequantize

CHUNK_BYTES = 1 << 25  # float32 output per decode step (32 MiB)
_ST_DTYPES = {mx.float32: ("F32", 4), mx.bfloat16: ("BF16", 2), mx.float16: ("F16", 2)}
Transform = Callable[[mx.array], mx.array]


def read_rows(f, info: TensorInfo, start: int, count: int) -> mx.array:
    """Rows ``start:start+count`` of a tensor as float32, shape ``(count, *shape[1:])``."""
    rows = info.shape[0] if len(info.shape) > 1 else 1
    row_bytes = info.nbytes // rows
    f.seek(info.offset + start * row_bytes)
    raw = f.read(count * row_bytes)
    values = dequantize(mx.array(np.frombuffer(raw, dtype=np.uint8)), info.type_name)
    return values.reshape((count, *info.shape[1:]) if len(info.shape) > 1 else info.shape)


def chunks(f, info: TensorInfo, transform: Optional[Transform]) -> Iterator[mx.array]:
    """The tensor in row chunks of about ``CHUNK_BYTES``; whole when ``transform`` needs it."""
    rows = info.shape[0] if len(info.shape) > 1 else 1
    row_out = 4 * int(np.prod(info.shape, dtype=np.int64)) // rows
    step = rows if transform is not None else max(1, CHUNK_BYTES // row_out)
    for start in range(0, rows, step):
        w = read_rows(f, info, start, min(step, rows - start))
        yield transform(w) if transform is not None else w


def write_safetensors(
    path, tensors: List[Tuple[str, Tuple[int, ...], Iterable[mx.array]]], dtype, metadata=None
) -> None:
    """Write ``(name, shape, chunk iterator)`` entries as ``dtype`` in the safetensors format."""
    code, size = _ST_DTYPES[dtype]
    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape, dtype=np.int64)) * size
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-aligned
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for name, shape, parts in tensors:
            written = 0
            for w in parts:
                w = w.astype(dtype)
                if dtype != mx.float32:  # numpy has no bfloat16: write the raw 16-bit words
                    w = w.view(mx.uint16)
                data = np.array(w).tobytes()
                out.write(data)
                written += len(data)
            expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            assert written == expected, (name, written, expected)
