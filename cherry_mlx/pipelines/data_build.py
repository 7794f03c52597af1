"""``cherry-mlx data build``'s body: the output policy around ``data.build``.

The data layer cannot import the model layer's output policy, so the command checks the folder
here and lets ``build`` write into a staged sibling: a failed build leaves nothing behind and a
folder holding other files is refused without ``--force``.
"""

from __future__ import annotations

from cherry_mlx.data.build import OUTPUT_NAMES, BuildConfig, build
from cherry_mlx.models.outputs import check_output, staged_dir


def build_command(cfg: BuildConfig) -> None:
    """Build the data set into ``cfg.out_dir`` under the shared output policy."""
    sources = [cfg.tokenizer] if cfg.tokenizer else []
    check_output(cfg.out_dir, sources, cfg.force)
    with staged_dir(cfg.out_dir, OUTPUT_NAMES) as tmp:
        build(cfg, write_to=str(tmp))
