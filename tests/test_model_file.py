"""Looped, MTP and MoEE folders load in plain mlx-lm on a machine without cherry-mlx.

The folder's ``cherry_model.py`` is executed by ``mlx_lm.load(trust_remote_code=True)`` in a
subprocess where importing ``cherry_mlx`` fails (a meta-path finder refuses it, so the editable
install cannot be reached either); its logits must equal ``load_model``'s.
"""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.fusion.assemble import assemble
from cherry_mlx.models.loading import build_model, load_model, save_model

CHILD = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cherry_mlx", "cherry_mlx_cli"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Refuse())
try:
    import cherry_mlx  # noqa: F401
    raise SystemExit("the blocker failed")
except ImportError:
    pass
import mlx.core as mx, numpy as np
from mlx_lm import load
model, tok = load(sys.argv[1], trust_remote_code=True)
x = mx.array([[5, 9, 17, 3, 100, 42]], dtype=mx.int32)
np.save(sys.argv[2], np.array(model(x)))
print(type(model).__module__, type(model).__name__)
assert not any(m.startswith("cherry_mlx") for m in sys.modules)
"""


def _model(cfg, seed):
    mx.random.seed(seed)
    model = build_model(cfg)
    mx.eval(model.parameters())
    return model


def _plain_mlx_lm(folder, tmp_path):
    out = tmp_path / "logits.npy"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "BLAS" not in done.stderr  # nothing of cherry-mlx's start-up ran
    return np.load(out), done.stdout


@pytest.mark.parametrize("kind", ["looped+mtp", "moee-model", "moee-layer"])
def test_folder_loads_in_mlx_lm_without_cherry_mlx(kind, tmp_path, tiny_config):
    cfg = dict(tiny_config, num_hidden_layers=3)
    if kind == "looped+mtp":
        cfg.update(
            recurrence={"prelude": 1, "core": 1, "coda": 1, "loops": 3}, mtp={"num_heads": 2}
        )
        model = _model(cfg, 0)
    else:
        experts = [_model(cfg, 1), _model(cfg, 2)]
        model, cfg = assemble(experts, [cfg] * 2, kind.split("-")[1], top_k=1, shared=True)
    folder = save_model(model, tmp_path / "out", cfg)
    text = (folder / "cherry_model.py").read_text()
    assert "import cherry_mlx" not in text and "from cherry_mlx" not in text
    assert json.loads((folder / "config.json").read_text())["model_file"] == "cherry_model.py"
    (folder / "tokenizer.json").write_text(_tokenizer_json())
    theirs, printed = _plain_mlx_lm(folder, tmp_path)
    ours, _ = load_model(folder)
    x = mx.array([[5, 9, 17, 3, 100, 42]], dtype=mx.int32)
    np.testing.assert_allclose(theirs, np.array(ours(x)), atol=1e-5)
    assert printed.split()[0] not in ("cherry_mlx.models.llama", "cherry_mlx.models.moee")


def _tokenizer_json() -> str:
    """The smallest tokenizer mlx_lm.load accepts (the model is what is tested)."""
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).to_str()
