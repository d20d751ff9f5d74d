"""The statistics behind "matches the ticket": Student t-intervals over seeds and a non-inferiority test
against the ticket oracle (DESIGN.md, "Verdicts").

A pruner's runs are compared with the oracle's runs of the same setting and protocol. The difference ``d`` is
oriented so that larger is worse for the pruner: for accuracy ``d = oracle - pruner``; for a loss
``d = log(pruner) - log(oracle)`` (a factor: tolerance log 2 is "within 2x"). With the same seeds on both
sides the runs are paired (one seed is one planted network), otherwise Welch's unequal-variance t is used.

- ``matches``: the one-sided 95% upper bound of ``d`` is at most the tolerance;
- ``does not match``: the one-sided 95% lower bound of ``d`` exceeds the tolerance;
- ``undecided``: neither, or fewer than 2 seeds on a side.

Reads numbers only (no training code).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["MATCHES", "NO_MATCH", "UNDECIDED", "CONFIDENCE", "ACC_TOL", "LOSS_FACTOR", "Comparison",
           "t_interval", "log_scale", "tolerance", "compare", "compare_runs"]

MATCHES, NO_MATCH, UNDECIDED = "matches", "does not match", "undecided"
CONFIDENCE = 0.95
ACC_TOL = 0.02  # accuracy points below the oracle that still match
LOSS_FACTOR = 2.0  # times the oracle's loss that still matches (tolerance log 2 on the log scale)


def log_scale(metric: str) -> bool:
    """Losses are compared and averaged as logarithms (ratios), accuracies as differences."""
    return metric != "test_accuracy"


def tolerance(metric: str, acc_tol: float = ACC_TOL, loss_factor: float = LOSS_FACTOR) -> float:
    """The non-inferiority margin on the scale of ``d``."""
    if not log_scale(metric):
        return float(acc_tol)
    if not loss_factor > 1:
        raise ValueError(f"loss_factor must be > 1, got {loss_factor!r}")
    return math.log(loss_factor)


def _series(values, log: bool) -> pd.Series:
    """Numeric values without NaNs, as logarithms on the log scale (a loss of 0 is taken as 1e-300)."""
    v = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float).dropna()
    return np.log(v.clip(lower=1e-300)) if log else v


def t_interval(values, confidence: float = CONFIDENCE, log: bool = False) -> tuple[float, float, float, int]:
    """(mean, low, high, n): the two-sided Student t confidence interval of the mean over ``values``.

    ``log=True`` takes it on the logarithms and returns the geometric mean and its interval. With one value
    the interval is that value; with none, NaNs."""
    v = _series(values, log).to_numpy()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n == 1:
        lo = hi = mean
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
        lo, hi = mean - half, mean + half
    if log:
        return math.exp(mean), math.exp(lo), math.exp(hi), n
    return mean, lo, hi, n


@dataclass(frozen=True)
class Comparison:
    """A pruner against the oracle: ``d`` (worse is larger) with its one-sided bounds, and the verdict."""

    d: float
    lower: float  # one-sided lower confidence bound of d
    upper: float  # one-sided upper confidence bound of d
    n: int  # pruner seeds
    n_reference: int
    test: str  # "paired t", "Welch t" or "" (not enough seeds)
    tolerance: float
    verdict: str

    def interval(self) -> str:
        """``d`` with its two one-sided bounds, for tables: ``0.013 [-0.004, 0.03]``."""
        if math.isnan(self.d):
            return "—"
        if math.isnan(self.lower):
            return f"{self.d:.3g}"
        return f"{self.d:.3g} [{self.lower:.3g}, {self.upper:.3g}]"


def _verdict(lower: float, upper: float, tol: float) -> str:
    if upper <= tol:
        return MATCHES
    if lower > tol:
        return NO_MATCH
    return UNDECIDED


def compare(pruner: pd.Series, reference: pd.Series, *, metric: str, tol: float,
            confidence: float = CONFIDENCE) -> Comparison:
    """Compare a pruner's values with the oracle's, each a Series indexed by seed (one value per seed).

    Paired t when both sides have the same seeds, else Welch's t; one-sided bounds at ``confidence``."""
    log = log_scale(metric)
    p, r = _series(pruner, log), _series(reference, log)
    sign = 1.0 if log else -1.0  # d = log p - log r, or r - p
    n, m = len(p), len(r)
    if n == 0 or m == 0:
        return Comparison(math.nan, math.nan, math.nan, n, m, "", tol, UNDECIDED)
    d = sign * (float(p.mean()) - float(r.mean()))
    if n < 2 or m < 2:
        return Comparison(d, math.nan, math.nan, n, m, "", tol, UNDECIDED)
    paired = p.index.is_unique and r.index.is_unique and set(p.index) == set(r.index)
    if paired:
        diffs = sign * (p - r.reindex(p.index)).to_numpy()
        d = float(diffs.mean())
        se = float(diffs.std(ddof=1)) / math.sqrt(n)
        dof = n - 1
    else:
        a, b = float(p.var(ddof=1)) / n, float(r.var(ddof=1)) / m
        se = math.sqrt(a + b)
        dof = (a + b) ** 2 / (a * a / (n - 1) + b * b / (m - 1)) if a + b > 0 else math.inf
    half = float(stats.t.ppf(confidence, dof)) * se if se > 0 else 0.0
    lower, upper = d - half, d + half
    return Comparison(d, lower, upper, n, m, "paired t" if paired else "Welch t", tol, _verdict(lower, upper, tol))


def compare_runs(rows: pd.DataFrame, reference: pd.DataFrame, metric: str, tol: float,
                 confidence: float = CONFIDENCE) -> Comparison:
    """`compare` over two frames of runs with a ``seed`` column (several runs of one seed are averaged)."""
    def per_seed(frame: pd.DataFrame) -> pd.Series:
        frame = frame.dropna(subset=[metric])
        if frame.empty:
            return pd.Series(dtype=float)
        values = pd.to_numeric(frame[metric], errors="coerce")
        return values.groupby(frame["seed"]).mean()

    return compare(per_seed(rows), per_seed(reference), metric=metric, tol=tol, confidence=confidence)
