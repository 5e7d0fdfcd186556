"""Which Fair-GPTQ point meets the recipe criteria: the bias / perplexity frontier of research sweeps.

Issue 16 fixes what a recommended recipe must show against plain GPTQ on the same H source and seeds:
CrowS-Pairs pct_stereotype lower by >= 2 points, significant (pooled McNemar p < 0.05 over >= 5
seeds, and the across-seed t-interval excluding 0), WikiText-2 perplexity <= 1.05 x plain's,
zero-shot accuracy kept >= 97 % and StereoSet held-out SS no further from 50 than plain's.  This
prints every compared point of the given sweeps against each criterion (Markdown), with what
explains it (tr H_bias / tr H, spectral radius, overshoots, eigen repairs, largest ‖ΔW‖/‖W‖), names
the best point among those that keep the model, and draws the frontier: the CrowS-Pairs change
against the perplexity ratio, with the criteria's lines.

    .venv/bin/python scripts/recipe_frontier.py runs/research/recipe_alpha runs/research/recipe_h_source \
        --plot docs/research/recipe_frontier.png

Issue 24 asks for 98 % of plain GPTQ's zero-shot accuracy (``--zero-shot-kept 0.98``); the plot's
points carry both intervals: the CrowS-Pairs change and the perplexity change, each paired over seeds.

Issue 33 judges by distance from parity instead (``--parity``): a lower CrowS-Pairs share is better
only down to 50.  Against plain GPTQ on the same H and seeds: StereoSet split by target term, ICAT
>= +5 points and |SS − 50| >= 3 points smaller (paired t p < 0.05), LMS at most 0.5 points lower,
CrowS-Pairs |pct − 50| at most 1 point larger, WikiText-2 perplexity <= 1.02 x, zero-shot >= 98 %,
>= 5 seeds (:data:`PARITY_CRITERIA`, :func:`parity_checks`).

    .venv/bin/python scripts/recipe_frontier.py --parity runs/research/parity

Reads each finished sweep's ``results.json`` (its ``groups``) and its points' ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from fairgptq.analysis.plotting import pyplot
from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary

CROWS = "crows_pairs.pct_stereotype"
PPL = "wikitext2.perplexity"
SS = "stereoset.SS"
ZERO_SHOT = ("piqa.acc", "openbookqa.acc", "siqa.acc")
CRITERIA = {"drop >= 2": "CrowS-Pairs at least 2 points below plain GPTQ",
            "significant": "pooled McNemar p < 0.05 and the t-interval excludes 0",
            ">= 5 seeds": "five or more pair seeds",
            "PPL <= 1.05x": "WikiText-2 perplexity at most 1.05 x plain GPTQ's",
            "zero-shot >= 97 %": "mean PIQA/OBQA/SIQA accuracy at least 97 % (--zero-shot-kept) of plain GPTQ's",
            "SS not worse": "StereoSet held-out SS no further from 50 than plain GPTQ's"}
ZERO_SHOT_KEPT = {"fraction": 0.97}  # --zero-shot-kept sets it

# issue 33: distances from parity (|score − 50|, each paired over seeds by the sweep's statistics)
CROWS_DISTANCE = "crows_pairs.pct_stereotype_from_parity"
SS_DISTANCE = "stereoset.SS_from_parity"
ICAT, LMS = "stereoset.ICAT", "stereoset.LMS"
SPLIT_KEY = "evaluation.stereoset_split_by"
PARITY_CRITERIA = {"split by target": "StereoSet scored on its hold-out split by target term",
                   "ICAT >= +5": "StereoSet ICAT at least 5 points above plain GPTQ's (mean over seeds)",
                   "|SS − 50| >= 3 smaller": "|SS − 50| at least 3 points below plain GPTQ's, paired t p < 0.05",
                   "LMS >= −0.5": "StereoSet LMS at most 0.5 points below plain GPTQ's",
                   "CrowS |pct − 50| <= +1": "CrowS-Pairs |pct − 50| at most 1 point above plain GPTQ's",
                   "PPL <= 1.02x": "WikiText-2 perplexity at most 1.02 x plain GPTQ's",
                   "zero-shot >= 98 %": "mean PIQA/OBQA/SIQA accuracy at least 98 % of plain GPTQ's",
                   ">= 5 seeds": "five or more seeds"}


def zero_shot_key() -> str:
    return f"zero-shot >= {100 * ZERO_SHOT_KEPT['fraction']:g} %"


def quality() -> tuple[str, str]:
    """What "keeps the model" means."""
    return ("PPL <= 1.05x", zero_shot_key())


@dataclass
class Point:
    """One compared point of one sweep: its paired differences and what the criteria read off them."""

    sweep: str
    group: str
    seeds: int
    crows: dict
    mcnemar_p: float | None
    ppl_ratio: float | None
    ppl_ratio_interval: tuple[float, float] | None
    zero_shot_kept: float | None
    ss_distance_change: float | None
    stability: dict
    seconds: float
    origins: tuple[str, ...] = ()
    diffs: dict = field(default_factory=dict)  # every metric's across-seed paired difference from plain GPTQ
    split_by: str = "item"  # what the StereoSet hold-out was split by
    failed: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)

    @property
    def keeps_model(self) -> bool:
        """No quality criterion measured and missed (one not measured is stated beside the verdict)."""
        return not any(c in self.failed for c in quality())


def _mean_metric(group: dict, metric: str) -> float | None:
    m = group["metrics"].get(metric)
    return None if m is None else m["mean"]


def _origins(sweep: Path, names: list[str], results: list[dict]) -> tuple[str, ...]:
    """Where each seed's run was computed: a point copied by ``--reuse`` names its original."""
    out = []
    for name, res in zip(names, results):
        run = (sweep / "points" / name).resolve()
        while True:  # a copy of a copy names the copy it came from: follow it to the computed run
            source = res.get("reused_from", {}).get("run")
            if not source or not (Path(source) / "results.json").is_file():
                break
            run = Path(source)
            res = json.loads((run / "results.json").read_text())
        out.append(str(run))
    return tuple(sorted(out))


def _stability(results: list[dict]) -> dict:
    """Mean over seeds of: median tr(H_bias)/tr(H) and max radius over the term's modules, events, max ΔW."""
    per_seed = []
    for res in results:
        q = res["quantization"]
        fair = [m for m in q["modules"] if m.get("fair_mode")]
        ratios = [m["hbias_trace_ratio"] for m in fair if m.get("hbias_trace_ratio") is not None]
        radii = [m["fair_radius"] for m in fair if m.get("fair_radius") is not None]
        per_seed.append({"trace_ratio": statistics.median(ratios) if ratios else None,
                         "max_radius": max(radii) if radii else None,
                         "overshoots": q["summary"]["overshoots"], "eigen_repairs": q["summary"]["eigen_repairs"],
                         "max_delta_w_rel": q["summary"]["max_delta_w_rel"]})
    out = {}
    for key in per_seed[0] if per_seed else ():
        values = [s[key] for s in per_seed if s[key] is not None]
        out[key] = statistics.fmean(values) if values else None
    return out


def compared_points(sweep: Path) -> list[Point]:
    summary = read_sweep_summary(sweep)
    plain = next((g for g in summary["groups"] if g.get("plain")), None)
    out = []
    for g in summary["groups"]:
        if "vs_reference" not in g or g["vs_reference"]["across_seeds"].get(CROWS) is None:
            continue
        ref = next((r for r in summary["groups"] if r["group"] == g.get("reference")), plain)
        diffs = g["vs_reference"]["across_seeds"]
        names = [p["name"] for p in summary["points"] if p["group"] == g["group"]]
        runs = [json.loads((sweep / "points" / n / "results.json").read_text()) for n in names]  # read once
        seconds = statistics.fmean(p["seconds"] for p in summary["points"] if p["group"] == g["group"])
        ppl, ref_ppl = _mean_metric(g, PPL), _mean_metric(ref, PPL)
        zs = [(_mean_metric(g, m), _mean_metric(ref, m)) for m in ZERO_SHOT]
        zs = [(a, b) for a, b in zs if a is not None and b is not None]
        ss, ref_ss = _mean_metric(g, SS), _mean_metric(ref, SS)
        ppl_diff = diffs.get(PPL) or {}
        p = Point(sweep=sweep.name, group=g["group"], seeds=len(g["seeds"]), crows=diffs[CROWS],
                  mcnemar_p=(g["vs_reference"].get("pooled_mcnemar") or {}).get("crows_pairs", {}).get("p"),
                  ppl_ratio=None if ppl is None or ref_ppl is None else ppl / ref_ppl,
                  ppl_ratio_interval=(None if ref_ppl is None or ppl_diff.get("lo") is None else
                                      (1 + ppl_diff["lo"] / ref_ppl, 1 + ppl_diff["hi"] / ref_ppl)),
                  zero_shot_kept=(statistics.fmean(a for a, _ in zs) / statistics.fmean(b for _, b in zs)) if zs else None,
                  ss_distance_change=None if ss is None or ref_ss is None else abs(ss - 50) - abs(ref_ss - 50),
                  stability=_stability(runs), seconds=seconds, origins=_origins(sweep, names, runs),
                  diffs=diffs, split_by=str(g.get("values", {}).get(SPLIT_KEY, "item")))
        checks = _checks(p)
        p.failed = [c for c, ok in checks.items() if ok is False]
        p.unmeasured = [c for c, ok in checks.items() if ok is None]
        out.append(p)
    return out


def _checks(p: Point) -> dict[str, bool | None]:
    """Each criterion: met, missed, or None where the sweep did not measure what it reads."""
    c = p.crows
    excludes_zero = c.get("lo") is not None and (c["lo"] > 0 or c["hi"] < 0)

    def at_most(x: float | None, bound: float) -> bool | None:
        return None if x is None else x <= bound

    return {"drop >= 2": c["mean"] <= -2,
            "significant": None if p.mcnemar_p is None else (excludes_zero and c["mean"] < 0 and p.mcnemar_p < 0.05),
            ">= 5 seeds": p.seeds >= 5,
            "PPL <= 1.05x": at_most(p.ppl_ratio, 1.05),
            zero_shot_key(): None if p.zero_shot_kept is None else p.zero_shot_kept >= ZERO_SHOT_KEPT["fraction"],
            "SS not worse": at_most(p.ss_distance_change, 0.0)}


def parity_checks(p: Point) -> dict[str, bool | None]:
    """Issue 33's criterion, each check met, missed, or None where the sweep did not measure what it reads."""
    def mean(metric: str) -> float | None:
        return (p.diffs.get(metric) or {}).get("mean")

    ss = p.diffs.get(SS_DISTANCE) or {}
    return {"split by target": p.split_by == "target",
            "ICAT >= +5": None if mean(ICAT) is None else mean(ICAT) >= 5.0,
            "|SS − 50| >= 3 smaller": (None if ss.get("mean") is None else
                                      ss["mean"] <= -3.0 and ss.get("p") is not None and ss["p"] < 0.05),
            "LMS >= −0.5": None if mean(LMS) is None else mean(LMS) >= -0.5,
            "CrowS |pct − 50| <= +1": None if mean(CROWS_DISTANCE) is None else mean(CROWS_DISTANCE) <= 1.0,
            "PPL <= 1.02x": None if p.ppl_ratio is None else p.ppl_ratio <= 1.02,
            "zero-shot >= 98 %": None if p.zero_shot_kept is None else p.zero_shot_kept >= 0.98,
            ">= 5 seeds": p.seeds >= 5}


def _diff_cell(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return (f"{d['mean']:+.2f} [{_fmt(d.get('lo'), '+.2f')}, {_fmt(d.get('hi'), '+.2f')}], p {_fmt(d.get('p'), '.2g')}")


def parity_table(points: list[Point]) -> str:
    """Per point: the distances from parity, ICAT and LMS paired with plain GPTQ over seeds, and what it misses."""
    head = ["id", "sweep", "point", "seeds", "StereoSet split", "Δ \\|SS − 50\\| [95 % CI], t p", "Δ ICAT", "Δ LMS",
            "Δ CrowS \\|pct − 50\\|", "PPL / plain", "zero-shot kept", "criteria missed"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, p in enumerate(points, 1):
        checks = parity_checks(p)
        missed = [c for c, ok in checks.items() if ok is False]
        unmeasured = [c for c, ok in checks.items() if ok is None]
        rows.append("| " + " | ".join([
            f"P{i}", p.sweep, p.group, str(p.seeds), p.split_by, _diff_cell(p.diffs.get(SS_DISTANCE)),
            _diff_cell(p.diffs.get(ICAT)), _diff_cell(p.diffs.get(LMS)), _diff_cell(p.diffs.get(CROWS_DISTANCE)),
            _fmt(p.ppl_ratio, ".3f"),
            _fmt(None if p.zero_shot_kept is None else 100 * p.zero_shot_kept, ".1f") + (" %" if p.zero_shot_kept else ""),
            (", ".join(missed) or "none") + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else "")])
            + " |")
    return "\n".join(rows)


def parity_verdict(points: list[Point]) -> str:
    """The point meeting issue 33's criterion with |SS − 50| shrunk most, or the closest point and what it misses."""
    def ss(p: Point) -> float:
        return (p.diffs.get(SS_DISTANCE) or {}).get("mean", math.inf)

    scored = [(p, parity_checks(p)) for p in points]
    passing = [p for p, c in scored if all(ok is True for ok in c.values())]
    if passing:
        best = min(passing, key=ss)
        return (f"Meets the parity criterion: {best.sweep} / {best.group} (Δ |SS − 50| {ss(best):+.2f}, Δ ICAT "
                f"{best.diffs[ICAT]['mean']:+.2f}, PPL x{best.ppl_ratio:.3f}).")
    if not scored:
        return "No point compared with plain GPTQ."
    best, checks = min(scored, key=lambda pc: (sum(ok is not True for ok in pc[1].values()), ss(pc[0])))
    missed = [c for c, ok in checks.items() if ok is False]
    unmeasured = [c for c, ok in checks.items() if ok is None]
    return (f"No point meets the parity criterion. Closest (fewest checks missed, then |SS − 50| shrunk most): "
            f"{best.sweep} / {best.group}, Δ |SS − 50| {_diff_cell(best.diffs.get(SS_DISTANCE))}; it misses: "
            f"{', '.join(missed) or 'nothing measured'}" + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else "")
            + ".")


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(points: list[Point]) -> str:
    head = ["id", "sweep", "point", "seeds", "Δ CrowS-Pairs [95 % CI], t p", "McNemar p", "PPL / plain",
            "zero-shot kept", "Δ \\|SS − 50\\|", "tr αH_bias / tr H", "max radius", "modules with radius ≥ 1",
            "eigen repairs", "max ‖ΔW‖/‖W‖", "s / run", "criteria missed"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, p in enumerate(points, 1):
        c, s = p.crows, p.stability
        t = f"{c['mean']:+.2f} [{_fmt(c.get('lo'), '+.2f')}, {_fmt(c.get('hi'), '+.2f')}], p {_fmt(c.get('p'), '.2f')}"
        rows.append("| " + " | ".join([
            f"P{i}", p.sweep, p.group, str(p.seeds), t, _fmt(p.mcnemar_p, ".2g"), _fmt(p.ppl_ratio, ".3f"),
            _fmt(None if p.zero_shot_kept is None else 100 * p.zero_shot_kept, ".1f") + (" %" if p.zero_shot_kept else ""),
            _fmt(p.ss_distance_change, "+.2f"), _fmt(s.get("trace_ratio"), ".3g"), _fmt(s.get("max_radius"), ".3g"),
            _fmt(s.get("overshoots"), ".1f"), _fmt(s.get("eigen_repairs"), ".1f"), _fmt(s.get("max_delta_w_rel"), ".3f"),
            f"{p.seconds:.0f}", (", ".join(p.failed) or "none")
            + (f" (not measured: {', '.join(p.unmeasured)})" if p.unmeasured else "")]) + " |")
    return "\n".join(rows)


def verdict(points: list[Point]) -> str:
    passing = [p for p in points if not p.failed and not p.unmeasured]
    if passing:
        best = min(passing, key=lambda p: p.crows["mean"])
        return (f"Meets every criterion: {best.sweep} / {best.group} (Δ CrowS-Pairs {best.crows['mean']:+.2f}, "
                f"PPL x{best.ppl_ratio:.3f}).")
    kept = [p for p in points if p.keeps_model]
    if not kept:
        return "No point meets every criterion, and none keeps the model (perplexity or zero-shot missed)."
    best = min(kept, key=lambda p: p.crows["mean"])
    return (f"No point meets every criterion. Largest CrowS-Pairs drop among the points that keep the model: "
            f"{best.sweep} / {best.group}, {best.crows['mean']:+.2f} [{_fmt(best.crows.get('lo'), '+.2f')}, "
            f"{_fmt(best.crows.get('hi'), '+.2f')}] (t p {_fmt(best.crows.get('p'), '.2f')}, McNemar p "
            f"{_fmt(best.mcnemar_p, '.2g')}, {best.seeds} seeds), PPL x{best.ppl_ratio:.3f}; it misses: "
            f"{', '.join(best.failed)}" + (f" (not measured: {', '.join(best.unmeasured)})" if best.unmeasured else "")
            + ".")


def plot(points: list[Point], out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sweeps = list(dict.fromkeys(p.sweep for p in points))
    for i, p in enumerate(points, 1):
        if p.ppl_ratio is None:
            continue
        c = p.crows
        err = None if c.get("lo") is None else [[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]]
        xerr = (None if p.ppl_ratio_interval is None else
                [[max(0.0, p.ppl_ratio - p.ppl_ratio_interval[0])], [max(0.0, p.ppl_ratio_interval[1] - p.ppl_ratio)]])
        colour = colours[sweeps.index(p.sweep) % len(colours)]
        ax.errorbar(p.ppl_ratio, c["mean"], yerr=err, xerr=xerr, fmt="o", ms=4, capsize=2, color=colour)
        ax.annotate(f"P{i}", (p.ppl_ratio, c["mean"]), fontsize=7, xytext=(3, 2),
                    textcoords="offset points")  # the table's id column names the point
    for i, s in enumerate(sweeps):
        ax.plot([], [], "o", color=colours[i % len(colours)], label=s)
    ax.axhline(0, color="k", lw=1)
    ax.axhline(-2, color="tab:green", ls="--", lw=1, label="criterion: 2 points below plain")
    ax.axvline(1.05, color="tab:red", ls="--", lw=1, label="criterion: PPL 1.05 x plain")
    ratios = [p.ppl_ratio for p in points if p.ppl_ratio is not None]
    log = bool(ratios) and max(ratios) / min(ratios) > 2  # α grids span orders of magnitude; screens do not
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("WikiText-2 perplexity / plain GPTQ's (same H source and seeds; 95 % paired interval"
                  + ("; log scale)" if log else ")"))
    ax.set_ylabel("CrowS-Pairs pct_stereotype − plain GPTQ\n(mean over seeds, 95 % t-interval)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweeps", type=Path, nargs="+", help="finished sweep directories with repeats")
    ap.add_argument("--plot", type=Path, help="write the frontier plot here (PNG)")
    ap.add_argument("--parity", action="store_true",
                    help="judge by issue 33's distance-from-parity criterion instead of issue 16's CrowS-Pairs drop")
    ap.add_argument("--zero-shot-kept", type=float, default=0.97,
                    help="share of plain GPTQ's zero-shot accuracy a point must keep (issue 16: 0.97, issue 24: 0.98)")
    args = ap.parse_args()
    ZERO_SHOT_KEPT["fraction"] = args.zero_shot_kept
    points, seen = [], set()
    for p in (p for s in args.sweeps for p in compared_points(s)):
        if p.origins not in seen:  # a point another sweep copied with --reuse is listed once
            seen.add(p.origins)
            points.append(p)
    if not points:
        raise SystemExit("no point compared with plain GPTQ on CrowS-Pairs across seeds in these sweeps")
    print(parity_table(points) if args.parity else table(points))
    print()
    print(parity_verdict(points) if args.parity else verdict(points))
    if args.plot:
        plot(points, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    try:
        main()
    except RunDirError as e:  # not a sweep, or one still running: say which, no traceback
        raise SystemExit(f"recipe_frontier.py: error: {e}")
