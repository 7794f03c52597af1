"""The ``quantize`` command's body (``pipelines/quantize.py``): the output directory is checked
once, before any data is read; its settings are checked before any work."""

import mlx.core as mx
import pytest

from cherry_mlx.models import build_model, load_model
from cherry_mlx.models.loading import save_model
from cherry_mlx.pipelines import quantize as pipeline
from cherry_mlx.pipelines.quantize_config import MODE_NAMES, QuantizeConfig
from cherry_mlx.quant.quantize import MODES


def test_quantize_checks_its_output_once_before_reading_data(tiny_config, tmp_path, monkeypatch):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    src = save_model(model, tmp_path / "m", tiny_config)
    calls = []
    real_check = pipeline.check_output

    def check(*args, **kw):
        calls.append("check")
        return real_check(*args, **kw)

    def batches(*args, **kw):
        calls.append("data")
        return None

    monkeypatch.setattr(pipeline, "check_output", check)
    monkeypatch.setattr(pipeline, "heldout_batches", batches)
    notes = []
    cfg = QuantizeConfig(model=str(src), out=str(tmp_path / "q"), eval_batches=1)
    report = pipeline.run_quantize(cfg, log=notes.append)
    assert calls == ["check", "data"]
    assert notes == ["no held-out data found (pass --data); skipping the loss comparison"]
    assert load_model(tmp_path / "q")[1]["quantization"]["mode"] == "nvfp4"
    assert report.out_dir == str(tmp_path / "q") and report.loss is None
    # a second run onto the (now non-empty) output is refused before any data is read
    calls.clear()
    with pytest.raises(ValueError, match="--force"):
        pipeline.run_quantize(cfg)
    assert calls == ["check"]


def test_quantize_settings_are_checked_before_any_work():
    assert MODE_NAMES == tuple(MODES)  # the MLX-free list --help shows is the real one
    for kw, msg in [
        (dict(mode="fp3"), "--mode 'fp3': use one of nvfp4"),
        (dict(eval_batches=-5), "--eval-batches -5: must be >= 0"),
        (dict(calib_samples=0), "--calib-samples 0: must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            QuantizeConfig(**kw)
    assert QuantizeConfig(keep="embed,auto:5").needs_calibration
    assert not QuantizeConfig(keep="embed").needs_calibration
