"""Where a run's model lives while it is quantized and evaluated: in memory, or read layer by layer from disk.

A run (:func:`fairgptq.pipeline.execute.execute`) has one body whichever way the model is held;
what differs is behind :class:`ModelPath`: how the tokenizer and the float model are had, how the
quantized checkpoint comes to exist, and how the quantized model is evaluated.

- :class:`InMemory`: the whole model in memory; quantized in place (:func:`~fairgptq.core.driver.quantize_model`),
  exported when ``export.enabled``, the export reloaded and compared when ``export.verify``.
- :class:`Onloaded`: a model that does not fit (``model.onload``, fairgptq.onload.choose_onload):
  quantized one decoder layer at a time straight into ``model/`` (the checkpoint is the output, so
  it always exists), and evaluated through accelerate's disk offload.  Steps that need the whole
  float model twice (the plain-GPTQ reference, the held-out pair gap) are refused before any work.

:func:`model_path` makes the choice and says it on the console and in the log.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.console import Console

from ..core.driver import QuantizationResult, quantize_model
from ..core.errors import ConfigError
from ..model_loading import MODEL_DTYPES, load_model, resolve_model
from ..export import export_checkpoint, fairgptq_record, load_gptq_checkpoint, snap_to_checkpoint_precision
from ..onload import OnloadDecision, choose_onload, load_float_offloaded, load_offloaded, quantize_onloaded
from ..registry import Registry
from . import build
from .objective_settings import needs_gradients
from .record import Step
from .schema import PipelineSpec

logger = logging.getLogger("fairgptq.pipeline")
VERIFY_PROMPT = "The doctor said that the nurse would bring the results of the test in the morning."
EVALUATED_WITH = "accelerate disk offload (device_map: decoder layers on disk, the rest on cpu; offload folder)"


def onload_decision(spec: PipelineSpec, console: Console) -> OnloadDecision:
    """Whether ``spec.model`` is quantized in memory or layer by layer (said on the console and in the log)."""
    m = spec.model
    decision = choose_onload(m.name, m.onload, m.max_memory, MODEL_DTYPES[m.dtype])
    if m.onload != "never" or decision.onload:
        console.print(f"  [bold]model path[/]: {decision.reason}")
        logger.info("model path: %s", decision.reason)
    return decision


class ModelPath:
    """The contract both paths keep; :func:`execute` calls these in order.

    A path is made for one run: it holds the run's ``spec`` and ``run_dir``."""

    spec: PipelineSpec
    run_dir: Path
    load_message: str
    quantize_message: str

    def refuse_unsupported(self, registry: Registry) -> None:
        """Raise ConfigError naming every setting this path cannot run, before any work."""

    def load(self) -> Any:
        """Load what the path needs up front; returns the tokenizer."""
        raise NotImplementedError

    def float_model(self) -> Any:
        """A context manager giving the float model (call before :meth:`quantize`)."""
        raise NotImplementedError

    def quantize(self, inputs: build.RunInputs, registry: Registry, point: dict | None) -> QuantizationResult:
        """Quantize the model (the onloaded path writes ``run_dir/model`` as it goes)."""
        raise NotImplementedError

    def export(self, inputs: build.RunInputs, result: QuantizationResult, point: dict | None,
               step: Step) -> dict | None:
        """``results.json``'s ``export`` section once ``run_dir/model`` holds the checkpoint; None: no export."""
        raise NotImplementedError

    def quantized_model(self) -> Any:
        """A context manager giving the quantized model (call after :meth:`quantize`)."""
        raise NotImplementedError

    def model_info(self) -> dict:
        """``results.json``'s ``model`` section, beyond the model's name."""
        raise NotImplementedError


class InMemory(ModelPath):
    def __init__(self, spec: PipelineSpec, run_dir: Path, decision: OnloadDecision | None,
                 model_and_tok=None) -> None:
        self.spec, self.run_dir, self.decision, self.given = spec, run_dir, decision, model_and_tok
        self.model = self.tok = None
        m = spec.model
        self.load_message = f"loading model {m.name} ({m.dtype}, {m.device})"
        self.quantize_message = "quantizing"

    def load(self):
        if self.given is None:
            self.model, self.tok = load_model(self.spec.model.name, self.spec.model.dtype, self.spec.model.device)
        else:  # a sweep's shared float model: each point quantizes its own copy
            self.model, self.tok = copy.deepcopy(self.given[0]), self.given[1]
        return self.tok

    @contextmanager
    def float_model(self) -> Iterator[Any]:
        yield self.model

    def quantize(self, inputs, registry, point):
        spec = self.spec
        result = quantize_model(self.model, inputs.calibration, build.quant_config(spec), objectives=inputs.objectives,
                                tokenizer=self.tok, backend=inputs.backend, progress=True,
                                architectures=registry.architectures())
        snap_to_checkpoint_precision(self.model, result, build.storage_dtype(spec))
        return result

    def export(self, inputs, result, point, step):
        spec = self.spec
        if not spec.export.enabled:
            return None
        folder = self.run_dir / "model"
        with step("export", "exporting the GPTQ checkpoint"):
            qc = export_checkpoint(self.model, self.tok, result, folder,
                                   checkpoint_format=spec.export.checkpoint_format, dtype=build.storage_dtype(spec),
                                   model_name=spec.model.name,
                                   fairgptq_meta={"pipeline": spec.name, "pair_sets": inputs.pair_info, "point": point})
        export = {"path": "model", "checkpoint_format": qc["checkpoint_format"],
                  "size_mb": sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
                  "grouping": fairgptq_record(qc)["grouping"]}
        if spec.export.verify:
            with step("verify_export", "reloading the checkpoint and comparing logits"):
                check = self._verify_export(folder)
            export.update(check)
            export["reload_check"] = ("identical logits" if check["identical_logits"]
                                      else f"max |Δlogit| = {check['max_abs_logit_diff']:.3g}")
        return export

    def _verify_export(self, folder: Path) -> dict:
        """Reload the checkpoint on CPU at the in-memory model's dtype and compare logits with it."""
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        loaded, _, _ = load_gptq_checkpoint(folder, device="cpu", dtype=dtype)
        ids = self.tok(VERIFY_PROMPT, return_tensors="pt").input_ids
        with torch.no_grad():
            a = self.model(ids.to(next(self.model.parameters()).device)).logits.float().cpu()
            b = loaded(ids).logits.float()
        return {"identical_logits": bool(torch.equal(a, b)), "max_abs_logit_diff": float((a - b).abs().max()),
                "tokens": int(ids.numel())}

    @contextmanager
    def quantized_model(self) -> Iterator[Any]:
        yield self.model

    def model_info(self) -> dict:
        cfg = self.model.config
        return {"model_type": cfg.model_type, "n_layers": getattr(cfg, "num_hidden_layers", None),
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                "onload": self.decision.to_dict() if self.decision is not None else None}


class Onloaded(ModelPath):
    def __init__(self, spec: PipelineSpec, run_dir: Path, decision: OnloadDecision) -> None:
        self.spec, self.run_dir, self.decision = spec, run_dir, decision
        self.folder = resolve_model(spec.model.name).folder
        self.run = None
        self.load_message = f"reading the tokenizer of {spec.model.name} (weights stay on disk)"
        self.quantize_message = "quantizing layer by layer from disk"

    def refuse_unsupported(self, registry: Registry) -> None:
        spec = self.spec
        gradients = [f"objectives[{i}] ({o.name})" for i, o in enumerate(spec.objectives)
                     if needs_gradients(registry, o.name, o.params)]
        if gradients:  # asked of the settings, so nothing is built first (model.onload: auto chose this path)
            raise ConfigError(f"{', '.join(gradients)}: needs gradients of a score through the whole model, and a "
                              f"sequential onloaded run holds one decoder layer at a time; quantize in memory "
                              f"(model.onload: never, with enough max_memory) or leave the objective out")
        unsupported = [k for k, on in (("evaluation.pair_gap", spec.evaluation.pair_gap is not None),
                                       ("evaluation.plain_baseline",
                                        spec.evaluation.plain_baseline and bool(spec.objectives)
                                        and bool(spec.evaluation.tasks))) if on]
        if unsupported:
            raise ConfigError(f"{', '.join(unsupported)}: not available with sequential onloading yet (they need the "
                              f"float model in memory); remove them, or set model.onload: never")
        if spec.model.device != "cpu":
            raise ConfigError(f"model.device {spec.model.device!r}: sequential onloading runs on cpu for now; "
                              f"set model.device: cpu or model.onload: never")

    def load(self):
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(self.folder)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        return self.tok

    @contextmanager
    def float_model(self) -> Iterator[Any]:
        offload = self.run_dir / ".offload-float"
        model, _ = load_float_offloaded(self.folder, offload, dtype=self.spec.model.dtype)
        try:
            yield model
        finally:
            del model
            shutil.rmtree(offload, ignore_errors=True)

    def quantize(self, inputs, registry, point):
        spec, run_dir = self.spec, self.run_dir
        self.run = quantize_onloaded(self.folder, run_dir / "model", inputs.calibration, build.quant_config(spec),
                                     objectives=inputs.objectives, tokenizer=self.tok,
                                     dtype=MODEL_DTYPES[spec.model.dtype], max_memory=spec.model.max_memory,
                                     backend=inputs.backend, checkpoint_format=spec.export.checkpoint_format,
                                     spill_dir=run_dir, storage_dtype=build.storage_dtype(spec),
                                     fairgptq_meta={"pipeline": spec.name, "pair_sets": inputs.pair_info,
                                                    "point": point})
        return self.run.result

    def export(self, inputs, result, point, step):
        """The checkpoint is already written (layer by layer, during :meth:`quantize`): it is the output."""
        return {"path": "model", "checkpoint_format": self.run.quantize_config["checkpoint_format"],
                "size_mb": sum(f.stat().st_size for f in (self.run_dir / "model").iterdir()) / 2**20,
                "reload_check": "not run: written layer by layer, there is no in-memory model to compare with"}

    @contextmanager
    def quantized_model(self) -> Iterator[Any]:
        offload = self.run_dir / ".offload"
        model, _, _ = load_offloaded(self.run_dir / "model", offload, dtype=self.spec.model.dtype)
        try:
            yield model
        finally:
            del model
            shutil.rmtree(offload, ignore_errors=True)

    def model_info(self) -> dict:
        config = json.loads((self.run_dir / "model" / "config.json").read_text())
        return {"model_type": config.get("model_type"), "n_layers": config.get("num_hidden_layers"),
                "dtype": self.spec.model.dtype,
                "onload": {**self.decision.to_dict(), **self.run.memory(),
                           "evaluated_with": EVALUATED_WITH if self.spec.evaluation.tasks else None}}


def model_path(spec: PipelineSpec, console: Console, run_dir: Path, model_and_tok=None) -> ModelPath:
    """The path a run takes: a sweep's shared model stays in memory; otherwise ``model.onload`` decides."""
    if model_and_tok is not None:
        return InMemory(spec, run_dir, None, model_and_tok)
    decision = onload_decision(spec, console)
    return Onloaded(spec, run_dir, decision) if decision.onload else InMemory(spec, run_dir, decision)
