"""Example third-party plugin: a backend that keeps chosen input channels unrounded in every module.

One file outside the fairgptq package is all a new backend needs: subclass the contract's
``Backend`` (plain GPTQ maths on the model's device) and override the one hook that changes what
is solved, ``keep_mask``.  Factorisation, the Fair-GPTQ update, the GPTQ loop and the export of
the kept columns (fp16, as the ``outlier`` backend's) stay fairgptq's own.  Use it from a
pipeline with

    plugins: [pinned_channels_backend]    # the module must be importable (PYTHONPATH)
    backend: {name: pinned_channels, params: {channels: [0, 17]}}

or package it with an entry point in its own pyproject.toml:

    [project.entry-points."fairgptq.backends"]
    pinned_channels = "pinned_channels_backend"
"""
from __future__ import annotations

import torch

from fairgptq.contract import Backend, ConfigError, hookimpl


class PinnedChannelsBackend(Backend):
    """Keeps the listed input channels (e.g. known outlier dimensions of a model family) in fp16."""

    name = "pinned_channels"

    def __init__(self, channels: list[int]) -> None:
        super().__init__("cpu")
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels):
            raise ConfigError(f"channels={channels!r}: give a non-empty list of input-channel indices >= 0")
        self.channels = sorted(set(channels))

    def keep_mask(self, H: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor:
        keep = torch.zeros(H.shape[0], dtype=torch.bool, device=H.device)
        keep[[c for c in self.channels if c < H.shape[0]]] = True
        return keep

    def describe(self) -> dict:
        return {**super().describe(), "channels": self.channels}


@hookimpl
def fairgptq_backends() -> dict:
    return {"pinned_channels": PinnedChannelsBackend}
