"""YAML pipelines: schema and validation, sweeps, run directories, the runner and its reports."""
from .loading import Pipeline, PipelineError, apply_overrides, load_pipeline, validate
from .schema import PipelineSpec

__all__ = ["Pipeline", "PipelineError", "PipelineSpec", "apply_overrides", "load_pipeline", "validate"]
