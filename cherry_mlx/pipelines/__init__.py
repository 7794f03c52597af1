"""Pipelines: multi-stage experiments and commands built from the measurements below them.

``repro`` (the paper's experiments, one module per stage in ``stages/``, see ``stage.py``) and
the ``quantize`` command's body live here; the measurements they report (W, γ̄, MTP accuracy,
the verdict rule, held-out loss) stay in ``cherry_mlx.evaluation``.
"""
