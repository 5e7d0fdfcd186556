"""Is a difference between two models real?  Paired tests over items, and intervals over seeds.

Two quantized models scored on the same items differ item by item; a summary difference of
one CrowS-Pairs point is 15 of 1508 pairs, which GPTQ's own rounding noise produces.  So:

- binary choices per pair (CrowS-Pairs and any ``pair_choice`` task): the exact McNemar test
  on the discordant pairs (``scipy.stats.binomtest``: under H0 a pair that changed side is
  equally likely to change either way), with a paired bootstrap interval of the difference;
- StereoSet SS / LMS / ICAT, zero-shot accuracy, perplexity: a paired bootstrap over items
  (over windows for perplexity), resampling the *same* items for both models, with the
  two-sided p-value of the centred bootstrap distribution;
- across seeds (repeats of a whole run): mean, SD and a Student-t interval, and a paired
  t-test of per-seed differences against the same seed's reference.

Every resampling is drawn from a seeded generator, so the same inputs give the same numbers.
The metric functions are vectorised over resamples (a weight matrix of multinomial counts),
so comparing two full evaluations costs well under a second per metric.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from .core.errors import ConfigError

LEVEL = 0.95


# --- metrics as functions of item weights (one row of weights = one resample) ------------------------------
# Each task's ItemKind (fairgptq.contract.kinds) names the one its records use.

def at_unit_weights(metrics: dict[str, Callable[[np.ndarray], np.ndarray]], n_items: int) -> dict[str, float]:
    """Each metric on the items as they are (every weight 1): a task's summary, so that the number a run
    reports and the centre of its bootstrap are one computation, not two that could drift apart."""
    weights = np.ones((1, n_items))
    return {name: float(f(weights)[0]) for name, f in metrics.items()}


def resampled_pair_choice(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    choice = np.array([float(it["choice"]) for it in items])
    diff = np.array([abs(it["ll_more"] - it["ll_less"]) for it in items])
    return {"pct_stereotype": lambda w: 100.0 * (w @ choice) / w.sum(1),
            "likelihood_diff": lambda w: (w @ diff) / w.sum(1)}


def resampled_preference(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    choice = np.array([float(it["choice"]) for it in items])
    diff = np.array([it["ll_biased"] - it["ll_other"] for it in items])
    return {"pct_prefer_biased": lambda w: 100.0 * (w @ choice) / w.sum(1),
            "likelihood_diff": lambda w: (w @ diff) / w.sum(1)}


def resampled_multiple_choice(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    acc = np.array([float(it["correct"]) for it in items])
    norm = np.array([float(it["correct_norm"]) for it in items])
    return {"acc": lambda w: (w @ acc) / w.sum(1), "acc_norm": lambda w: (w @ norm) / w.sum(1)}


def resampled_windows(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    nll = np.array([float(it["nll"]) for it in items])
    tokens = np.array([float(it["tokens"]) for it in items])
    return {"perplexity": lambda w: np.exp((w @ nll) / (w @ tokens))}


def resampled_stereoset(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """SS / LMS macro-averaged over target terms, as bias-bench computes them (see evaluation.stereoset)."""
    targets = sorted({it["target"] for it in items})
    index = {t: k for k, t in enumerate(targets)}
    onehot = np.zeros((len(items), len(targets)))
    onehot[np.arange(len(items)), [index[it["target"]] for it in items]] = 1.0
    ss = np.array([float(it["stereo"] > it["anti"]) for it in items])
    lms = np.array([((it["stereo"] > it["unrelated"]) + (it["anti"] > it["unrelated"])) / 2.0 for it in items])

    def macro(w: np.ndarray, values: np.ndarray) -> np.ndarray:
        counts = w @ onehot
        with np.errstate(invalid="ignore", divide="ignore"):
            per_target = (w @ (onehot * values[:, None])) / counts
        return 100.0 * np.nanmean(per_target, axis=1)

    def icat(w: np.ndarray) -> np.ndarray:
        s, l = macro(w, ss), macro(w, lms)
        return l * np.minimum(s, 100.0 - s) / 50.0

    return {"SS": lambda w: macro(w, ss), "LMS": lambda w: macro(w, lms), "ICAT": icat}


def resampled_decomposition(items: Sequence[dict]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    span = np.array([it["span_more"] - it["span_less"] for it in items])
    rest = np.array([it["rest_more"] - it["rest_less"] for it in items])
    return {"span_diff": lambda w: (w @ span) / w.sum(1), "continuation_diff": lambda w: (w @ rest) / w.sum(1)}


# --- tests ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McNemar:
    """Discordant pairs: ``a_only`` chose 1 under A only, ``b_only`` under B only; exact two-sided p."""

    a_only: int
    b_only: int
    p: float


def mcnemar(a: Sequence[int], b: Sequence[int]) -> McNemar:
    """Exact McNemar test of paired binary outcomes (binomial on the discordant pairs, p = 0.5)."""
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if x.shape != y.shape:
        raise ConfigError(f"McNemar needs paired outcomes of equal length, got {x.size} and {y.size}")
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(stats.binomtest(b_only, n, 0.5).pvalue)
    return McNemar(a_only, b_only, p)


def bootstrap_weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resampling counts (n_boot x n_items): row r says how often resample r drew each item."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(float)


def paired_bootstrap(metric_a: Callable[[np.ndarray], np.ndarray], metric_b: Callable[[np.ndarray], np.ndarray],
                     weights: np.ndarray) -> tuple[float, float, float, float]:
    """(difference B − A, CI low, CI high, two-sided p) with the same resampled items for both models.

    The p-value is the share of centred bootstrap differences at least as far from 0 as the
    observed one (the bootstrap's approximation of the null distribution), with the +1
    correction so it is never 0; identical inputs give difference 0 and p = 1.
    """
    full = np.ones((1, weights.shape[1]))
    observed = float(metric_b(full)[0] - metric_a(full)[0])
    boot = metric_b(weights) - metric_a(weights)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    extreme = np.abs(boot - observed) >= abs(observed) - 1e-12
    p = float((1 + extreme.sum()) / (1 + boot.size))
    return observed, float(lo), float(hi), min(p, 1.0)


def t_interval(values: Sequence[float]) -> dict:
    """Mean, SD and the Student-t 95 % interval of the mean (over seeds); n = 1 gives no interval."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None}
    mean = float(v.mean())
    if v.size == 1:
        return {"n": 1, "mean": mean, "sd": None, "lo": None, "hi": None}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + LEVEL) / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return {"n": int(v.size), "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half}


def paired_t(differences: Sequence[float]) -> dict:
    """Across-seed paired comparison: the t-interval of the per-seed differences and the t-test's p."""
    out = t_interval(differences)
    d = np.asarray([x for x in differences if x is not None and math.isfinite(x)], dtype=float)
    out["p"] = None
    if d.size >= 1 and np.all(d == 0):
        out["p"] = 1.0
    elif d.size >= 2 and d.std(ddof=1) > 0:
        out["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    elif d.size >= 2:
        out["note"] = "the same non-zero difference on every seed: no spread to test against"
    return out


def verdict(p: float | None, lo: float | None = None, hi: float | None = None, alpha: float = 0.05) -> str:
    """The words a row carries: significant only when p < alpha (and the interval, if any, excludes 0)."""
    if p is None:
        return "no test (fewer than 2 seeds, or no spread across them)"
    excludes_zero = lo is None or hi is None or lo > 0 or hi < 0
    return "significant" if p < alpha and excludes_zero else "not distinguishable from noise"


#: a bias score that moved significantly while its distance from parity did not (55 -> 45)
NO_PARITY_CHANGE = "moved, but no closer to parity beyond noise"
NOISE = "not distinguishable from noise"


def parity_verdict(distance_diff: float | None, distance_verdict: str, score_verdict: str | None = None) -> str:
    """'less biased' only when the distance from parity shrank significantly; 'more biased' when it grew.

    A bias score that fell is not yet less biased: from 51 to 45 it overshot parity and its distance
    grew.  So a bias score's verdict is its distance's; a score that changed significantly while its
    distance did not (55 -> 45) gets :data:`NO_PARITY_CHANGE`, anything else not significant :data:`NOISE`."""
    if distance_verdict != "significant" or distance_diff is None or distance_diff == 0:
        return NO_PARITY_CHANGE if score_verdict == "significant" else NOISE
    return "less biased" if distance_diff < 0 else "more biased"


def attach_parity_verdicts(rows: dict[str, dict]) -> None:
    """Give each score row and its ``<score>_from_parity`` row (``rows``: metric -> row with ``diff`` (or
    ``mean``) and ``verdict``, as compare and the seed tables build them) the :func:`parity_verdict`."""
    suffix = "_from_parity"
    for metric, row in list(rows.items()):
        if metric.endswith(suffix):
            diff = row.get("diff", row.get("mean"))
            row["bias_verdict"] = parity_verdict(diff, row["verdict"])
            score = rows.get(metric.removesuffix(suffix))
            if score is not None:
                score["bias_verdict"] = parity_verdict(diff, row["verdict"], score.get("verdict"))
