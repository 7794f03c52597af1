"""Adaptive drafting: choose how many heads draft each round so decoding is never slower than plain.

A round with k drafts costs c(k) seconds and yields E(k) = 1 + Σ_{i<=k} Π_{j<=i} α_j tokens, where
α_j is head j's acceptance given that heads 1..j-1 were accepted. Plain decoding yields one token
per c(0). The controller keeps recent estimates of each α_j (counts that forget old rounds) and of
c(k) (measured: moving averages of wall time per round, and per plain token), and picks the k with
the highest E(k)/c(k). k = 0 means "stop drafting": a burst of plain pipelined steps, after which
one probe round re-measures acceptance (text can turn predictable again); each probe after which
drafting still does not pay doubles the next burst (up to ``max_gap``), so heads that never pay
cost a vanishing share of the tokens. Short plain bursts also
run now and then to keep c(0) measured on a machine whose load changes (early in a generation
only when the prior cannot tell whether drafting pays: a calibration burst costs a short
generation more than it saves).

The choice depends only on the past, so greedy output stays plain greedy output and speculative
sampling stays exact whatever k is chosen. One controller may serve many generations (a chat
session, a benchmark's prompts): what it learnt about the heads then carries over instead of
being paid for again at the start of every reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class AdaptiveDraft:
    """Chooses k in 0..max_k per round from recent acceptance and measured costs."""

    max_k: int
    head_cost: float = 0.15  # prior cost of one head relative to a trunk step (until measured)
    forget: float = 0.9  # weight kept by old observations per new one (~the last 10 rounds)
    smooth: float = 0.7  # weight kept by the old cost estimate per new measurement
    probe_every: int = 32  # plain tokens between probes while drafting does not pay
    max_gap: int = 512  # the longest burst between probes after repeated failed probes
    calibrate_every: int = 256  # tokens between short plain bursts that re-measure c(0)
    calibrate_len: int = 8
    hits: List[float] = field(default_factory=list)
    tries: List[float] = field(default_factory=list)
    sec: List[Optional[float]] = field(default_factory=list)

    def __post_init__(self):
        if self.max_k < 1:
            raise ValueError(f"adaptive drafting needs at least one head, got {self.max_k}")
        self.hits = [0.0] * (self.max_k + 1)
        self.tries = [0.0] * (self.max_k + 1)
        self.sec = [None] * (self.max_k + 1)
        self._next: Optional[int] = self.max_k  # first round: probe with every head
        self._burst = 0
        self._since_plain = 0
        self._gap = self.probe_every
        self._probing = False

    # -- estimates --------------------------------------------------------------------------------
    def alpha(self, i: int) -> float:
        """Head i's conditional acceptance (prior 1/2 before any observation)."""
        return (self.hits[i] + 1.0) / (self.tries[i] + 2.0)

    def expected(self, k: int) -> float:
        """Tokens per round with k drafts: the bonus token + the expected accepted prefix."""
        e, p = 1.0, 1.0
        for i in range(1, k + 1):
            p *= self.alpha(i)
            e += p
        return e

    def cost(self, k: int) -> float:
        """Seconds per round with k drafts (k = 0: per plain token), measured or interpolated."""
        if self.sec[k] is not None:
            return self.sec[k]
        known = [(j, s) for j, s in enumerate(self.sec) if s is not None and j > 0]
        if self.sec[0] is not None:
            c0 = self.sec[0]
        elif known:
            j, s = known[0]
            c0 = s / (1 + j * self.head_cost)
        else:
            return 1 + k * self.head_cost  # nothing measured: relative prior
        if len(known) >= 2:  # per-head slope from two measured k, anchored on the nearest
            (j1, s1), (j2, s2) = known[0], known[-1]
            slope = max((s2 - s1) / (j2 - j1), 0.0)
            return max(s1 + (k - j1) * slope, c0)
        if known:
            j, s = known[0]
            return c0 + (s - c0) * k / j
        return c0 * (1 + k * self.head_cost)

    def marginal(self, margin: float = 1.5) -> bool:
        """Whether the best drafting round beats plain by less than ``margin`` (estimates)."""
        gain = max(self.expected(k) / self.cost(k) for k in range(1, self.max_k + 1))
        return gain * self.cost(0) < margin

    def best(self, lo: int = 0) -> int:
        scores = {k: self.expected(k) / self.cost(k) for k in range(lo, self.max_k + 1)}
        return max(scores, key=lambda k: (scores[k], -k))

    # -- decisions --------------------------------------------------------------------------------
    def choose(self) -> int:
        """Drafts for the next round; 0 = a plain burst of ``burst_len`` tokens."""
        if self._next is not None:
            k, self._next = self._next, None
            self._burst = self.calibrate_len if k == 0 else 0
            return k
        if self._since_plain >= self.calibrate_every:
            self._burst = self.calibrate_len
            return 0
        k = self.best()
        if k == 0:
            if self._probing:  # the probe did not pay either: wait longer for the next
                self._gap = min(2 * self._gap, self.max_gap)
            self._burst = self._gap
            self._next = self.best(lo=1)  # then probe: acceptance may have recovered
            self._probing = True
        else:
            self._gap, self._probing = self.probe_every, False
        return k

    @property
    def burst_len(self) -> int:
        return max(self._burst, 1)

    def update(self, k: int, produced: int, seconds: Optional[float]) -> None:
        """After a round with k drafts (or a burst, k = 0) that produced ``produced`` tokens in
        ``seconds`` of wall time (None: not representative, e.g. it included head catch-up)."""
        if k == 0:
            self._since_plain = 0
            if seconds is not None and produced > 0:
                self._measure(0, seconds / produced)
            return
        self._since_plain += produced
        accepted = produced - 1
        for i in range(1, min(accepted + 1, k) + 1):  # heads whose draft was judged
            self.tries[i] = self.forget * self.tries[i] + 1
            self.hits[i] = self.forget * self.hits[i] + (1.0 if i <= accepted else 0.0)
        if seconds is not None:
            self._measure(k, seconds)
        if self.sec[0] is None and self._next is None and self.tries[1] >= 4 and self.marginal():
            self._next = 0  # the prior cannot tell whether drafting pays: measure plain speed

    def _measure(self, k: int, s: float) -> None:
        old = self.sec[k]
        self.sec[k] = s if old is None else self.smooth * old + (1 - self.smooth) * s
