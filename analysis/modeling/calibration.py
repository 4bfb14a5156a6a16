"""Thoraco-lumbar HU calibration of the chest model "T5-T10-Cal" (SPEC section 2, seed study eq. 1).

Trabecular HU changes steadily from level to level down the spine. With the level index n = 1..10 for
T5..L2 (``CALIBRATION_INDEX``), the seed study fits ``HU = k * n + intercept`` and predicts the lumbar
levels a chest CT does not show: ``HU_cal(n) = k * n + intercept_i`` at n = 8, 9, 10 (T12, L1, L2).

What is fitted, precisely
-------------------------
- **Cohort slope k** (``k_``): ordinary least squares of HU on n over *all* (n, HU) points pooled from the
  patients that have at least ``min_thoracic`` thoracic values (T5-T10) and at least ``min_lumbar`` lumbar
  values (T12-L2), every measured level from T5 to L2 included (T11 too when present). ``intercept_`` and
  ``r2_`` are that pooled line's intercept and coefficient of determination. Pooled OLS is the literal
  reading of "fit mean HU against n by linear regression"; it equals the average within-patient slope when
  every patient contributes the same levels, and otherwise between-patient differences leak into k, which
  is why only patients with both regions are used.
- **Patient intercept** (variant ``"cohort_slope"``, the default): with k fixed, the least-squares
  intercept over the patient's own thoracic values is ``mean(HU_i - k * n_i)``.
- **Per-patient slope** (variant ``"per_patient_slope"``): the patient's own OLS line through their
  thoracic values (needs at least 2 levels); the cohort k is still fitted and reported.

A patient without any thoracic value (or with fewer than 2 for the per-patient slope) gets NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from analysis.segmentation.levels import ABDOMEN_LEVELS, CALIBRATION_INDEX, CALIBRATION_LEVELS, CHEST_LEVELS

__all__ = ["VARIANTS", "ThoracolumbarCalibration", "hu_matrix"]

VARIANTS = ("cohort_slope", "per_patient_slope")
_N = np.array([CALIBRATION_INDEX[level] for level in CALIBRATION_LEVELS], dtype=np.float64)


def hu_matrix(X):
    """Per-patient mean HU by calibration level as an array.

    Parameters
    ----------
    X : array_like, shape (n_patients, 10), or sequence of mappings, or mapping
        An array in ``CALIBRATION_LEVELS`` order (T5..L2) with NaN for missing levels; or one mapping per
        patient ``{level name: mean HU}`` (levels outside T5..L2 are ignored, None means missing); or a
        mapping ``{patient id: {level name: mean HU}}``.

    Returns
    -------
    ids : list
        Patient ids (the mapping keys, otherwise row numbers).
    hu : ndarray of float64, shape (n_patients, 10)
        HU, NaN where not measured.
    """
    if isinstance(X, Mapping):
        ids = list(X.keys())
        rows = [X[i] for i in ids]
    else:
        rows = X
        ids = None
    if len(rows) and isinstance(rows[0], Mapping):
        hu = np.full((len(rows), len(CALIBRATION_LEVELS)), np.nan)
        for i, row in enumerate(rows):
            for j, level in enumerate(CALIBRATION_LEVELS):
                value = row.get(level)
                if value is not None:
                    hu[i, j] = float(value)
    else:
        hu = np.asarray(rows, dtype=np.float64)
        if hu.ndim != 2 or hu.shape[1] != len(CALIBRATION_LEVELS):
            raise ValueError(
                f"HU array must have shape (n_patients, {len(CALIBRATION_LEVELS)}) "
                f"in the order {CALIBRATION_LEVELS}, got {hu.shape}"
            )
    if np.isinf(hu).any():
        raise ValueError("HU values must be finite (use NaN for a missing level)")
    return (ids if ids is not None else list(range(hu.shape[0]))), hu


def _columns(levels):
    unknown = [level for level in levels if level not in CALIBRATION_INDEX]
    if unknown:
        raise ValueError(f"levels {unknown} are outside the calibration range {CALIBRATION_LEVELS}")
    return np.array([CALIBRATION_LEVELS.index(level) for level in levels])


class ThoracolumbarCalibration(TransformerMixin, BaseEstimator):
    """Cohort slope k of HU per level, and calibrated lumbar HU for chest-only patients.

    Parameters
    ----------
    variant : {"cohort_slope", "per_patient_slope"}
        How a patient's line is set (module docstring). Record it with every model version.
    output_levels : tuple of str
        Levels whose HU_cal :meth:`transform` returns (default T12, L1, L2: n = 8, 9, 10).
    thoracic_levels : tuple of str
        Levels a chest CT provides (T5-T10), used for the patient's line.
    lumbar_levels : tuple of str
        Levels that make a patient eligible for the cohort fit together with the thoracic ones.
    min_thoracic, min_lumbar : int
        Values a patient needs in each region to enter the cohort fit.

    Attributes
    ----------
    k_ : float
        Cohort slope, HU per level (negative: HU falls caudally).
    intercept_ : float
        Intercept of the pooled cohort line, HU at n = 0.
    r2_ : float
        R^2 of the pooled cohort line.
    n_patients_fit_, n_points_fit_ : int
        Patients and (n, HU) points used.
    patient_ids_ : list
        Ids of those patients.
    hu_fit_ : ndarray, shape (n_patients_fit_, 10)
        Their HU by level (kept for :meth:`curve_data`).
    """

    def __init__(
        self,
        variant="cohort_slope",
        output_levels=("T12", "L1", "L2"),
        thoracic_levels=CHEST_LEVELS,
        lumbar_levels=ABDOMEN_LEVELS,
        min_thoracic=1,
        min_lumbar=1,
    ):
        self.variant = variant
        self.output_levels = output_levels
        self.thoracic_levels = thoracic_levels
        self.lumbar_levels = lumbar_levels
        self.min_thoracic = min_thoracic
        self.min_lumbar = min_lumbar

    def fit(self, X, y=None):
        """Fit the cohort line on the patients with both regions.

        Parameters
        ----------
        X : see :func:`hu_matrix`
            Mean trabecular HU per patient and level.
        y : ignored

        Returns
        -------
        self
        """
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        ids, hu = hu_matrix(X)
        thor = _columns(self.thoracic_levels)
        lumb = _columns(self.lumbar_levels)
        eligible = (np.isfinite(hu[:, thor]).sum(axis=1) >= self.min_thoracic) & (
            np.isfinite(hu[:, lumb]).sum(axis=1) >= self.min_lumbar
        )
        hu_fit = hu[eligible]
        mask = np.isfinite(hu_fit)
        n = np.broadcast_to(_N, hu_fit.shape)[mask]
        v = hu_fit[mask]
        if np.unique(n).size < 2:
            raise ValueError(
                f"calibration needs patients with both thoracic {tuple(self.thoracic_levels)} and lumbar "
                f"{tuple(self.lumbar_levels)} values at two or more levels; {int(eligible.sum())} eligible"
            )
        n_mean = n.mean()
        v_mean = v.mean()
        sxx = ((n - n_mean) ** 2).sum()
        k = ((n - n_mean) * (v - v_mean)).sum() / sxx
        intercept = v_mean - k * n_mean
        ss_tot = ((v - v_mean) ** 2).sum()
        ss_res = ((v - (k * n + intercept)) ** 2).sum()
        self.k_ = float(k)
        self.intercept_ = float(intercept)
        self.r2_ = float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0
        self.n_patients_fit_ = int(eligible.sum())
        self.n_points_fit_ = int(v.size)
        self.patient_ids_ = [pid for pid, ok in zip(ids, eligible) if ok]
        self.hu_fit_ = hu_fit
        return self

    def _check_fitted(self):
        if not hasattr(self, "k_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("ThoracolumbarCalibration is not fitted yet; call fit first")

    def patient_lines(self, X):
        """Slope and intercept of each patient's line from their thoracic values only.

        Parameters
        ----------
        X : see :func:`hu_matrix`
            Lumbar values in X are ignored: a chest CT does not show them.

        Returns
        -------
        slopes, intercepts : ndarray, shape (n_patients,)
            HU per level and HU at n = 0; slopes equal ``k_`` for the cohort-slope variant. NaN where the
            patient has no thoracic value (or fewer than 2 for the per-patient slope).
        """
        self._check_fitted()
        _, hu = hu_matrix(X)
        thor = _columns(self.thoracic_levels)
        t = hu[:, thor]
        n = np.broadcast_to(_N[thor], t.shape)
        mask = np.isfinite(t)
        count = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.variant == "cohort_slope":
                slopes = np.where(count > 0, self.k_, np.nan)
                intercepts = np.where(mask, t - self.k_ * n, 0.0).sum(axis=1) / count
            else:
                n_mean = np.where(mask, n, 0.0).sum(axis=1) / count
                t_mean = np.where(mask, t, 0.0).sum(axis=1) / count
                dn = np.where(mask, n - n_mean[:, None], 0.0)
                dt = np.where(mask, t - t_mean[:, None], 0.0)
                sxx = (dn * dn).sum(axis=1)
                slopes = np.where(count >= 2, (dn * dt).sum(axis=1) / sxx, np.nan)
                intercepts = t_mean - slopes * n_mean
        intercepts = np.where(count > 0, intercepts, np.nan)
        return slopes.astype(np.float64), intercepts.astype(np.float64)

    def transform(self, X):
        """Calibrated HU at ``output_levels`` for each patient.

        Parameters
        ----------
        X : see :func:`hu_matrix`

        Returns
        -------
        hu_cal : ndarray, shape (n_patients, len(output_levels))
            ``slope_i * n + intercept_i`` at each output level's index n (HU).
        """
        slopes, intercepts = self.patient_lines(X)
        n_out = np.array([CALIBRATION_INDEX[level] for level in self.output_levels], dtype=np.float64)
        return slopes[:, None] * n_out[None, :] + intercepts[:, None]

    def get_feature_names_out(self, input_features=None):
        """Column names of :meth:`transform`: ``hu_cal_T12``, ``hu_cal_L1``, ``hu_cal_L2``."""
        return np.array([f"hu_cal_{level}" for level in self.output_levels], dtype=object)

    def curve_data(self, X=None):
        """Data for the calibration chart (HU against level, cohort line and patients).

        Parameters
        ----------
        X : see :func:`hu_matrix`, optional
            Patients to draw; default the patients the cohort line was fitted on.

        Returns
        -------
        dict (JSON-ready)
            ``{"variant", "k", "intercept", "r2", "n_patients", "n_points", "levels": ["T5", ..., "L2"],
            "n": [1..10], "cohort_line": {"n": [...], "hu": [...]}, "patients": [{"patient_id", "n": [...],
            "hu": [...] (measured), "slope", "intercept", "hu_cal": {level: HU}}]}``.
        """
        from analysis.stats.roc import jsonable

        self._check_fitted()
        if X is None:
            ids, hu = self.patient_ids_, self.hu_fit_
        else:
            ids, hu = hu_matrix(X)
        slopes, intercepts = self.patient_lines(hu)
        hu_cal = self.transform(hu)
        patients = []
        for i, pid in enumerate(ids):
            measured = np.isfinite(hu[i])
            patients.append(
                {
                    "patient_id": pid,
                    "n": _N[measured].tolist(),
                    "hu": hu[i, measured].tolist(),
                    "slope": slopes[i],
                    "intercept": intercepts[i],
                    "hu_cal": dict(zip(self.output_levels, hu_cal[i].tolist())),
                }
            )
        return jsonable(
            {
                "variant": self.variant,
                "k": self.k_,
                "intercept": self.intercept_,
                "r2": self.r2_,
                "n_patients": self.n_patients_fit_,
                "n_points": self.n_points_fit_,
                "levels": list(CALIBRATION_LEVELS),
                "n": _N.tolist(),
                "cohort_line": {"n": _N.tolist(), "hu": (self.k_ * _N + self.intercept_).tolist()},
                "patients": patients,
            }
        )
