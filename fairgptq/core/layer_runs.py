"""One decoder layer run on every batch, pausing at module inputs: true-sequential in one forward.

True-sequential GPTQ quantizes a layer's roles in forward order and needs each role's
input computed with the earlier roles already quantized.  Restarting the layer from its
input for every role costs about 2.6 layer forwards per layer (the attention is computed
three times).  Here each batch's forward runs in its own thread and pauses in a forward
pre-hook at the next role's first module; the driver quantizes the role, writes the weights
back and resumes every run, which goes on with the quantized weights.  Exactly one thread
computes at any time (a strict hand-off through semaphores), so the arithmetic is the same
as the restart loop's, bit for bit, for one layer forward per layer.

The paused runs keep their intermediate tensors alive: about the memory of the captured
inputs that the driver holds anyway, plus the attention's q/k/v while paused inside it.
"""
from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import FairGPTQError

_local = threading.local()


class _Cancelled(BaseException):
    """Raised inside a paused run to unwind it when the driver stops early (an error elsewhere)."""


class _Run:
    """One forward in its own thread; ``resume`` runs it to its next pause (or its end) and returns."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._grad = torch.is_grad_enabled()  # grad mode is thread-local: carry the driver's no_grad over
        self.started = self.finished = self.cancelled = False
        self.value: Any = None
        self.module: nn.Module | None = None
        self._error: BaseException | None = None

    def _main(self) -> None:
        _local.run = self
        self._go.acquire()
        try:
            with torch.set_grad_enabled(self._grad):
                self.value, self.module = self._fn(), None
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the driver's thread by resume()
            self._error = e
        finally:
            self.finished = True
            self._back.release()

    def pause(self, module: nn.Module, x: torch.Tensor) -> None:
        self.value, self.module = x, module
        self._back.release()
        self._go.acquire()
        if self.cancelled:
            raise _Cancelled

    def resume(self) -> Any:
        if self.finished:
            return self.value
        if not self.started:
            self.started = True
            self._thread.start()
        self._go.release()
        self._back.acquire()
        if self._error is not None:
            raise self._error
        return self.value

    def cancel(self) -> None:
        if self.started and not self.finished:
            self.cancelled = True
            self._go.release()
            self._thread.join()


def _pause_hook(module: nn.Module, args: tuple) -> None:
    run = getattr(_local, "run", None)
    if run is not None:
        run.pause(module, args[0].detach())


class LayerRuns:
    """The forwards of ``layer`` on every batch of every stream, paused at the modules in ``pause_at``.

    Use as a context manager; call :meth:`inputs_of` for each pause module in forward order,
    then :meth:`outputs` for the layer's outputs.
    """

    def __init__(self, layer: nn.Module, calls: dict[str, list[tuple[torch.Tensor, tuple, dict]]],
                 pause_at: list[nn.Module]) -> None:
        self._handles = [m.register_forward_pre_hook(_pause_hook) for m in pause_at]
        self._runs = {s: [_Run(partial(layer, h, *a, **kw)) for h, a, kw in c] for s, c in calls.items()}

    def __enter__(self) -> LayerRuns:
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        for runs in self._runs.values():
            for r in runs:
                r.cancel()

    def inputs_of(self, module: nn.Module) -> dict[str, list[torch.Tensor]]:
        """Resume every run up to ``module``'s input and return it, per stream and batch."""
        out: dict[str, list[torch.Tensor]] = {}
        for s, runs in self._runs.items():
            out[s] = []
            for r in runs:
                x = r.resume()
                if r.finished or r.module is not module:
                    where = "the end of the layer" if r.finished else f"a {r.module.__class__.__name__}"
                    raise FairGPTQError(
                        f"module {module.__class__.__name__} was not reached by the layer's forward in the "
                        f"expected order (the run reached {where} first); the architecture table names a "
                        f"module the layer does not call, or lists roles out of forward order")
                out[s].append(x)
        return out

    def outputs(self) -> dict[str, list[Any]]:
        """Run every forward to its end and return the layer's outputs, per stream and batch."""
        out: dict[str, list[Any]] = {}
        for s, runs in self._runs.items():
            out[s] = []
            for r in runs:
                value = r.resume()
                if not r.finished:
                    raise FairGPTQError(f"the layer's forward called {r.module.__class__.__name__} again after it "
                                        f"was quantized; roles must be called once per forward, in table order")
                out[s].append(value)
        return out
