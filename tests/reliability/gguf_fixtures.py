"""Broken GGUF files for the hostile-input replay and the import fuzzer, made from a small valid one
(``test_gguf.write_gguf``) by rewriting it with the ``gguf`` package: a tensor dropped, a shape
changed, NaN weights, a metadata value replaced, or header bytes patched."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def base(path: Path) -> Path:
    from test_gguf import write_gguf

    write_gguf(path)
    return path


def rewrite(src: Path, dst: Path, drop=(), tensors=None, kv=None) -> Path:
    """``src`` copied to ``dst`` with tensors in ``drop`` left out, ``tensors[name](array)``
    replacing an array (F32 tensors only) and ``kv[key]`` replacing a metadata value (ints)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if kv and key in kv:
            writer.add_key_value(key, kv[key], vtype)
            continue
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
            else:
                val = [field.parts[i][0].item() for i in field.data]
            writer.add_key_value(key, val, vtype, sub_type=sub)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[-1]).decode("utf-8", "replace"), vtype)
        else:
            writer.add_key_value(key, field.parts[-1][0].item(), vtype)
    for t in reader.tensors:
        if t.name in drop:
            continue
        data = np.array(t.data)
        if tensors and t.name in tensors:
            writer.add_tensor(t.name, tensors[t.name](data.astype(np.float32)))
        elif t.tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, data)
        else:
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def patch(src: Path, dst: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(src.read_bytes())
    struct.pack_into("<" + fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


def make_all(folder: Path) -> None:
    """The replay's fx/*.gguf fixtures."""
    folder.mkdir(parents=True, exist_ok=True)
    good = base(folder / "tiny_llama.gguf")
    patch(good, folder / "ver99.gguf", 4, "I", 99)
    patch(good, folder / "ntensors.gguf", 8, "Q", 2**62)
    patch(good, folder / "nkv.gguf", 16, "Q", 2**62)
    rewrite(good, folder / "missing_q.gguf", drop={"blk.0.attn_q.weight"})
    rewrite(good, folder / "zero_layers.gguf", kv={"llama.block_count": 0},
            drop={t for t in _names(good) if t.startswith("blk.")})  # fmt: skip
    grow = {"blk.0.attn_norm.weight": lambda a: np.ones(a.size + 4, np.float32)}
    rewrite(good, folder / "wrongshape.gguf", tensors=grow)
    rewrite(good, folder / "nan.gguf",
            tensors={"blk.0.attn_norm.weight": lambda a: np.full_like(a, np.nan)})  # fmt: skip
    rewrite(good, folder / "layers2_tensors1.gguf",
            drop={t for t in _names(good) if t.startswith("blk.1.")})  # fmt: skip


def _names(path: Path):
    import gguf

    return [t.name for t in gguf.GGUFReader(str(path)).tensors]


if __name__ == "__main__":
    make_all(Path(sys.argv[1]))
