"""One decoder layer run on every batch, pausing at module inputs: true-sequential in one forward.

True-sequential GPTQ quantizes a layer's roles in forward order and needs each role's
input computed with the earlier roles already quantized.  Restarting the layer from its
input for every role costs about 2.6 layer forwards per layer (the attention is computed
three times).  Here each batch's forward runs in its own thread and pauses in a forward
pre-hook at the next role's first module; the driver quantizes the role, writes the weights
back and resumes every run, which goes on with the quantized weights.  Exactly one thread
computes at any time (a strict hand-off through semaphores), so the arithmetic is the same
as the restart loop's, bit for bit, for one layer forward per layer.

The paused runs keep their intermediate tensors alive: every batch's attention and MLP
intermediates at once, several times the captured inputs on wide layers (a 3B Llama's layer
with 64 x 512 calibration tokens: about 6 GiB).  :class:`RestartedRuns` is the restart loop
itself, for sequential onloading, where memory is the constraint and compute is not: one
batch's forward at a time, restarted from the layer input for each role.
"""
from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import FairGPTQError

_local = threading.local()


def _out_of_order(module: nn.Module, reached: str) -> FairGPTQError:
    return FairGPTQError(
        f"module {module.__class__.__name__} was not reached by the layer's forward in the expected order (the "
        f"run reached {reached} first); the architecture table names a module the layer does not call, or lists "
        f"roles out of forward order")


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
                    raise _out_of_order(module, where)
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


class _Stop(Exception):
    """Raised in a forward pre-hook to end a restarted forward once the wanted input is captured."""


class RestartedRuns:
    """:class:`LayerRuns`' interface by restarting each batch's forward for every pause module.

    About 2.6 layer forwards per layer instead of one, for memory: nothing but the captured inputs
    outlives a forward.  The arithmetic is the same as :class:`LayerRuns`' (the same operations on
    the same weights in the same order), so both quantize to the same codes.
    """

    def __init__(self, layer: nn.Module, calls: dict[str, list[tuple[torch.Tensor, tuple, dict]]],
                 pause_at: list[nn.Module]) -> None:
        self._layer, self._calls, self._pause_at = layer, calls, pause_at
        self._next = 0  # index in pause_at of the module whose input is wanted next
        self._handles = [m.register_forward_pre_hook(partial(self._hook, i)) for i, m in enumerate(pause_at)]
        self._active = False
        self._captured: torch.Tensor | None = None

    def _hook(self, index: int, module: nn.Module, args: tuple) -> None:
        if not self._active or index < self._next:
            return  # an earlier role, already quantized: the forward goes through it
        if index > self._next:
            raise _out_of_order(self._pause_at[self._next], f"a {module.__class__.__name__}")
        self._captured = args[0].detach()
        raise _Stop

    def __enter__(self) -> RestartedRuns:
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def inputs_of(self, module: nn.Module) -> dict[str, list[torch.Tensor]]:
        """Run every batch's forward from the layer input up to ``module`` and return its input."""
        if self._next >= len(self._pause_at) or self._pause_at[self._next] is not module:
            reached = ("the end of the layer" if self._next >= len(self._pause_at)
                       else f"a {self._pause_at[self._next].__class__.__name__}")
            raise _out_of_order(module, reached)
        out: dict[str, list[torch.Tensor]] = {}
        self._active = True
        try:
            for s, calls in self._calls.items():
                out[s] = []
                for h, a, kw in calls:
                    self._captured = None
                    try:
                        self._layer(h, *a, **kw)
                    except _Stop:
                        pass
                    if self._captured is None:
                        raise _out_of_order(module, "the end of the layer")
                    out[s].append(self._captured)
        finally:
            self._active = False
        self._next += 1
        return out

    def outputs(self) -> dict[str, list[Any]]:
        """Every batch's full forward through the (now quantized) layer."""
        return {s: [self._layer(h, *a, **kw) for h, a, kw in calls] for s, calls in self._calls.items()}
