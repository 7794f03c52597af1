"""What differs between GGUF architectures: names, config keys, stored-weight conventions.

llama.cpp's converter writes every family with the same ``blk.N.*`` vocabulary, but each family
maps it to different Hugging Face names and stores some weights transformed:

- Llama/Mistral: Q/K rows permuted for interleaved RoPE (``PERMUTED_QK``, undone in ``gguf.py``).
- Gemma 2 and 3: norms stored as ``1 + weight`` (their RMSNorm multiplies by ``1 + w``), four norms
  per block; sliding and global layers (Gemma 3: every 6th global, local RoPE base 10000;
  Gemma 2: every other; llama.cpp's fixed values, the file does not store them).
- Phi-3: fused ``attn_qkv`` and ``ffn_up`` (= HF ``gate_up_proj``), partial rotary from
  ``rope.dimension_count``.

Files often carry no chat template (llama.cpp applies its built-in one per family); the family's
usual template is written then (``CHAT_TEMPLATES``), with its end-of-turn token as an extra EOS.
"""

from __future__ import annotations

from typing import Any, Dict, List

# GGUF general.architecture -> (HF model_type, HF architectures entry)
ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
}
PERMUTED_QK = ("llama", "mistral")  # llama.cpp permutes Q/K rows only for these
NORM_SHIFTED = ("gemma3", "gemma2")  # norms stored as 1 + weight
TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA_NORMS = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
BLOCK_OVERRIDES = {
    "gemma3": _GEMMA_NORMS,
    "gemma2": _GEMMA_NORMS,
    "phi3": {"ffn_up": "mlp.gate_up_proj"},
}
_GEMMA_TEMPLATE = (  # a system message opens the first user turn, as in Gemma's own template
    "{{ bos_token }}{% set first = '' %}{% set turns = messages %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}{% endif %}"
    "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + m['content'] | trim "
    "+ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
_PHI3_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# family -> (chat template used when the file has none, its end-of-turn token)
CHAT_TEMPLATES = {
    "gemma3": (_GEMMA_TEMPLATE, "<end_of_turn>"),
    "gemma2": (_GEMMA_TEMPLATE, "<end_of_turn>"),
    "phi3": (_PHI3_TEMPLATE, "<|end|>"),
}


def block_names(arch: str) -> Dict[str, str]:
    return {**BLOCK, **BLOCK_OVERRIDES.get(arch, {})}


def family_config(arch: str, get, cfg: Dict[str, Any], shapes) -> None:
    """Add the family's own ``config.json`` keys to ``cfg`` (in place); ``get(key)`` reads the
    ``{arch}.key`` metadata."""
    n = cfg["num_hidden_layers"]
    if arch == "gemma3":
        window = int(get("attention.sliding_window", 512))
        head_dim = cfg["head_dim"]
        # llama.cpp scales Gemma 3 27B's queries by hidden/heads, the others by head_dim
        scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if n == 62 else head_dim
        global_rope = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
        if "rope_scaling" in cfg:  # the larger Gemma 3s: linear scaling on global layers only
            global_rope = {**cfg.pop("rope_scaling"), "rope_theta": cfg["rope_theta"]}
        cfg.update(
            hidden_act="gelu_pytorch_tanh",
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=scalar,
            sliding_window=window,
            sliding_window_pattern=6,
            layer_types=_gemma_layer_types(get("attention.sliding_window_pattern"), n),
            rope_local_base_freq=10000.0,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": global_rope,
            },
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
    elif arch == "gemma2":
        head_dim = cfg["head_dim"]
        # llama.cpp scales Gemma 2 27B's queries by hidden/heads, the others by head_dim
        scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if n == 46 else head_dim
        cfg.update(
            hidden_act="gelu_pytorch_tanh",
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=scalar,
            sliding_window=int(get("attention.sliding_window", 4096)),
            layer_types=_gemma_layer_types(2, n),
            attn_logit_softcapping=float(get("attn_logit_softcapping", 50.0)),
            final_logit_softcapping=float(get("final_logit_softcapping", 30.0)),
        )
    elif arch == "phi3":
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        dims = int(get("rope.dimension_count", head_dim))
        cfg.update(
            head_dim=head_dim,
            partial_rotary_factor=dims / head_dim,
            original_max_position_embeddings=int(
                get("rope.scaling.original_context_length", cfg["max_position_embeddings"])
            ),
        )
        if get("attention.sliding_window"):  # llama.cpp keeps Phi-3's window (2047 in mini)
            cfg["sliding_window"] = int(get("attention.sliding_window"))


def _gemma_layer_types(pattern, n: int) -> List[str]:
    """llama.cpp's layout: every 6th layer global, or the file's per-layer sliding flags."""
    if isinstance(pattern, list) and len(pattern) == n:
        return ["sliding_attention" if s else "full_attention" for s in pattern]
    k = int(pattern) if isinstance(pattern, int) and pattern > 0 else 6
    return ["full_attention" if (i + 1) % k == 0 else "sliding_attention" for i in range(n)]
