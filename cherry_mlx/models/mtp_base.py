"""What every MTP head shares, whatever its block: the norms of its two inputs (the previous state
and the next token's embedding), their 2D -> D projection, the block, and an output norm (the LM
head is the trunk's)."""

from __future__ import annotations

import mlx.nn as nn


class HeadBase(nn.Module):
    def __init__(self, args, block: nn.Module):
        super().__init__()
        d, eps = args.hidden_size, args.rms_norm_eps
        self.hnorm = nn.RMSNorm(d, eps=eps)
        self.enorm = nn.RMSNorm(d, eps=eps)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = block
        self.norm = nn.RMSNorm(d, eps=eps)
