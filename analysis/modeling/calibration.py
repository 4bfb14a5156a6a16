"""Thoraco-lumbar HU calibration of the chest model "T5-T10-Cal" (SPEC section 2, seed study eq. 1).

Trabecular HU changes steadily from level to level down the spine. With the level index n = 1..10 for
T5..L2 (``CALIBRATION_INDEX``), the seed study fits ``HU = k * n + intercept`` and predicts the lumbar
levels a chest CT does not show: ``HU_cal(n) = k * n + intercept_i`` at n = 8, 9, 10 (T12, L1, L2).

What is fitted, precisely
-------------------------
- **Cohort line** (``k_``, ``intercept_``, ``r2_``): the per-level mean HU of the patients that have at
  least ``min_thoracic`` thoracic values (T5-T10) and at least ``min_lumbar`` lumbar values (T12-L2),
  regressed on n by ordinary least squares, one point per level (T11 too when measured). This is the
  paper's calibration curve ("the mean HU of each vertebra from T5 to L2, fitted by linear regression"),
  and ``r2_`` is the R^2 of that fit to the means (close to 1 when HU falls linearly down the spine).
- **Pooled line** (``pooled_k_``, ``pooled_intercept_``, ``pooled_r2_``): the same regression over every
  (n, HU) point of those patients. Its R^2 is small because patients differ far more from each other than
  levels do; it is reported, labelled as pooled, and never used for HU_cal.
- **Spread per level** (``level_mean_``, ``level_sd_``, ``level_p25_``, ``level_p75_``, ``level_count_``).
- **Patient intercept** (line ``"cohort_slope"``, the default): with k fixed, the least-squares intercept
  over the patient's own thoracic values is ``mean(HU_i - k * n_i)``.
- **Per-patient slope** (line ``"per_patient_slope"``): the patient's own OLS line through their thoracic
  values (needs at least 2 levels); the cohort k is still fitted and reported.

A patient without any thoracic value (or with fewer than 2 for the per-patient slope) gets NaN.

How HU_cal reaches a model (``CALIBRATION_VARIANTS``, recorded with every model version)
----------------------------------------------------------------------------------------
- ``abdomen_transfer`` (default; the paper's abstract: "the abdominal BMD model is employed to calibrate the
  chest BMD measurements"): HU_cal at T12, L1, L2 with sex and age go into the **abdomen model** (trained on
  measured T12-L2 with its own scaler). The abdomen scaler does not remove k, so k changes predictions.
- ``learned_mapping``: a linear regression from T5-T10 HU, sex and age to measured T12-L2 HU, fitted on the
  training patients with both regions, feeds the abdomen model instead of the straight line.
- ``feature_augmentation``: HU_cal(8..10) appended to the chest features of a model of their own. They are
  exact linear combinations of T5-T10 plus a constant (``mean(T5..T10) + k (n - 3.5)``): after z-scoring
  each of the three columns is the z-scored mean of T5-T10 whatever k is, so no prediction can change with
  k. The variant is kept to show this; the model differs from the chest model only by that extra column.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from analysis.segmentation.levels import ABDOMEN_LEVELS, CALIBRATION_INDEX, CALIBRATION_LEVELS, CHEST_LEVELS

__all__ = [
    "CALIBRATION_VARIANTS",
    "DEFAULT_CALIBRATION_VARIANT",
    "TRANSFER_VARIANTS",
    "VARIANTS",
    "LumbarFromChest",
    "ThoracolumbarCalibration",
    "hu_matrix",
]

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


def _ols(n, v):
    """Slope, intercept and R^2 of the least-squares line of ``v`` on ``n`` (R^2 = 1 without spread)."""
    n = np.asarray(n, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n_mean, v_mean = n.mean(), v.mean()
    k = ((n - n_mean) * (v - v_mean)).sum() / ((n - n_mean) ** 2).sum()
    intercept = v_mean - k * n_mean
    ss_tot = ((v - v_mean) ** 2).sum()
    ss_res = ((v - (k * n + intercept)) ** 2).sum()
    return float(k), float(intercept), (float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0)


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
        Cohort slope, HU per level (negative: HU falls caudally), of the line fitted to the per-level means.
    intercept_ : float
        Intercept of that line, HU at n = 0.
    r2_ : float
        R^2 of that line against the per-level means (the paper's calibration curve).
    pooled_k_, pooled_intercept_, pooled_r2_ : float
        The line through every (n, HU) point pooled, for reference only.
    level_mean_, level_sd_, level_p25_, level_p75_ : ndarray, shape (10,)
        HU per level T5..L2 over the fitted patients (NaN where no patient has the level).
    level_count_ : ndarray of int, shape (10,)
        Patients with a value at each level.
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
        count = mask.sum(axis=0)
        levels_present = count > 0
        if levels_present.sum() < 2:
            raise ValueError(
                f"calibration needs patients with both thoracic {tuple(self.thoracic_levels)} and lumbar "
                f"{tuple(self.lumbar_levels)} values at two or more levels; {int(eligible.sum())} eligible"
            )
        with np.errstate(invalid="ignore"):
            means = np.where(levels_present, np.where(mask, hu_fit, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        # The paper's curve: one point per level (its mean), so every level weighs the same in k.
        self.k_, self.intercept_, self.r2_ = _ols(_N[levels_present], means[levels_present])
        self.pooled_k_, self.pooled_intercept_, self.pooled_r2_ = _ols(n, v)
        self.level_count_ = count.astype(np.int64)
        self.level_mean_ = means
        sd, p25, p75 = (np.full(len(_N), np.nan) for _ in range(3))
        for j in np.flatnonzero(levels_present):
            column = hu_fit[mask[:, j], j]
            sd[j] = column.std(ddof=1) if column.size > 1 else np.nan
            p25[j], p75[j] = np.percentile(column, [25.0, 75.0])
        self.level_sd_, self.level_p25_, self.level_p75_ = sd, p25, p75
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
        return jsonable({**self.summary(), "patients": patients})

    def summary(self, *, max_patients=0, random_state=0):
        """The fit as stored with a model version (JSON-ready): lines, spread per level, a patient sample.

        Parameters
        ----------
        max_patients : int
            Patients of the fit whose measured HU are kept for the chart's per-patient lines (a seeded
            sample without replacement when there are more).
        random_state : int
            Seed of that sample.

        Returns
        -------
        dict
            ``{"line" (cohort_slope or per_patient_slope), "k", "intercept", "r2" (fit to the per-level
            means), "pooled": {"k", "intercept", "r2"}, "levels", "n", "level_mean", "level_sd",
            "level_p25", "level_p75", "level_count", "n_patients", "n_points", "cohort_line",
            "patients": [{"patient_id", "n", "hu"}]}``.
        """
        from analysis.stats.roc import jsonable

        self._check_fitted()
        patients = []
        if max_patients:
            chosen = np.arange(len(self.patient_ids_))
            if chosen.size > max_patients:
                chosen = np.sort(np.random.default_rng(random_state).choice(chosen.size, max_patients, replace=False))
            for i in chosen:
                measured = np.isfinite(self.hu_fit_[i])
                patients.append({"patient_id": self.patient_ids_[i], "n": _N[measured].tolist(),
                                 "hu": self.hu_fit_[i, measured].tolist()})
        return jsonable(
            {
                "variant": self.variant,
                "line": self.variant,
                "k": self.k_,
                "intercept": self.intercept_,
                "r2": self.r2_,
                "fit": "per-level means",
                "pooled": {"k": self.pooled_k_, "intercept": self.pooled_intercept_, "r2": self.pooled_r2_},
                "n_patients": self.n_patients_fit_,
                "n_points": self.n_points_fit_,
                "levels": list(CALIBRATION_LEVELS),
                "n": _N.tolist(),
                "level_mean": self.level_mean_.tolist(),
                "level_sd": self.level_sd_.tolist(),
                "level_p25": self.level_p25_.tolist(),
                "level_p75": self.level_p75_.tolist(),
                "level_count": self.level_count_.tolist(),
                "cohort_line": {"n": _N.tolist(), "hu": (self.k_ * _N + self.intercept_).tolist()},
                "patients": patients,
            }
        )


CALIBRATION_VARIANTS = ("abdomen_transfer", "learned_mapping", "feature_augmentation")
DEFAULT_CALIBRATION_VARIANT = "abdomen_transfer"
# Variants whose predictions come from the abdomen model applied to lumbar HU estimated from the chest.
TRANSFER_VARIANTS = ("abdomen_transfer", "learned_mapping")
CALIBRATION_VARIANT_LABELS = {
    "abdomen_transfer": "abdomen transfer",
    "learned_mapping": "learned mapping",
    "feature_augmentation": "feature augmentation",
}


class LumbarFromChest(TransformerMixin, BaseEstimator):
    """Abdomen-model features from chest features: lumbar HU estimated from T5-T10.

    Input columns ``[sex_male, age_years, hu_T5, ..., hu_T10]`` (the chest feature table); output columns
    ``[sex_male, age_years, hu_T12, hu_L1, hu_L2]`` (the abdomen feature table's order), so a fitted
    abdomen pipeline can follow this step.

    Parameters
    ----------
    method : {"abdomen_transfer", "learned_mapping"}
        ``abdomen_transfer``: HU_cal of ``calibration`` (the straight line with the cohort slope k);
        ``learned_mapping``: a least-squares linear map from sex, age and T5-T10 HU to T12, L1, L2 HU.
    calibration : ThoracolumbarCalibration
        Fitted; required by ``abdomen_transfer`` (and recorded with ``learned_mapping`` for its chart).

    Attributes
    ----------
    coef_ : ndarray, shape (3, 8)
        ``learned_mapping`` only: T12, L1, L2 HU per unit of each input column.
    intercept_ : ndarray, shape (3,)
        ``learned_mapping`` only, HU.
    n_fit_ : int
        Patients the map was fitted on (``learned_mapping``), or the calibration's patients.
    """

    def __init__(self, method=DEFAULT_CALIBRATION_VARIANT, calibration=None):
        self.method = method
        self.calibration = calibration

    def fit(self, X, y=None):
        """Fit the mapping.

        Parameters
        ----------
        X : array_like, shape (n_patients, 8)
            Chest features of training patients with both regions.
        y : array_like, shape (n_patients, 3)
            Their measured T12, L1, L2 HU (``learned_mapping``; ignored by ``abdomen_transfer``).

        Returns
        -------
        self
        """
        if self.method not in TRANSFER_VARIANTS:
            raise ValueError(f"method must be one of {TRANSFER_VARIANTS}, got {self.method!r}")
        if self.calibration is None or not hasattr(self.calibration, "k_"):
            raise ValueError("LumbarFromChest needs a fitted ThoracolumbarCalibration")
        X = self._check_X(X)
        if self.method == "learned_mapping":
            Y = np.asarray(y, dtype=np.float64)
            if Y.shape != (X.shape[0], 3) or not np.isfinite(Y).all():
                raise ValueError(f"y must be finite with shape ({X.shape[0]}, 3) (T12, L1, L2 HU), got {Y.shape}")
            design = np.column_stack([np.ones(X.shape[0]), X])
            solution, *_ = np.linalg.lstsq(design, Y, rcond=None)
            self.intercept_ = solution[0]
            self.coef_ = solution[1:].T
            self.n_fit_ = int(X.shape[0])
        else:
            self.n_fit_ = int(self.calibration.n_patients_fit_)
        return self

    @staticmethod
    def _check_X(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != 2 + len(CHEST_LEVELS):
            raise ValueError(f"X must have shape (n, {2 + len(CHEST_LEVELS)}) (sex, age, T5-T10), got {X.shape}")
        return X

    def lumbar_hu(self, X):
        """Estimated T12, L1, L2 HU, shape (n_patients, 3)."""
        if not hasattr(self, "n_fit_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("LumbarFromChest is not fitted yet; call fit first")
        X = self._check_X(X)
        if self.method == "learned_mapping":
            return X @ self.coef_.T + self.intercept_
        hu = np.full((X.shape[0], len(CALIBRATION_LEVELS)), np.nan)
        hu[:, _columns(CHEST_LEVELS)] = X[:, 2:]
        return self.calibration.transform(hu)

    def transform(self, X):
        """``[sex_male, age_years, hu_T12, hu_L1, hu_L2]``, shape (n_patients, 5)."""
        X = self._check_X(X)
        return np.column_stack([X[:, :2], self.lumbar_hu(X)])

    def get_feature_names_out(self, input_features=None):
        return np.array(["sex_male", "age_years"] + [f"hu_{level}" for level in ABDOMEN_LEVELS], dtype=object)
