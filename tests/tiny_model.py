"""A tiny random Llama with a word-level tokenizer, saved as a normal model folder (fast tests)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("the he she man woman nurse doctor engineer teacher is was a an good bad smart kind lazy strong "
         "weak people they were very not and of to in").split()
PAIRS = [("he is a good doctor", "she is a good doctor"), ("the man was smart", "the woman was smart"),
         ("he is a lazy nurse", "she is a lazy nurse"), ("the man is strong", "the woman is strong"),
         ("he was a kind teacher", "she was a kind teacher"), ("the man was very weak", "the woman was very weak"),
         ("he is an engineer", "she is an engineer"), ("they were not good people", "they were very good people")]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_llama(seed: int = 0, hidden: int = 64, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok


def save_tiny_llama(folder: Path, **kw) -> Path:
    """Save the tiny model as a standard folder (config.json + safetensors + tokenizer)."""
    model, tok = tiny_llama(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def table_architecture_configs(vocab: int = 96) -> dict:
    """A tiny random config per architecture of fairgptq/core/architectures.py (hidden 64, 2 layers)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    llama_like = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, **common)
    return {"llama": LlamaConfig(**llama_like), "mistral": MistralConfig(**llama_like),
            "qwen2": Qwen2Config(**llama_like),
            "opt": OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=64, word_embed_proj_dim=64, **common),
            "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **common),
            "gpt_neox": GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=64, **common)}


def write_pair_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"stereo": s, "anti": a, "category": "gender"}) + "\n" for s, a in PAIRS))
    return path


def token_batches(tok, texts, batch_size: int = 4):
    from fairgptq.core.objective import TokenBatch

    enc = tok(list(texts), return_tensors="pt", padding=True)
    return [TokenBatch(enc.input_ids[i:i + batch_size], enc.attention_mask[i:i + batch_size])
            for i in range(0, len(texts), batch_size)]


def tiny_pipeline(model_dir: Path, pair_file: Path, **sections) -> dict:
    """A valid pipeline dict for the tiny model (quantize + export, no evaluation); sections override."""
    raw = {"name": "tiny", "model": {"name": str(model_dir)},
           "calibration": {"pairs": {"mine": {"source": "pair_file",
                                              "params": {"path": str(pair_file), "category_col": "category"}}}},
           "quantization": {"bits": 4, "group_size": 32},
           "objectives": [{"name": "fair_pairs", "pairs": "mine", "params": {"alpha": 0.1}}],
           "export": {"enabled": True, "verify": True}}
    raw.update(sections)
    return raw


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class BareForward(torch.nn.Module):
    """A wrapper whose forward takes only ids, mask and use_cache (no logits_to_keep, no position ids),
    as a custom or quantized model's might."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def export_tiny(folder: Path):
    """The tiny model quantized (4-bit g32 on its own pair sentences) and exported as fairgptq exports; returns
    the folder and the model's quantized weights by module name (what a faithful load must give back)."""
    from fairgptq import QuantConfig, export_checkpoint, quantize_model

    model, tok = tiny_llama()
    result = quantize_model(model, token_batches(tok, [s for p in PAIRS for s in p]), QuantConfig(bits=4, group_size=32),
                            progress=False)
    export_checkpoint(model, tok, result, folder)
    return folder, {name: model.get_submodule(name).weight.detach().clone() for name in result.qweights}
