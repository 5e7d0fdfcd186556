"""The one way a report draws: matplotlib on its file-only backend (Agg), imported when a plot is asked for.

Importing matplotlib is slow and needs no display here, so every plot function asks :func:`pyplot`
instead of importing it at module level.
"""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed; plots are written to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
