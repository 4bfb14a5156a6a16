"""Synthetic cohort for the demo site and tests: QCT BMD, sex, age, splits and per-level trabecular HU.

The cohort follows table 1 of the seed study (``seed/000_5cd1aa00b82defbb.txt``) at 702 patients and
scales proportionally otherwise (largest-remainder rounding):

============  =====  =================  ========  ============================================
split         n      age M (P25, P75)   female    osteoporosis / osteopenia / normal
============  =====  =================  ========  ============================================
train         426    66 (57, 73)        62.4 %    155 / 178 / 93
validation    106    65 (55, 72)        70.8 %    38 / 45 / 23
test          170    59 (55, 69)        78.2 %    56 / 83 / 31
============  =====  =================  ========  ============================================

Split, sex and category counts are exact (so the cohort's table 1 reproduces the published chi-square
values); ages follow a quantile function through the published quartiles (and 38 and 90 years at the ends)
whose shape inside each quarter leans towards the older end in the development splits and the younger end
in the test split (``_AGE_SHAPE``), so that the Kruskal-Wallis H across splits is close to the published
18.424 as well (a piecewise-linear quantile function gives about 10.8 with the same quartiles). Exams of the
development set (train and validation) fall between 2022-03-01 and 2023-02-28, test exams between
2023-03-01 and 2023-06-30 (the study's temporal split).

How the values are generated (each patient, in this order):

1. Osteoporosis risk ``z = 0.06 * (age - 62) + 0.6 * female + N(0, 1)``; within a split the patients with
   the highest z get the osteoporosis places, then osteopenia, then normal, so older women are more often
   osteoporotic (age and sex effects), without disturbing the exact counts.
2. QCT BMD (mg/cm3) within the category's range by the patient's rank in z (higher risk, lower BMD), kept
   0.5 mg/cm3 away from the 80/120 thresholds so rounding cannot change the category: osteoporosis
   25-79.5, osteopenia 80.5-119.5, normal 120.5-230.5.
3. Per-vertebra BMD of L1, L2, L3: level offsets +2, 0, -2 mg/cm3 plus N(0, 3) noise, re-centred so their
   mean over the measured levels is the patient's BMD; about 10 % of patients miss one or two levels.
4. Trabecular HU at level index n (T5 = 1, ..., L2 = 10, L3 = 11):
   ``HU(n) = 0.9 * BMD + 8 + 4 * male - 0.1 * (age - 62) + b_i + k_i * (n - 10) + e``, with a patient
   offset ``b_i ~ N(0, 12)`` (scanner and marrow differences), a thoraco-lumbar gradient
   ``k_i ~ N(-3, 1)`` HU per level (HU falls caudally) and measurement noise ``e ~ N(0, 4)`` HU.
5. Every patient has chest and abdominal HU (region ``both``: T5-L3), as in the study's design, where all
   702 patients had both a chest CT and a QCT scan; so the chest, abdomen and calibrated chest models are
   trained and evaluated on the same 426 / 106 / 170 patients.

Everything comes from one ``numpy.random.default_rng(random_state)`` in a fixed order: the same seed gives
the same cohort bit for bit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from analysis.categories import CATEGORIES, DEFAULT_THRESHOLDS
from analysis.segmentation.levels import LEVEL_NAMES, VERSE_LABEL

__all__ = ["CSV_COLUMNS", "SEED_TABLE1", "SyntheticExam", "cohort_to_csv_rows", "generate_cohort"]

SEED_TABLE1 = {
    # split: (n, (p25, median, p75) age, female count, counts per CATEGORIES)
    "train": (426, (57, 66, 73), 266, (155, 178, 93)),
    "validation": (106, (55, 65, 72), 75, (38, 45, 23)),
    "test": (170, (55, 59, 69), 133, (56, 83, 31)),
}
_AGE_RANGE = (38.0, 90.0)
_BMD_RANGES = {
    # category: (lowest, highest, shape exponent of the rank -> BMD map)
    "osteoporosis": (25.0, 79.5, 0.75),
    "osteopenia": (80.5, 119.5, 1.0),
    "normal": (120.5, 230.5, 1.8),
}
_DATE_RANGES = {
    "train": (dt.date(2022, 3, 1), dt.date(2023, 2, 28)),
    "validation": (dt.date(2022, 3, 1), dt.date(2023, 2, 28)),
    "test": (dt.date(2023, 3, 1), dt.date(2023, 6, 30)),
}
# Exponent of the within-quarter shape of the age quantile function (1: piecewise linear). Chosen so that
# the Kruskal-Wallis H of age across the three splits is 18.42 at 702 patients (seed table 1: 18.424).
_AGE_SHAPE = 1.25
_T5 = VERSE_LABEL["T5"]

CSV_COLUMNS = ("patient_id", "sex", "age", "exam_date", "region", "bmd_l1", "bmd_l2", "bmd_l3", "split")


@dataclass(frozen=True)
class SyntheticExam:
    """One synthetic patient exam (one exam per patient).

    ``bmd_l1`` .. ``bmd_l3`` are QCT BMD in mg/cm3 (None where not measured); ``hu_by_level`` maps level
    names (cranio-caudal order) to mean trabecular HU for the levels the region shows.
    """

    patient_id: str
    sex: str
    age: int
    exam_date: dt.date
    region: str
    bmd_l1: float | None
    bmd_l2: float | None
    bmd_l3: float | None
    split: str
    hu_by_level: dict = field(hash=False)

    @property
    def qct_bmd(self):
        """Mean of the measured L1-L3 BMD values, mg/cm3."""
        values = [v for v in (self.bmd_l1, self.bmd_l2, self.bmd_l3) if v is not None]
        return sum(values) / len(values)

    @property
    def category(self):
        """Category of ``qct_bmd`` with the default thresholds."""
        return DEFAULT_THRESHOLDS.categorize(self.qct_bmd)


def _apportion(total, weights):
    """Integers proportional to weights summing to total (largest remainder; ties to the first)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(int)
    remainder = exact - base
    order = np.argsort(-remainder, kind="stable")
    base[order[: total - base.sum()]] += 1
    return base


def _levels_for_region(region, rng):
    def names(first, last):
        return LEVEL_NAMES[VERSE_LABEL[first] - 1 : VERSE_LABEL[last]]

    if region == "both":
        return names("T5", "L3")
    if region == "chest":
        extra = rng.random(2)
        last = "T10"
        if extra[0] < 0.6:
            last = "T12" if extra[1] < 0.5 else "T11"
        return names("T5", last)
    first = "T11" if rng.random() < 0.4 else "T12"
    return names(first, "L3")


def generate_cohort(n_patients=702, random_state=0):
    """Synthetic cohort with the seed study's table 1 mix (module docstring for the model).

    Parameters
    ----------
    n_patients : int
        Number of patients (one exam each), >= 1.
    random_state : int
        Seed; the same seed gives the same cohort bit for bit.

    Returns
    -------
    list of SyntheticExam
        Ordered by exam date; ids ``DEMO-0001``, ``DEMO-0002``, ... in that order.
    """
    n_patients = int(n_patients)
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    rng = np.random.default_rng(random_state)
    split_sizes = _apportion(n_patients, [v[0] for v in SEED_TABLE1.values()])
    records = []
    for (split, (n_seed, (p25, med, p75), n_female, cat_counts)), n in zip(SEED_TABLE1.items(), split_sizes):
        if n == 0:
            continue
        n_f = int(_apportion(n, [n_female, n_seed - n_female])[0])
        counts = _apportion(n, cat_counts)
        # Ages: stratified uniforms through a quantile function with the published quartiles; inside each
        # quarter the uniform is bent towards the older end (development) or the younger end (test).
        u = (rng.permutation(n) + rng.random(n)) / n
        quarter = np.minimum(np.floor(4 * u), 3)
        within = 4 * u - quarter
        within = within ** (_AGE_SHAPE if split == "test" else 1.0 / _AGE_SHAPE)
        ages = np.rint(np.interp((quarter + within) / 4, [0, 0.25, 0.5, 0.75, 1],
                                 [_AGE_RANGE[0], p25, med, p75, _AGE_RANGE[1]]))
        female = np.zeros(n, dtype=bool)
        female[rng.permutation(n)[:n_f]] = True
        risk = 0.06 * (ages - 62.0) + 0.6 * female + rng.normal(0.0, 1.0, n)
        by_risk = np.argsort(-risk, kind="stable")
        bmd = np.empty(n)
        start = 0
        for category, count in zip(CATEGORIES, counts):
            members = by_risk[start : start + count]
            start += count
            low, high, shape = _BMD_RANGES[category]
            t = (np.arange(count) + rng.random(count)) / max(count, 1)
            bmd[members] = low + (high - low) * t**shape
        date_lo, date_hi = _DATE_RANGES[split]
        days = rng.integers(0, (date_hi - date_lo).days + 1, n)
        for i in range(n):
            sex = "F" if female[i] else "M"
            records.append((split, int(ages[i]), sex, float(bmd[i]), date_lo, int(days[i])))

    exams = []
    for split, age, sex, bmd, date_lo, day in records:
        # L1-L3 values around the patient's BMD; some levels not measured.
        per_level = np.array([2.0, 0.0, -2.0]) + rng.normal(0.0, 3.0, 3)
        present = np.ones(3, dtype=bool)
        draw = rng.random()
        if draw < 0.02:
            present[rng.permutation(3)[:2]] = False
        elif draw < 0.10:
            present[rng.integers(0, 3)] = False
        per_level = per_level - per_level[present].mean() + bmd
        values = [round(float(v), 1) if p else None for v, p in zip(per_level, present)]
        region = "both"
        levels = _levels_for_region(region, rng)
        base = 0.9 * bmd + 8.0 + (4.0 if sex == "M" else 0.0) - 0.1 * (age - 62) + rng.normal(0.0, 12.0)
        slope = rng.normal(-3.0, 1.0)
        index = np.array([VERSE_LABEL[level] - _T5 + 1 for level in levels], dtype=np.float64)
        hu = base + slope * (index - 10.0) + rng.normal(0.0, 4.0, index.size)
        exams.append(
            dict(
                sex=sex,
                age=age,
                exam_date=date_lo + dt.timedelta(days=day),
                region=region,
                bmd_l1=values[0],
                bmd_l2=values[1],
                bmd_l3=values[2],
                split=split,
                hu_by_level={level: round(float(v), 2) for level, v in zip(levels, hu)},
            )
        )
    # Registry order: by exam date, ties in generation order; ids follow that order.
    order = sorted(range(len(exams)), key=lambda i: (exams[i]["exam_date"], i))
    return [SyntheticExam(patient_id=f"DEMO-{k + 1:04d}", **exams[i]) for k, i in enumerate(order)]


def cohort_to_csv_rows(cohort):
    """Rows for ``manage.py import_qct`` (SPEC section 6), as dicts of strings.

    Parameters
    ----------
    cohort : iterable of SyntheticExam

    Returns
    -------
    list of dict
        Keys ``CSV_COLUMNS``: patient_id, sex, age, exam_date (YYYY-MM-DD), region, bmd_l1, bmd_l2, bmd_l3
        (empty string where not measured), split. Ready for ``csv.DictWriter(f, CSV_COLUMNS)``.
    """
    rows = []
    for exam in cohort:
        rows.append(
            {
                "patient_id": exam.patient_id,
                "sex": exam.sex,
                "age": str(exam.age),
                "exam_date": exam.exam_date.isoformat(),
                "region": exam.region,
                "bmd_l1": "" if exam.bmd_l1 is None else f"{exam.bmd_l1:.1f}",
                "bmd_l2": "" if exam.bmd_l2 is None else f"{exam.bmd_l2:.1f}",
                "bmd_l3": "" if exam.bmd_l3 is None else f"{exam.bmd_l3:.1f}",
                "split": exam.split,
            }
        )
    return rows
