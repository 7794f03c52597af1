"""Honest compute accounting for a MoEE: parameters "active" per token vs FLOPs actually spent.

The paper reports *active parameters* (the parameters a token is routed through). With
whole-model experts that figure hides the real cost: every expert has to run its full trunk at
every position, whatever the gate picks, because a later token routed to expert i attends to
expert i's keys and values of *this* position. Only the LM heads after the mix could be skipped
(k instead of N, without a shared head). Layer-level routing (shared attention, routed FFNs) does
skip compute: per block call it runs one attention and k of N FFNs.

Counting (forward pass, one token, multiply-accumulate = 2 FLOPs), per block *call* (a looped
core layer counts once per loop):
    attention projections 2·(D·H·d + 2·D·Hkv·d + H·d·D),  scores+mix 4·H·d·c,
    SwiGLU FFN 2·3·D·F,  LM head 2·D·V,  gate 2·D·N,
with c the number of keys attended: (L+1)/2 on average over a causal sequence of length L.
Embedding look-ups and norms are ignored (no matmul).
"""

from __future__ import annotations

from typing import Any, Dict


def _block(cfg: Dict[str, Any]):
    d = int(cfg["hidden_size"])
    h = int(cfg["num_attention_heads"])
    hkv = int(cfg.get("num_key_value_heads") or h)
    hd = int(cfg.get("head_dim") or d // h)
    f = int(cfg["intermediate_size"])
    attn_params = d * h * hd + 2 * d * hkv * hd + h * hd * d
    return d, h * hd, attn_params, 3 * d * f


def _calls(cfg: Dict[str, Any]) -> int:
    n = int(cfg["num_hidden_layers"])
    r = cfg.get("recurrence")
    if not r:
        return n
    return int(r["prelude"]) + int(r["core"]) * int(r["loops"]) + int(r["coda"])


def _head_params(cfg: Dict[str, Any]) -> int:
    return int(cfg["hidden_size"]) * int(cfg["vocab_size"])


def dense_cost(cfg: Dict[str, Any], seq_len: int) -> Dict[str, float]:
    """A plain (possibly looped) cherry model: unique params, params touched, FLOPs per token."""
    d, hd_all, attn, ffn = _block(cfg)
    n, calls = int(cfg["num_hidden_layers"]), _calls(cfg)
    head = _head_params(cfg)
    ctx = (seq_len + 1) / 2
    per_call = 2 * (attn + ffn) + 4 * hd_all * ctx
    emb = head if cfg.get("tie_word_embeddings") else 2 * head
    return {
        "params": n * (attn + ffn) + emb,
        "active_params": n * (attn + ffn) + emb,
        "flops_per_token": calls * per_call + 2 * head,
    }


def moee_cost(config: Dict[str, Any], seq_len: int = 256) -> Dict[str, Any]:
    """Parameters and FLOPs per token of a fused config (``moee`` key) at context ``seq_len``."""
    m = config["moee"]
    n, k = int(m["num_experts"]), int(m.get("top_k", 1))
    ctx = (seq_len + 1) / 2
    if m.get("granularity", "model") == "model":
        experts = [dense_cost(c, seq_len) for c in m["experts"]]
        d = int(m["experts"][0]["hidden_size"])
        head = _head_params(m["experts"][0])
        gate = 2 * d * n
        trunk = [e["flops_per_token"] - 2 * head for e in experts]
        if m.get("shared_embeddings"):
            emb = head if config.get("tie_word_embeddings") else 2 * head
            per_expert = [
                e["params"] - (head if c.get("tie_word_embeddings") else 2 * head)
                for e, c in zip(experts, m["experts"])
            ]
            params = sum(per_expert) + emb + d * n
            active = sum(sorted(per_expert)[-k:]) + emb + d * n  # k largest: an upper bound
            spent = sum(trunk) + 2 * head + gate  # every trunk runs; one head after the mix
            minimum = spent
        else:
            params = sum(e["params"] for e in experts) + d * n
            active = sum(sorted(e["params"] for e in experts)[-k:]) + d * n
            spent = sum(trunk) + n * 2 * head + gate  # our dense mix runs all N heads
            minimum = sum(trunk) + k * 2 * head + gate  # only k heads are really needed
        note = "every expert's trunk runs at every position (its KV cache is needed later)"
    else:
        d, hd_all, attn, ffn = _block(config)
        layers, calls = int(config["num_hidden_layers"]), _calls(config)
        head = _head_params(config)
        emb = head if config.get("tie_word_embeddings") else 2 * head
        params = layers * (attn + n * ffn + d * n) + emb
        active = layers * (attn + k * ffn + d * n) + emb
        per_call = 2 * (attn + k * ffn + d * n) + 4 * hd_all * ctx
        spent = minimum = calls * per_call + 2 * head
        note = "one attention and k of N FFNs per block call"
    # MTP heads (stored, used by the loss and the drafter, never by the trunk's forward pass):
    # per head a 2D -> D projection and one dense block of the base shape (norms not counted,
    # as everywhere here).
    k_mtp = int((config.get("mtp") or {}).get("num_heads", 0))
    mtp_params = 0
    if k_mtp:
        d, _, attn_b, ffn_b = _block(config)  # the fused config keeps the base shape
        mtp_params = k_mtp * (2 * d * d + attn_b + ffn_b)
    params += mtp_params
    return {
        "granularity": m.get("granularity", "model"),
        "num_experts": n,
        "top_k": k,
        "seq_len": seq_len,
        "params": int(params),
        "mtp_params": int(mtp_params),
        "active_params": int(active),
        "flops_per_token": float(spent),
        "flops_per_token_min": float(minimum),
        "note": note,
    }


def format_cost(cost: Dict[str, Any]) -> str:
    """One line: params, active params and FLOPs per token, side by side."""
    return (
        f"{cost['granularity']}-level MoEE, {cost['num_experts']} experts, top-{cost['top_k']}: "
        f"params {cost['params'] / 1e6:.2f}M"
        + (f" (MTP heads {cost['mtp_params'] / 1e6:.2f}M)" if cost.get("mtp_params") else "")
        + f", active {cost['active_params'] / 1e6:.2f}M, "
        f"FLOPs/token {cost['flops_per_token'] / 1e6:.2f}M "
        f"(needed {cost['flops_per_token_min'] / 1e6:.2f}M) at context {cost['seq_len']}: "
        f"{cost['note']}"
    )
