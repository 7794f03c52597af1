"""Models compared token by token must share a vocabulary: ``eval --baseline`` refuses another
tokenizer's model (as fuse and distill do), and each command's message names its own roles; a
step size that is not a finite positive number is refused up front."""

import json

import pytest

from cherry_mlx.evaluation.config import EvalConfig
from cherry_mlx.evaluation.measure import run_eval
from cherry_mlx.fusion.assemble import check_same_tokenizer
from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import resolve


@pytest.fixture
def two_vocabularies(tmp_path, tiny_config):
    tok = resolve("cherry-tiny")
    cfg = dict(json.loads((tok / "config.json").read_text()), num_hidden_layers=1)
    a = save_model(build_model(cfg), tmp_path / "a", cfg, tok)
    other = dict(tiny_config)  # vocab 256, no tokenizer of its own
    b = save_model(build_model(other), tmp_path / "b", other)
    return a, b


def test_eval_baseline_with_another_vocabulary_is_refused(two_vocabularies):
    a, b = two_vocabularies
    with pytest.raises(ValueError) as err:
        run_eval(EvalConfig(model=str(a), baseline=str(b), max_batches=1, batch_size=2))
    msg = str(err.value)
    assert "--baseline" in msg and "vocab 4096" in msg and "vocab 256" in msg
    assert "\n" not in msg and "expert" not in msg


def test_distill_tokenizer_mismatch_speaks_of_teacher_and_student(two_vocabularies):
    from cherry_mlx.fusion.config import DistillConfig
    from cherry_mlx.fusion.distill import distill

    a, b = two_vocabularies
    with pytest.raises(ValueError) as err:
        distill(DistillConfig(teacher=str(b), student=str(a)))
    msg = str(err.value)
    assert "--teacher and --student" in msg and "expert" not in msg and "fuse" not in msg


def test_fuse_tokenizer_mismatch_keeps_its_experts_message(two_vocabularies):
    a, b = two_vocabularies
    cfgs = [json.loads((p / "config.json").read_text()) for p in (a, b)]
    with pytest.raises(ValueError, match="experts use different tokenizers.*one base model"):
        check_same_tokenizer([a, b], cfgs)


@pytest.mark.parametrize("eta", [float("nan"), float("inf"), 0.0, -1.0])
def test_eval_eta_must_be_a_finite_positive_step(eta):
    with pytest.raises(ValueError, match="--eta"):
        EvalConfig(model="m", coupling=True, etas=[eta])
