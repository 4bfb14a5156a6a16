"""Feature tables of the seed study's models, from per-exam measurement records (no Django here).

Three feature sets (SPEC section 2), each with ``sex_male`` (1 for M, 0 for F) and ``age_years``:

- ``chest``: mean trabecular HU of T5-T10 (``hu_T5`` .. ``hu_T10``);
- ``abdomen``: mean trabecular HU of T12-L2 (``hu_T12``, ``hu_L1``, ``hu_L2``);
- ``chest_cal``: the chest exam calibrated with the thoraco-lumbar line of
  :class:`~analysis.modeling.calibration.ThoracolumbarCalibration`, whose cohort slope is fitted on the
  *training split only* (the validation and test patients never inform k). What the table holds depends on
  the calibration variant (``analysis.modeling.calibration.CALIBRATION_VARIANTS``): for
  ``abdomen_transfer`` and ``learned_mapping`` the chest columns, with ``FeatureTable.lumbar_map`` (a fitted
  :class:`~analysis.modeling.calibration.LumbarFromChest`) turning them into abdomen-model inputs; for
  ``feature_augmentation`` the chest columns plus ``hu_cal_T12``, ``hu_cal_L1``, ``hu_cal_L2``.

An exam enters a table only when everything the table needs is there and trustworthy. Every other exam is
returned in ``FeatureTable.dropped`` with the reason, in this order of precedence: excluded by a registry
criterion; no split; no QCT reference value (when labels are required); age or sex missing; no measurement
run; a needed level missing; a needed level carrying a blocking QA flag. Nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from analysis.measurement import (
    CONTRAST_EXAM,
    DUPLICATED_LEVEL,
    HU_OUTLIER,
    LOW_LEVEL_CONFIDENCE,
    ROI_TOO_SMALL,
    TOUCHES_VOLUME_EDGE,
)
from analysis.segmentation.levels import ABDOMEN_LEVELS, CHEST_LEVELS

__all__ = [
    "BLOCKING_FLAGS",
    "FEATURE_SETS",
    "DroppedExam",
    "ExamRecord",
    "FeatureSetSpec",
    "FeatureTable",
    "build_feature_table",
    "fit_calibration",
    "fit_lumbar_mapping",
]

# A level with one of these QA flags is not used as a feature: its mean HU is not a trustworthy reading of
# trabecular bone (too few voxels, only partly imaged, an outlier against its neighbours, two vertebrae with
# one name, an uncertain level name, or contrast medium raising HU).
BLOCKING_FLAGS = frozenset(
    {ROI_TOO_SMALL, TOUCHES_VOLUME_EDGE, HU_OUTLIER, DUPLICATED_LEVEL, LOW_LEVEL_CONFIDENCE, CONTRAST_EXAM,
     # A reader marked the vertebra unusable in review (fracture, lesion, artefact; studies.review.relabel).
     "unusable_by_reader"}
)


@dataclass(frozen=True)
class FeatureSetSpec:
    name: str
    region: str
    levels: tuple
    calibrated: bool
    label: str


FEATURE_SETS = {
    "chest": FeatureSetSpec("chest", "chest", CHEST_LEVELS, False, "T5-T10"),
    "abdomen": FeatureSetSpec("abdomen", "abdomen", ABDOMEN_LEVELS, False, "T12-L2"),
    "chest_cal": FeatureSetSpec("chest_cal", "chest", CHEST_LEVELS, True, "T5-T10-Cal"),
}


@dataclass(frozen=True)
class ExamRecord:
    """What the models need to know about one exam (built from the registry by ``records.exam_records``).

    ``hu`` maps level names to mean trabecular HU (None where the ROI was empty); ``level_flags`` maps level
    names to their QA flags; ``exclusions`` lists the registry's exclusion reasons (empty: not excluded).
    """

    exam_id: int
    patient_id: str
    sex: str | None
    age: float | None
    split: str = ""
    qct_bmd: float | None = None
    category: str | None = None
    exclusions: tuple = ()
    run_id: int | None = None
    hu: dict = field(default_factory=dict)
    level_flags: dict = field(default_factory=dict)
    exam_date: dt.date | None = None


@dataclass(frozen=True)
class DroppedExam:
    exam_id: int
    patient_id: str
    split: str
    reason: str

    def to_dict(self):
        return {"exam_id": self.exam_id, "patient_id": self.patient_id, "split": self.split, "reason": self.reason}


@dataclass
class FeatureTable:
    """A model-ready table.

    Attributes
    ----------
    X : ndarray of float64, shape (n_exams, n_features)
        Columns ``feature_names``: sex_male (0/1), age_years, then HU per level (and HU_cal), in HU.
    exam_ids, patient_ids, splits, run_ids : ndarray, shape (n_exams,)
    y_bmd : ndarray of float64, shape (n_exams,)
        QCT BMD in mg/cm3 (NaN when labels were not required and are missing).
    y_category : ndarray of object, shape (n_exams,)
    dropped : list of DroppedExam
    calibration : ThoracolumbarCalibration or None
        The fitted calibration (``chest_cal`` only).
    calibration_variant : str
        ``chest_cal`` only: one of ``CALIBRATION_VARIANTS``; "" otherwise.
    lumbar_map : LumbarFromChest or None
        ``chest_cal`` with a transfer variant: chest columns -> abdomen-model columns.
    """

    feature_set: str
    feature_names: list
    X: np.ndarray
    exam_ids: np.ndarray
    patient_ids: np.ndarray
    splits: np.ndarray
    run_ids: np.ndarray
    y_bmd: np.ndarray
    y_category: np.ndarray
    dropped: list
    calibration: object = None
    calibration_variant: str = ""
    lumbar_map: object = None

    @property
    def spec(self):
        return FEATURE_SETS[self.feature_set]

    @property
    def key(self):
        """``"chest"``, ``"abdomen"`` or ``"chest_cal:<variant>"``: one table per calibration variant."""
        return f"{self.feature_set}:{self.calibration_variant}" if self.calibration_variant else self.feature_set

    def __len__(self):
        return self.X.shape[0]

    def split_mask(self, split):
        """Boolean mask of the rows in ``split``, shape (n_exams,)."""
        return self.splits == split

    def n_by_split(self):
        names, counts = np.unique(self.splits, return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts)}


def _usable_hu(record, level, blocking_flags):
    """The level's HU, or None with the reason it cannot be used."""
    value = record.hu.get(level)
    if value is None or not np.isfinite(value):
        return None, "missing"
    flags = [f for f in record.level_flags.get(level, ()) if f in blocking_flags]
    if flags:
        return None, ",".join(sorted(flags))
    return float(value), None


def _hu_mapping(records, blocking_flags):
    """``{exam_id: {level: HU}}`` with blocked or missing levels left out."""
    out = {}
    for record in records:
        levels = {}
        for level in record.hu:
            value, problem = _usable_hu(record, level, blocking_flags)
            if problem is None:
                levels[level] = value
        out[record.exam_id] = levels
    return out


def fit_calibration(records, *, variant="cohort_slope", split="train", blocking_flags=BLOCKING_FLAGS):
    """Fit the thoraco-lumbar calibration on the non-excluded exams of one split.

    Parameters
    ----------
    records : sequence of ExamRecord
    variant : {"cohort_slope", "per_patient_slope"}
    split : str
        Only exams of this split inform the cohort slope ("train": never the validation or test exams).
    blocking_flags : set of str
        Levels with these QA flags are left out of the fit.

    Returns
    -------
    ThoracolumbarCalibration
        Fitted; its ``patient_ids_`` are exam ids.
    """
    from analysis.modeling.calibration import ThoracolumbarCalibration

    chosen = [r for r in records if r.split == split and not r.exclusions and r.run_id is not None]
    if not chosen:
        raise ValueError(f"no exams in split {split!r} to fit the thoraco-lumbar calibration on")
    return ThoracolumbarCalibration(variant=variant).fit(_hu_mapping(chosen, blocking_flags))


def fit_lumbar_mapping(records, *, method, calibration, split="train", blocking_flags=BLOCKING_FLAGS):
    """The map from chest features to abdomen-model features of a transfer variant.

    Parameters
    ----------
    records : sequence of ExamRecord
    method : {"abdomen_transfer", "learned_mapping"}
    calibration : ThoracolumbarCalibration
        Fitted on the same split.
    split : str
        ``learned_mapping`` is fitted on this split's non-excluded exams that have sex, age, every T5-T10
        and every T12-L2 level usable.
    blocking_flags : set of str

    Returns
    -------
    LumbarFromChest
        Fitted.
    """
    from analysis.modeling.calibration import LumbarFromChest

    mapping = LumbarFromChest(method=method, calibration=calibration)
    if method != "learned_mapping":
        return mapping.fit(np.empty((0, 2 + len(CHEST_LEVELS))))
    X, Y = [], []
    for record in records:
        if record.split != split or record.exclusions or record.run_id is None:
            continue
        if record.age is None or record.sex not in ("F", "M"):
            continue
        values = [_usable_hu(record, level, blocking_flags)[0] for level in CHEST_LEVELS + ABDOMEN_LEVELS]
        if any(v is None for v in values):
            continue
        X.append([1.0 if record.sex == "M" else 0.0, float(record.age)] + values[: len(CHEST_LEVELS)])
        Y.append(values[len(CHEST_LEVELS):])
    if len(X) < 2 + len(CHEST_LEVELS) + 1:
        raise ValueError(
            f"the learned mapping needs at least {3 + len(CHEST_LEVELS)} {split}-split patients with every "
            f"T5-T10 and T12-L2 level measured; {len(X)} have them"
        )
    return mapping.fit(np.array(X), np.array(Y))


def _drop_reason(record, spec, *, require_label, require_split, blocking_flags):
    if record.exclusions:
        return "excluded: " + ", ".join(record.exclusions)
    if require_split and not record.split:
        return "no split assigned"
    if require_label and (record.qct_bmd is None or not record.category):
        return "no QCT reference value"
    if record.age is None:
        return "age missing"
    if record.sex not in ("F", "M"):
        return "sex missing"
    if record.run_id is None:
        return "no measurement run"
    missing, flagged = [], []
    for level in spec.levels:
        _, problem = _usable_hu(record, level, blocking_flags)
        if problem == "missing":
            missing.append(level)
        elif problem:
            flagged.append(f"{level} ({problem})")
    if missing:
        return f"missing {spec.label} level(s): {', '.join(missing)}"
    if flagged:
        return f"QA flag on {', '.join(flagged)}"
    return None


def build_feature_table(
    records,
    feature_set,
    *,
    calibration=None,
    calibration_variant=None,
    lumbar_map=None,
    calibration_split="train",
    require_label=True,
    require_split=True,
    blocking_flags=BLOCKING_FLAGS,
):
    """Feature table of one feature set.

    Parameters
    ----------
    records : sequence of ExamRecord
    feature_set : {"chest", "abdomen", "chest_cal"}
    calibration : ThoracolumbarCalibration, optional
        A fitted calibration to apply (``chest_cal`` at prediction time). Default: fitted here on
        ``calibration_split`` (cohort slope, each patient's intercept from their own T5-T10).
    calibration_variant : {"abdomen_transfer", "learned_mapping", "feature_augmentation"}, optional
        How the calibration reaches the model (``chest_cal`` only; default ``abdomen_transfer``).
    lumbar_map : LumbarFromChest, optional
        A fitted map to apply (transfer variants at prediction time); default fitted here.
    calibration_split : str
        The split the calibration is fitted on (the training split).
    require_label : bool
        Drop exams without a QCT reference value (training); False for screening predictions.
    require_split : bool
        Drop exams without a split (training); False for screening predictions.
    blocking_flags : set of str
        QA flags that make a level unusable.

    Returns
    -------
    FeatureTable
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose from {', '.join(FEATURE_SETS)}")
    spec = FEATURE_SETS[feature_set]
    kept, dropped = [], []
    for record in records:
        reason = _drop_reason(
            record, spec, require_label=require_label, require_split=require_split, blocking_flags=blocking_flags
        )
        if reason is None:
            kept.append(record)
        else:
            dropped.append(DroppedExam(record.exam_id, record.patient_id, record.split, reason))

    names = ["sex_male", "age_years"] + [f"hu_{level}" for level in spec.levels]
    X = np.empty((len(kept), len(names)), dtype=np.float64)
    for i, record in enumerate(kept):
        X[i, 0] = 1.0 if record.sex == "M" else 0.0
        X[i, 1] = float(record.age)
        X[i, 2:] = [record.hu[level] for level in spec.levels]

    variant = ""
    if spec.calibrated:
        from analysis.modeling.calibration import CALIBRATION_VARIANTS, DEFAULT_CALIBRATION_VARIANT

        variant = calibration_variant or DEFAULT_CALIBRATION_VARIANT
        if variant not in CALIBRATION_VARIANTS:
            raise ValueError(f"unknown calibration variant {variant!r}; choose from {', '.join(CALIBRATION_VARIANTS)}")
        if calibration is None:
            calibration = fit_calibration(records, split=calibration_split, blocking_flags=blocking_flags)
        if variant == "feature_augmentation":
            # Only the thoracic values reach the calibration: it stands in for the lumbar levels a chest CT
            # lacks.
            thoracic = [{level: record.hu[level] for level in spec.levels} for record in kept]
            hu_cal = calibration.transform(thoracic) if kept else np.empty((0, len(calibration.output_levels)))
            X = np.hstack([X, hu_cal])
            names += [str(n) for n in calibration.get_feature_names_out()]
        elif lumbar_map is None:
            lumbar_map = fit_lumbar_mapping(records, method=variant, calibration=calibration,
                                            split=calibration_split, blocking_flags=blocking_flags)
    else:
        calibration = None
    if variant == "feature_augmentation" or not spec.calibrated:
        lumbar_map = None

    return FeatureTable(
        feature_set=feature_set,
        feature_names=names,
        X=X,
        exam_ids=np.array([r.exam_id for r in kept], dtype=np.int64),
        patient_ids=np.array([r.patient_id for r in kept], dtype=object),
        splits=np.array([r.split for r in kept], dtype=object),
        run_ids=np.array([r.run_id for r in kept], dtype=np.int64),
        y_bmd=np.array([np.nan if r.qct_bmd is None else r.qct_bmd for r in kept], dtype=np.float64),
        y_category=np.array([r.category for r in kept], dtype=object),
        dropped=dropped,
        calibration=calibration,
        calibration_variant=variant,
        lumbar_map=lumbar_map,
    )
