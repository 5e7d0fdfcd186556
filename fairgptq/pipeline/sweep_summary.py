"""The shape of a finished sweep's ``results.json`` that ``fairgptq report`` reads, checked before any table.

A summary edited by hand, cut short, or written by another version used to reach the table code
and stop there with a KeyError, TypeError or JSONDecodeError (exit 1, a traceback with --debug).
Checking the fields the report reads, strictly (the string '12.5' is not a number, ``true`` is not
a seed), turns each of those into one line naming the file, the field and what to do.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core.errors import ConfigError
from .rundir import read_sweep_summary


class _Interval(BaseModel):
    model_config = ConfigDict(extra="allow")
    mean: float | None = None
    lo: float | None = None
    hi: float | None = None
    p: float | None = None


class _VsReference(BaseModel):
    model_config = ConfigDict(extra="allow")
    across_seeds: dict[str, _Interval]


class _Group(BaseModel):
    model_config = ConfigDict(extra="allow")
    group: str
    plain: bool = False
    seeds: list[int] = Field(min_length=1)
    metrics: dict[str, _Interval]
    # absent on a plain group; when present, never null (the tables test "vs_reference" in a group)
    reference: str = None  # type: ignore[assignment]
    vs_reference: _VsReference = None  # type: ignore[assignment]


class _Point(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    group: str | None = None
    seed: int | None = None
    plain: bool = False
    seconds: float | None = None


class _Summary(BaseModel):
    model_config = ConfigDict(extra="allow")
    points: list[_Point] = Field(min_length=1)
    groups: list[_Group] | None = None
    baseline: dict | None = None

    @model_validator(mode="after")
    def _references_are_plain_groups(self) -> "_Summary":
        plain = {g.group for g in self.groups or () if g.plain}
        for g in self.groups or ():
            # summaries written before "reference" existed compare with the first plain group
            if g.vs_reference is not None and (g.reference or next(iter(plain), None)) not in plain:
                raise ValueError(f"group {g.group!r} is compared with {g.reference!r}, which is no plain group")
        return self


def read_report_summary(sweep: Path) -> dict:
    """A finished sweep's summary with repeats, checked; a clear error for a single run, a sweep without
    repeats, or a summary that is not JSON or lacks what the report reads."""
    try:
        summary = read_sweep_summary(sweep)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{sweep / 'results.json'} is not readable JSON ({e}); rewrite it from the points with "
                          f"`fairgptq report {sweep} --rewrite`") from None
    if isinstance(summary, dict) and "points" not in summary and "pipeline" in summary:
        raise ConfigError(f"{sweep} is a single run, not a sweep; its report.md holds its results (compare runs "
                          f"with `fairgptq compare RUN --baseline RUN`)")
    try:
        _Summary.model_validate(summary, strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(k) for k in first["loc"]) or "the top level"
        raise ConfigError(f"{sweep / 'results.json'}: {where}: {first['msg']} (the summary is damaged or from "
                          f"another version); rewrite it from the points with `fairgptq report {sweep} --rewrite`"
                          ) from None
    if not summary.get("groups"):
        raise ConfigError(f"{sweep} is a sweep without repeats; its report.md compares its points already")
    return summary


