"""Regression and agreement metrics of predicted BMD against QCT (seed study tables 3 and 5, figures 5, 6).

Definitions, with e_i = pred_i - true_i and n cases:

- MAE = mean |e|; RMSE = sqrt(mean e^2) (mg/cm3).
- Explained variance = 1 - Var(e) / Var(true); R^2 = 1 - sum e^2 / sum (true - mean(true))^2 (population
  variances; scikit-learn's ``explained_variance_score`` and ``r2_score``).
- Pearson r and its two-sided p-value: ``scipy.stats.pearsonr``.
- Bland-Altman (Bland & Altman 1986, *Lancet* i:307-310; 1999, *Stat Methods Med Res* 8:135-160):
  bias d = mean(e) (prediction minus reference), SD s = sample SD of e (ddof = 1), limits of agreement
  d -/+ 1.96 s. 95% CI of the bias: d +/- t_{n-1, 0.975} * s / sqrt(n). 95% CI of each limit: limit +/-
  t_{n-1, 0.975} * sqrt(3 s^2 / n), the approximate SE of a limit given by Bland & Altman.
- Bootstrap percentile CIs (plain, unstratified resamples of cases, seeded) for MAE, RMSE, R^2, explained
  variance and Pearson r, all from the same resamples: each resampled statistic is a weighted sum of the
  original cases with the bootstrap counts as weights, so the 2000 resamples are a few matrix products.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.stats.bootstrap import (
    bootstrap_indices,
    bootstrap_p_value,
    percentile_interval,
    resample_counts,
)
from analysis.stats.roc import jsonable

__all__ = [
    "BlandAltman",
    "PairedMaeComparison",
    "RegressionMetrics",
    "bland_altman",
    "paired_mae_comparison",
    "regression_metrics",
]


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of prediction minus reference (units of the inputs, mg/cm3 for BMD)."""

    bias: float
    sd: float
    loa_low: float
    loa_high: float
    bias_ci_low: float
    bias_ci_high: float
    loa_low_ci_low: float
    loa_low_ci_high: float
    loa_high_ci_low: float
    loa_high_ci_high: float
    n: int
    loa_z: float = 1.96
    alpha: float = 0.05

    def to_dict(self):
        """Plain JSON-ready dict."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class RegressionMetrics:
    """Regression metrics; ``ci`` maps metric name to its bootstrap ``(low, high)``."""

    n: int
    mae: float
    rmse: float
    explained_variance: float
    r2: float
    pearson_r: float
    pearson_p: float
    bland_altman: BlandAltman
    ci: dict = field(default_factory=dict)
    alpha: float = 0.05
    ci_method: str = "bootstrap percentile"
    n_resamples: int = 2000
    random_state: int = 0

    def to_dict(self):
        """Plain JSON-ready dict (non-finite numbers become None)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class PairedMaeComparison:
    """Paired bootstrap of ``MAE(pred_a) - MAE(pred_b)`` on the same cases (negative: a is better)."""

    n: int
    mae_a: float
    mae_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float = 0.05
    n_resamples: int = 2000
    random_state: int = 0

    def to_dict(self):
        """Plain JSON-ready dict."""
        return jsonable(asdict(self))


def _check_pair(y_true, *preds, names=("y_pred",)):
    y = np.asarray(y_true, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    out = []
    for name, pred in zip(names, preds):
        p = np.asarray(pred, dtype=np.float64)
        if p.shape != y.shape:
            raise ValueError(f"{name} has shape {p.shape} but y_true has {y.shape}")
        out.append(p)
    for name, arr in zip(("y_true",) + tuple(names), [y] + out):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} has a missing or non-finite value at index {first}")
    if y.size < 3:
        raise ValueError(f"need at least 3 cases, got {y.size}")
    return y, out


def bland_altman(y_true, y_pred, alpha=0.05, loa_z=1.96):
    """Bland-Altman bias, limits of agreement and their CIs (formulas in the module docstring).

    Parameters
    ----------
    y_true, y_pred : array_like, shape (n_samples,)
        Reference and prediction; differences are ``y_pred - y_true``.
    alpha : float
        0.05 for 95% CIs (t quantile with n - 1 degrees of freedom).
    loa_z : float
        Multiplier of the SD for the limits (1.96).

    Returns
    -------
    BlandAltman
    """
    from scipy.stats import t as student_t

    y, (p,) = _check_pair(y_true, y_pred)
    d = p - y
    n = d.size
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    tq = float(student_t.ppf(1.0 - alpha / 2.0, n - 1))
    se_bias = sd / math.sqrt(n)
    se_loa = math.sqrt(3.0 * sd * sd / n)
    low, high = bias - loa_z * sd, bias + loa_z * sd
    return BlandAltman(
        bias=bias,
        sd=sd,
        loa_low=low,
        loa_high=high,
        bias_ci_low=bias - tq * se_bias,
        bias_ci_high=bias + tq * se_bias,
        loa_low_ci_low=low - tq * se_loa,
        loa_low_ci_high=low + tq * se_loa,
        loa_high_ci_low=high - tq * se_loa,
        loa_high_ci_high=high + tq * se_loa,
        n=int(n),
        loa_z=float(loa_z),
        alpha=float(alpha),
    )


def _weighted_metrics(y, p, weights):
    """MAE, RMSE, R^2, explained variance and Pearson r of weighted copies of the sample, each shape (B,).

    Values are centred on the original means first, so the moment formulas lose no precision.
    """
    total = weights.sum(axis=1)
    yc = y - y.mean()
    pc = p - p.mean()
    e = p - y
    ec = e - e.mean()
    columns = np.stack([np.abs(e), e * e, yc, yc * yc, pc, pc * pc, yc * pc, ec, ec * ec], axis=1)
    m = (weights @ columns) / total[:, None]
    abs_e, sq_e, my, myy, mp, mpp, myp, me, mee = m.T
    var_y = myy - my * my
    var_p = mpp - mp * mp
    var_e = mee - me * me
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - sq_e / var_y
        ev = 1.0 - var_e / var_y
        r = (myp - my * mp) / np.sqrt(var_y * var_p)
    return {"mae": abs_e, "rmse": np.sqrt(sq_e), "r2": r2, "explained_variance": ev, "pearson_r": r}


def regression_metrics(y_true, y_pred, n_resamples=2000, random_state=0, *, alpha=0.05, resamples_out=None):
    """MAE, RMSE, explained variance, R^2, Pearson r/p, Bland-Altman, and bootstrap CIs.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Reference values (QCT BMD, mg/cm3).
    y_pred : array_like, shape (n_samples,)
        Predictions, same units.
    n_resamples : int
        Bootstrap resamples for the CIs of MAE, RMSE, R^2, explained variance and Pearson r; 0 skips them.
    random_state : int
        Seed of the resamples.
    alpha : float
        0.05 for 95% CIs.
    resamples_out : dict, optional
        Receives ``"mae"``: the MAE on each resample, shape (n_resamples,).

    Returns
    -------
    RegressionMetrics
    """
    from scipy.stats import pearsonr

    y, (p,) = _check_pair(y_true, y_pred)
    point = {k: float(v[0]) for k, v in _weighted_metrics(y, p, np.ones((1, y.size))).items()}
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        r, r_p = float("nan"), float("nan")
    else:
        res = pearsonr(y, p)
        r, r_p = float(res.statistic), float(res.pvalue)
    ci = {}
    if n_resamples:
        weights = resample_counts(bootstrap_indices(np.zeros(y.size), n_resamples, random_state), y.size)
        for name, values in _weighted_metrics(y, p, weights).items():
            ci[name] = percentile_interval(values, alpha)
            if resamples_out is not None and name == "mae":
                resamples_out["mae"] = values
    return RegressionMetrics(
        n=int(y.size),
        mae=point["mae"],
        rmse=point["rmse"],
        explained_variance=point["explained_variance"],
        r2=point["r2"],
        pearson_r=r,
        pearson_p=r_p,
        bland_altman=bland_altman(y, p, alpha=alpha),
        ci=ci,
        alpha=float(alpha),
        n_resamples=int(n_resamples),
        random_state=int(random_state),
    )


def paired_mae_comparison(y_true, pred_a, pred_b, n_resamples=2000, random_state=0, *, alpha=0.05):
    """Paired bootstrap of the MAE difference of two predictions of the same cases.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
    pred_a, pred_b : array_like, shape (n_samples,)
    n_resamples : int
        >= 1.
    random_state : int
    alpha : float

    Returns
    -------
    PairedMaeComparison
        ``diff = MAE_a - MAE_b`` with percentile CI and the two-sided bootstrap p-value of
        :func:`analysis.stats.bootstrap.bootstrap_p_value`. Same resamples (and so the same numbers) as
        ``paired_bootstrap_ci(mae, y_true, pred_a, pred_b, strata=False)``.
    """
    y, (a, b) = _check_pair(y_true, pred_a, pred_b, names=("pred_a", "pred_b"))
    weights = resample_counts(bootstrap_indices(np.zeros(y.size), n_resamples, random_state), y.size)
    diff_per_case = np.abs(a - y) - np.abs(b - y)
    diffs = weights @ diff_per_case / weights.sum(axis=1)
    mae_a = float(np.abs(a - y).mean())
    mae_b = float(np.abs(b - y).mean())
    low, high = percentile_interval(diffs, alpha)
    return PairedMaeComparison(
        n=int(y.size),
        mae_a=mae_a,
        mae_b=mae_b,
        diff=mae_a - mae_b,
        ci_low=low,
        ci_high=high,
        p_value=bootstrap_p_value(diffs),
        alpha=float(alpha),
        n_resamples=int(n_resamples),
        random_state=int(random_state),
    )
