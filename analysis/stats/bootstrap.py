"""Seeded (stratified) bootstrap percentile confidence intervals.

All resamples are drawn at once as an index array of shape (n_resamples, n_samples) by
:func:`bootstrap_indices`; every CI of the product comes from those indices, so two metrics computed with
the same seed and strata see the same resamples. Within each stratum, cases are drawn with replacement
and the stratum keeps its size (pROC ``ci.auc(method="bootstrap", stratified=TRUE)`` does the same with
cases and controls), which keeps every class present in every resample.

The interval is the percentile interval: the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled
statistics, with numpy's default linear interpolation (R's quantile type 7, as pROC). Resamples whose
statistic is NaN (undefined) are left out of the quantiles. The reported estimate is the statistic on the
original sample, not the bootstrap mean.

Statistics are *vectorised* by default: they receive the resampled arrays with a leading resample axis,
shape (n_resamples, n_samples, ...), and return shape (n_resamples,). Statistics that are weighted sums can
be faster still with :func:`resample_counts` (see ``classification.py`` and ``regression.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BootstrapResult",
    "PairedBootstrapResult",
    "bootstrap_indices",
    "bootstrap_p_value",
    "paired_bootstrap_ci",
    "percentile_interval",
    "resample_counts",
    "resolve_strata",
    "stratified_bootstrap_ci",
]


class BootstrapResult(NamedTuple):
    """Percentile CI ``(low, high)`` and the statistic on the original sample."""

    low: float
    high: float
    estimate: float


class PairedBootstrapResult(NamedTuple):
    """Paired bootstrap of ``statistic(a) - statistic(b)`` on the same resampled cases."""

    low: float
    high: float
    estimate: float
    p_value: float
    estimate_a: float
    estimate_b: float


def resolve_strata(y_true, strata):
    """Stratum label per case.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
    strata : None, False or array_like, shape (n_samples,)
        None: stratify by ``y_true`` (class labels; a ValueError if ``y_true`` holds non-integer floats,
        which would make every case its own stratum). False: one stratum (plain bootstrap, e.g. for
        regression). An array: its values.

    Returns
    -------
    ndarray, shape (n_samples,)
    """
    y = np.asarray(y_true)
    if strata is False:
        return np.zeros(y.shape[0], dtype=np.int64)
    if strata is None:
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise ValueError(
                "y_true looks continuous; pass strata=False for an unstratified bootstrap "
                "or an explicit strata array"
            )
        return y
    s = np.asarray(strata)
    if s.shape != (y.shape[0],):
        raise ValueError(f"strata must have shape ({y.shape[0]},), got {s.shape}")
    return s


def bootstrap_indices(strata, n_resamples=2000, random_state=0):
    """Resample indices, stratified.

    Parameters
    ----------
    strata : array_like, shape (n_samples,)
        Stratum label of each case (see :func:`resolve_strata`).
    n_resamples : int
    random_state : int or numpy.random.Generator
        Seed; the same seed and strata give the same indices, bit for bit.

    Returns
    -------
    indices : ndarray of int64, shape (n_resamples, n_samples)
        Column i holds draws from the stratum of case i, so each stratum keeps its size.
    """
    strata = np.asarray(strata)
    n = strata.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(random_state)
    indices = np.empty((int(n_resamples), n), dtype=np.int64)
    # np.unique sorts the labels, which fixes the order of the draws (reproducibility).
    _, inverse = np.unique(strata, return_inverse=True)
    for label in range(inverse.max() + 1):
        members = np.flatnonzero(inverse == label)
        draws = rng.integers(0, members.size, size=(int(n_resamples), members.size))
        indices[:, members] = members[draws]
    return indices


def resample_counts(indices, n_samples):
    """How often each case occurs in each resample.

    Parameters
    ----------
    indices : ndarray of int, shape (n_resamples, n_samples_drawn)
    n_samples : int

    Returns
    -------
    counts : ndarray of float64, shape (n_resamples, n_samples)
        A weighted sum ``counts @ values`` equals the sum over each resample.
    """
    indices = np.asarray(indices)
    n_resamples = indices.shape[0]
    flat = indices + (np.arange(n_resamples)[:, None] * n_samples)
    counts = np.bincount(flat.ravel(), minlength=n_resamples * n_samples)
    return counts.reshape(n_resamples, n_samples).astype(np.float64)


def percentile_interval(samples, alpha=0.05):
    """``(low, high)`` quantiles at ``alpha/2`` and ``1 - alpha/2`` of the finite samples (NaN if none)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(s, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


def bootstrap_p_value(differences):
    """Two-sided bootstrap p-value for "the difference is 0".

    ``p = min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1))``: twice the smaller tail of the
    bootstrap distribution at 0 (the smallest two-sided percentile interval that contains 0), with the
    +1 of Davison & Hinkley (1997, eq. 4.11) so that a finite number of resamples never gives p = 0.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    tail = min(np.count_nonzero(d <= 0.0), np.count_nonzero(d >= 0.0)) + 1
    return float(min(1.0, 2.0 * tail / (d.size + 1)))


def _as_arrays(y_true, arrays):
    y = np.asarray(y_true)
    out = [np.asarray(a) for a in arrays]
    for i, a in enumerate(out):
        if a.shape[:1] != y.shape[:1]:
            raise ValueError(f"array {i + 1} has {a.shape[:1]} rows but y_true has {y.shape[0]}")
    return y, out


def _evaluate(statistic, indices, y, arrays, vectorized):
    if vectorized:
        values = statistic(y[indices], *[a[indices] for a in arrays])
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (indices.shape[0],):
            raise ValueError(
                f"a vectorised statistic must return shape ({indices.shape[0]},), got {values.shape}"
            )
        return values
    return np.array([float(statistic(y[i], *[a[i] for a in arrays])) for i in indices])


def stratified_bootstrap_ci(
    statistic,
    y_true,
    *arrays,
    strata=None,
    n_resamples=2000,
    alpha=0.05,
    random_state=0,
    vectorized=True,
):
    """Stratified bootstrap percentile CI of ``statistic(y_true, *arrays)``.

    Parameters
    ----------
    statistic : callable
        ``statistic(y, *arrays) -> float``. With ``vectorized=True`` (default) it receives arrays with a
        leading resample axis, shape (n_resamples, n_samples, ...), and returns shape (n_resamples,); the
        estimate is computed the same way with n_resamples = 1. With ``vectorized=False`` it is called once
        per resample with 1-D arrays (any scikit-learn metric works, slowly).
    y_true : array_like, shape (n_samples,)
    *arrays : array_like, shape (n_samples, ...)
        Resampled row-wise together with ``y_true`` (scores, probabilities, predictions).
    strata : None, False or array_like, shape (n_samples,)
        See :func:`resolve_strata`; default stratifies by ``y_true``.
    n_resamples : int
    alpha : float
        0.05 gives the 95% interval.
    random_state : int
        Seed of :func:`bootstrap_indices`.
    vectorized : bool

    Returns
    -------
    BootstrapResult
        ``(low, high, estimate)``.
    """
    y, arrays = _as_arrays(y_true, arrays)
    indices = bootstrap_indices(resolve_strata(y, strata), n_resamples, random_state)
    identity = np.arange(y.shape[0])[None, :]
    estimate = float(_evaluate(statistic, identity, y, arrays, vectorized)[0])
    values = _evaluate(statistic, indices, y, arrays, vectorized)
    low, high = percentile_interval(values, alpha)
    return BootstrapResult(low, high, estimate)


def paired_bootstrap_ci(
    statistic,
    y_true,
    pred_a,
    pred_b,
    *,
    strata=None,
    n_resamples=2000,
    alpha=0.05,
    random_state=0,
    vectorized=True,
):
    """Paired bootstrap of the difference ``statistic(y, pred_a) - statistic(y, pred_b)``.

    Both models are evaluated on the *same* resampled cases, so the CI and p-value account for the
    correlation between them (a paired comparison on one test set).

    Parameters
    ----------
    statistic : callable
        ``statistic(y, pred) -> float`` (vectorised as in :func:`stratified_bootstrap_ci`).
    y_true : array_like, shape (n_samples,)
    pred_a, pred_b : array_like, shape (n_samples, ...)
    strata, n_resamples, alpha, random_state, vectorized
        As in :func:`stratified_bootstrap_ci`; use ``strata=False`` for continuous ``y_true``.

    Returns
    -------
    PairedBootstrapResult
        ``(low, high, estimate, p_value, estimate_a, estimate_b)``; ``estimate = estimate_a - estimate_b``
        and ``p_value`` from :func:`bootstrap_p_value`.
    """
    y, (a, b) = _as_arrays(y_true, [pred_a, pred_b])
    indices = bootstrap_indices(resolve_strata(y, strata), n_resamples, random_state)
    identity = np.arange(y.shape[0])[None, :]
    est_a = float(_evaluate(statistic, identity, y, [a], vectorized)[0])
    est_b = float(_evaluate(statistic, identity, y, [b], vectorized)[0])
    diffs = _evaluate(statistic, indices, y, [a], vectorized) - _evaluate(
        statistic, indices, y, [b], vectorized
    )
    low, high = percentile_interval(diffs, alpha)
    estimate = est_a - est_b
    return PairedBootstrapResult(low, high, estimate, bootstrap_p_value(diffs), est_a, est_b)

