"""Table 1 of the seed study: the cohort by split, with the tests across splits.

- Age: median (P25, P75) per split (numpy's linear percentiles, R's type 7), Kruskal-Wallis H across the
  splits (``scipy.stats.kruskal``, tie-corrected).
- Sex and BMD category: counts and percentages per split (percentages of the split's non-missing values),
  Pearson chi-square test of independence of the split x level table without continuity correction
  (``scipy.stats.chi2_contingency(correction=False)``; Yates' correction only ever applies to 2 x 2
  tables anyway).

Missing values (None or NaN) are counted per split as ``"missing"`` and left out of that variable's
statistics. Splits without any patient are left out of the tests (their column would have expected counts
of zero), as are levels that no patient has.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.categories import CATEGORIES
from analysis.stats.roc import jsonable

__all__ = ["SEXES", "chi_square_from_counts", "cohort_table"]

SEXES = ("F", "M")


def chi_square_from_counts(table):
    """Pearson chi-square test of independence, no continuity correction.

    Parameters
    ----------
    table : array_like of int, shape (n_rows, n_cols)
        Contingency table of counts (for table 1: rows = levels such as sex, columns = splits).

    Returns
    -------
    dict
        ``{"chi2": float, "p": float, "dof": int, "expected": list of lists}``.
    """
    from scipy.stats import chi2_contingency

    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or min(t.shape) < 2:
        raise ValueError(f"need a table with at least 2 rows and 2 columns, got shape {t.shape}")
    if (t < 0).any() or np.isnan(t).any():
        raise ValueError("counts must be non-negative numbers")
    if (t.sum(axis=0) == 0).any() or (t.sum(axis=1) == 0).any():
        raise ValueError("a row or column of the table is all zero (expected counts of zero)")
    res = chi2_contingency(t, correction=False)
    return {
        "chi2": float(res.statistic),
        "p": float(res.pvalue),
        "dof": int(res.dof),
        "expected": res.expected_freq.tolist(),
    }


def _is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def _categorical(values, splits, split_order, levels):
    out = {"levels": list(levels)}
    table = []
    for split in split_order:
        vals = [v for v, s in zip(values, splits) if s == split]
        present = [v for v in vals if not _is_missing(v)]
        unknown = sorted({str(v) for v in present if v not in levels})
        if unknown:
            raise ValueError(f"unknown value(s) {unknown} in split {split!r}; expected one of {list(levels)}")
        counts = [sum(1 for v in present if v == level) for level in levels]
        total = len(present)
        out[split] = {
            level: {"n": c, "percent": 100.0 * c / total if total else None}
            for level, c in zip(levels, counts)
        }
        out[split]["missing"] = len(vals) - total
        table.append(counts)
    t = np.array(table, dtype=np.int64).T  # rows = levels, columns = splits
    t = t[:, t.sum(axis=0) > 0]
    t = t[t.sum(axis=1) > 0, :]
    if min(t.shape) >= 2:
        test = chi_square_from_counts(t)
        out.update(chi2=test["chi2"], p=test["p"], dof=test["dof"])
    else:
        out.update(chi2=None, p=None, dof=None)
    return out


def cohort_table(ages, sexes, categories, splits, split_order=("train", "validation", "test")):
    """Table 1: n, age, sex and BMD category per split, with Kruskal-Wallis and chi-square tests.

    Parameters
    ----------
    ages : sequence of float or None, length n_patients
        Age at exam in years.
    sexes : sequence of {"F", "M", None}
    categories : sequence of {"osteoporosis", "osteopenia", "normal", None}
    splits : sequence of str
        Split of each patient; each must be in ``split_order``.
    split_order : sequence of str
        Column order of the table.

    Returns
    -------
    dict (JSON-ready)
        ``{"splits": [...], "n": {split: int},
        "age": {split: {"median", "p25", "p75", "missing"}, "h", "p"},
        "sex": {"levels": ["F", "M"], split: {"F": {"n", "percent"}, "M": {...}, "missing"}, "chi2", "p",
        "dof"}, "category": {same, levels osteoporosis, osteopenia, normal}}``. A test that cannot be
        computed (fewer than two non-empty splits) has None values.
    """
    from scipy.stats import kruskal

    n = len(splits)
    if not (len(ages) == len(sexes) == len(categories) == n):
        raise ValueError(
            f"lengths differ: ages {len(ages)}, sexes {len(sexes)}, categories {len(categories)}, splits {n}"
        )
    split_order = list(split_order)
    unknown = sorted({str(s) for s in splits} - set(split_order))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected one of {split_order}")

    table = {"splits": split_order, "n": {s: sum(1 for x in splits if x == s) for s in split_order}}

    age = {}
    groups = []
    for split in split_order:
        vals = [a for a, s in zip(ages, splits) if s == split]
        present = np.array([float(a) for a in vals if not _is_missing(a)], dtype=np.float64)
        if present.size:
            p25, median, p75 = np.percentile(present, [25, 50, 75])
            age[split] = {"median": median, "p25": p25, "p75": p75, "missing": len(vals) - present.size}
            groups.append(present)
        else:
            age[split] = {"median": None, "p25": None, "p75": None, "missing": len(vals)}
    if len(groups) >= 2 and np.ptp(np.concatenate(groups)) > 0:
        res = kruskal(*groups)
        age.update(h=float(res.statistic), p=float(res.pvalue))
    else:
        age.update(h=None, p=None)
    table["age"] = age
    table["sex"] = _categorical(sexes, splits, split_order, SEXES)
    table["category"] = _categorical(categories, splits, split_order, CATEGORIES)
    return jsonable(table)
