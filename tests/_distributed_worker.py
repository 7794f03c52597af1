"""One rank of the SGT-shard test, run by ``mlx.launch -n 2`` from tests/test_distributed.py.

A toy model (embedding + linear, no mlx-lm import so a rank starts in about a second) takes one
compiled training step on its shard of ``uneven_batch()``; rank 0 writes the global loss, the
token count, its shard's own loss and the updated weights to ``OUT/result.npz``.
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
import sys

import cherry_mlx  # noqa: F401  (loads the fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

V, D = 32, 16


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.out = nn.Linear(D, V)

    def __call__(self, inputs):
        return self.out(mx.tanh(self.embed(inputs)))  # (B, T, V)


def toy_model() -> Toy:
    mx.random.seed(3)
    model = Toy()
    mx.eval(model.parameters())
    return model


def uneven_batch() -> dict:
    """4 rows; rank 0 of 2 gets rows 0 and 2 (long answers, many GT tags), rank 1 rows 1 and 3
    (short answers, one GT tag, and a row without GT that falls back to the full loss)."""
    r = np.random.default_rng(5)
    T = 16
    toks = r.integers(0, V, (4, T + 1)).astype(np.int32)
    resp = np.zeros((4, T), bool)
    level = np.zeros((4, T), np.int8)
    resp[0, 2:], level[0, 3:12] = True, 1
    resp[2, 1:], level[2, 4:15:2] = True, 2
    resp[1, 12:], level[1, 13] = True, 1
    resp[3, 14:] = True
    cat = np.where(level > 0, 0, -1).astype(np.int8)
    return dict(inputs=toks[:, :-1], targets=toks[:, 1:], response=resp, level=level, category=cat)


def optimizer():
    return optim.AdamW(learning_rate=1e-2, weight_decay=0.0)


def main(out_dir: str) -> None:
    from mlx.utils import tree_flatten

    from cherry_mlx.selection.select import make_loss
    from cherry_mlx.training.data import CycleBatches, prepare_batch
    from cherry_mlx.training.distributed import barrier, current_ranks, shard_iterator
    from cherry_mlx.training.step import make_step

    ranks = current_ranks()
    model, loss_fn = toy_model(), make_loss("gt", 0.7, 1)
    shard = next(shard_iterator(CycleBatches([uneven_batch()]), ranks))
    batch, _ = prepare_batch(shard, loss_fn)
    own_loss, own_ntoks = loss_fn(model, batch)
    step, state = make_step(model, optimizer(), loss_fn, 0.0, group=ranks.group)
    loss, ntoks, _, _ = step(batch, None, True)
    mx.eval(state, loss, ntoks, own_loss, own_ntoks)
    own = mx.zeros((ranks.size, 2)).at[ranks.rank].add(mx.stack([own_loss, own_ntoks]))
    own = mx.distributed.all_sum(own, group=ranks.group)  # (ranks, 2): each shard's own values
    mx.eval(own)
    if ranks.main:
        weights = {f"w.{k}": np.array(v) for k, v in tree_flatten(model.parameters())}
        np.savez(
            f"{out_dir}/result.npz",
            loss=np.array(loss),
            ntoks=np.array(ntoks),
            shard_losses=np.array(own),
            size=ranks.size,
            **weights,
        )
    barrier(ranks)  # no rank leaves while another still talks to it


if __name__ == "__main__":
    main(sys.argv[1])
