"""How much memory an in-memory run needs, measured rather than guessed, checked before any model loads.

The driver holds, for every calibration token, the layer's input and output, the inputs captured at
each role's first module (the MLP's are ``intermediate_size`` wide), and what every paused forward
keeps alive (queries, keys, values, norm outputs, gate and up projections).  Measured peak RSS growth
per calibration token (``benchmarks/bench_memory.py``; resource.getrusage, one thread):

- tiny Llama (hidden 64, intermediate 128, 6 layers): 4.8 KB per token, 38 MiB fixed;
- SmolLM2-135M (hidden 576, intermediate 1536): 31.9 KB per token, 618 MiB fixed (8k → 16k tokens).

The estimate below is 4 bytes x (20 x hidden + 2 x intermediate) per token plus 64 MiB and six times
the embedding table, which covers both (1.28x and 1.8x the per-token growth, 1.7x and 1.2x the fixed
part) without refusing runs that fit; the benchmark checks estimate >= 0.9 x measured peak on both
models.  The model's own weights come on top.  The old estimate (two hidden-wide float32 tensors
per token) was 8x low.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PER_TOKEN_HIDDEN = 20
PER_TOKEN_INTERMEDIATE = 2
FIXED_BYTES = 64 * 2**20
EMBEDDING_TIMES = 6


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    vocab: int
    layers: int
    tied: bool = True

    def weight_bytes(self, dtype_bytes: int = 4) -> int:
        """The loaded model's weights (Llama-like count: attention 4 h², MLP 3 h i per layer, embeddings)."""
        per_layer = 4 * self.hidden ** 2 + 3 * self.hidden * self.intermediate
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return dtype_bytes * (self.layers * per_layer + embeddings)


def calibration_bytes(shape: ModelShape, tokens: int) -> int:
    """Peak memory the quantization adds for ``tokens`` calibration tokens (module docstring)."""
    per_token = 4 * (PER_TOKEN_HIDDEN * shape.hidden + PER_TOKEN_INTERMEDIATE * shape.intermediate)
    return tokens * per_token + FIXED_BYTES + EMBEDDING_TIMES * 4 * shape.vocab * shape.hidden


def shape_from_config(config: dict) -> ModelShape | None:
    """The shape from a Hugging Face config.json (None when it lacks the sizes)."""
    def first(*keys: str) -> int | None:
        return next((config[k] for k in keys if isinstance(config.get(k), int)), None)
    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    if hidden is None or layers is None:
        return None
    intermediate = first("intermediate_size", "ffn_dim", "n_inner") or 4 * hidden
    return ModelShape(hidden, intermediate, first("vocab_size") or 0, layers, bool(config.get("tie_word_embeddings", True)))


def shape_of(model_name: str) -> ModelShape | None:
    """The shape of a local model (config.json, or a GGUF file's header); None for hub ids and the unknown."""
    from ..core.errors import FairGPTQError
    from ..model_loading import resolve_model
    try:
        src = resolve_model(model_name)
    except FairGPTQError:
        return None
    folder = Path(src.folder)
    if src.gguf_file:
        gguf_file = folder / src.gguf_file
        try:
            stat = gguf_file.stat()
        except OSError:
            return None
        return _gguf_shape(gguf_file, stat.st_mtime_ns, stat.st_size)
    config = folder / "config.json"
    if src.hub_id or not config.is_file():
        return None
    try:
        return shape_from_config(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=8)
def _gguf_shape(path: Path, mtime_ns: int, size: int) -> ModelShape | None:
    """Read once per file version: the reader parses the whole header (the tokenizer's 49k strings for
    SmolLM2, seconds on two cores), and a sweep validates every point against the same file."""
    try:
        import gguf
        reader = gguf.GGUFReader(str(path))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

        def number(key: str) -> int:
            field = reader.fields[key]
            return int(field.parts[field.data[0]][0])
        return ModelShape(number(f"{arch}.embedding_length"), number(f"{arch}.feed_forward_length"),
                          len(reader.fields["tokenizer.ggml.tokens"].data), number(f"{arch}.block_count"))
    except Exception:  # an unreadable or unusual header: no estimate (the run's own errors will say why)
        return None
