"""A tiny random config per model family fairgptq knows (hidden 64, 2 layers, small vocabulary; no download).

Each config is built from transformers' own config class, so a test catches a family whose module
names changed in the installed transformers.  Kept apart from tiny_model.py, whose Llama the older
tests share.
"""
from __future__ import annotations

VOCAB = 96
_COMMON = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=1, pad_token_id=2, max_position_embeddings=64)
_LLAMA_LIKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, **_COMMON)
# sliding-window attention (window 4, shorter than the test sequences) then full attention: the two
# layers take different masks and, in Gemma 3, different rotary tables
_ALTERNATING = ["sliding_attention", "full_attention"]
_MOE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **_COMMON)


def dense_configs() -> dict:
    """model_type -> tiny config, for every dense family of the built-in table."""
    import transformers as tf

    return {
        "llama": tf.LlamaConfig(**_LLAMA_LIKE),
        "mistral": tf.MistralConfig(**_LLAMA_LIKE),
        "qwen2": tf.Qwen2Config(**_LLAMA_LIKE),
        "qwen3": tf.Qwen3Config(head_dim=16, **_LLAMA_LIKE),
        "gemma": tf.GemmaConfig(head_dim=16, **_LLAMA_LIKE),
        "gemma2": tf.Gemma2Config(head_dim=16, sliding_window=4, layer_types=_ALTERNATING, **_LLAMA_LIKE),
        "gemma3_text": tf.Gemma3TextConfig(head_dim=16, sliding_window=4, layer_types=_ALTERNATING, **_LLAMA_LIKE),
        "phi3": tf.Phi3Config(**_LLAMA_LIKE),
        "olmo2": tf.Olmo2Config(**_LLAMA_LIKE),
        "granite": tf.GraniteConfig(**_LLAMA_LIKE),
        "stablelm": tf.StableLmConfig(**_LLAMA_LIKE),
        "cohere": tf.CohereConfig(**_LLAMA_LIKE),
        "falcon": tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **_COMMON),
        "gptj": tf.GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64,
                              **{k: v for k, v in _COMMON.items() if k != "max_position_embeddings"}),
        "opt": tf.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                            word_embed_proj_dim=64, **_COMMON),
        "gpt2": tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64,
                              **{k: v for k, v in _COMMON.items() if k != "max_position_embeddings"}),
        "gpt_neox": tf.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, **_COMMON),
    }


def moe_configs() -> dict:
    """model_type -> tiny mixture-of-experts config (4 experts, 2 routed per token)."""
    import transformers as tf

    return {
        "mixtral": tf.MixtralConfig(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **_MOE),
        "qwen2_moe": tf.Qwen2MoeConfig(intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                                       num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, **_MOE),
        "qwen3_moe": tf.Qwen3MoeConfig(intermediate_size=64, moe_intermediate_size=32, num_experts=4,
                                       num_experts_per_tok=2, decoder_sparse_step=1, head_dim=16, **_MOE),
        "olmoe": tf.OlmoeConfig(intermediate_size=32, num_experts=4, num_experts_per_tok=2, **_MOE),
    }


def tiny_model(config, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
