"""The CPU backend: the fallback that always works.

H is summed in float32 (one ``addmm`` per chunk of tokens: a BLAS-3 call, the only
part of accumulation that costs anything) and factored in float64 (d <= a few
thousand: milliseconds next to the column loop, and the float64 Cholesky is what
keeps nearly singular Hessians factorable without extra damping).  The column loop
runs where the weight is, on the CPU.

Threads: torch's intra-op pool defaults to the number of *physical* cores of the whole
machine, which over-subscribes a container or a ``taskset`` limited to fewer CPUs.
``activate`` sets the pool to the CPUs this process may run on (or ``threads``) for the
duration of the run and restores it afterwards; the calibration forwards and the Hessian
``addmm`` (large GEMMs) use it.  The GPTQ column loop is thousands of tiny vector ops: a
second thread buys nothing there, and on a shared, busy machine OpenMP's fork/join barriers
made it 15-20x slower (SmolLM2 down_proj, 2 cores at load 7: 4.9-7.5 s with 2 threads,
0.25-0.36 s with 1), so ``solve`` runs on ``loop_threads`` (default 1).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..contract import Backend, ConfigError


#: threads beyond this many per available CPU are refused: they buy nothing and can exhaust memory
MAX_THREADS_PER_CPU = 8


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask / cgroup-limited where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CpuBackend(Backend):
    """Everything on the CPU; ``threads`` (default: the CPUs available) for the run, ``loop_threads`` to solve."""

    name = "cpu"

    def __init__(self, threads: int | None = None, loop_threads: int = 1, *, hessian_dtype: str = "float32",
                 factor_dtype: str = "float64") -> None:
        super().__init__("cpu", hessian_dtype=hessian_dtype, factor_dtype=factor_dtype)
        most = max(MAX_THREADS_PER_CPU * available_cpus(), 64)
        for key, value in (("threads", threads), ("loop_threads", loop_threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{key} must be a whole number >= 1 (got {value!r})")
            if value is not None and value > most:
                raise ConfigError(f"{key}={value}: this machine has {available_cpus()} CPU(s); more than {most} "
                                  f"threads only exhausts memory (each thread reserves a stack). Use at most "
                                  f"{available_cpus()}")
        self.threads, self.loop_threads = threads, loop_threads

    def run_threads(self) -> int:
        return self.threads or min(torch.get_num_threads(), available_cpus())

    def activate(self):
        return num_threads(self.run_threads())

    def solving(self):
        return num_threads(self.loop_threads)

    def describe(self) -> dict:
        return {**super().describe(), "threads": self.run_threads(), "loop_threads": self.loop_threads}
