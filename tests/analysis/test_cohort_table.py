"""Table 1: chi-square (no continuity correction) and Kruskal-Wallis agree with scipy and reproduce the seed."""

import json

import numpy as np
import pytest
from scipy.stats import chi2_contingency, kruskal

from analysis.stats.cohort import chi_square_from_counts, cohort_table

SPLITS = ("train", "validation", "test")
# Seed study table 1 (seed/000_5cd1aa00b82defbb.txt): counts per split.
SEED_SEX = {"train": {"M": 160, "F": 266}, "validation": {"M": 31, "F": 75}, "test": {"M": 37, "F": 133}}
SEED_CATEGORY = {
    "train": {"osteoporosis": 155, "osteopenia": 178, "normal": 93},
    "validation": {"osteoporosis": 38, "osteopenia": 45, "normal": 23},
    "test": {"osteoporosis": 56, "osteopenia": 83, "normal": 31},
}


def _patients_from_seed_counts():
    """Per-patient records with the seed's marginal counts (sex and category are tested separately)."""
    sexes, categories, splits = [], [], []
    for split in SPLITS:
        s = [sex for sex, n in SEED_SEX[split].items() for _ in range(n)]
        c = [cat for cat, n in SEED_CATEGORY[split].items() for _ in range(n)]
        assert len(s) == len(c)
        sexes += s
        categories += c
        splits += [split] * len(s)
    return sexes, categories, splits


def test_seed_table1_chi_square_values_are_reproduced():
    # Published: sex chi2 = 14.417, P = 0.001; BMD category chi2 = 2.614, P = 0.624.
    sexes, categories, splits = _patients_from_seed_counts()
    ages = [60.0] * len(splits)
    table = cohort_table(ages, sexes, categories, splits)
    assert table["n"] == {"train": 426, "validation": 106, "test": 170}
    assert round(table["sex"]["chi2"], 3) == 14.417
    assert round(table["sex"]["p"], 3) == 0.001
    assert table["sex"]["dof"] == 2
    assert round(table["category"]["chi2"], 3) == 2.614
    assert round(table["category"]["p"], 3) == 0.624
    assert table["category"]["dof"] == 4
    # Percentages as printed in the seed: female 62.4 / 70.8 / 78.2 %.
    assert [round(table["sex"][s]["F"]["percent"], 1) for s in SPLITS] == [62.4, 70.8, 78.2]
    assert table["category"]["test"]["osteopenia"] == {"n": 83, "percent": pytest.approx(100 * 83 / 170)}


def test_chi_square_from_counts_equals_scipy_without_correction():
    counts = [[12, 5], [7, 9]]  # a 2 x 2 table, where Yates' correction would otherwise apply
    res = chi2_contingency(counts, correction=False)
    out = chi_square_from_counts(counts)
    assert out["chi2"] == pytest.approx(res.statistic, abs=1e-12)
    assert out["p"] == pytest.approx(res.pvalue, abs=1e-12)
    assert out["dof"] == 1
    assert out["chi2"] != pytest.approx(chi2_contingency(counts, correction=True).statistic)


def test_age_and_tests_equal_scipy_on_random_cohort():
    rng = np.random.default_rng(0)
    n = 300
    splits = list(rng.choice(SPLITS, size=n, p=[0.6, 0.15, 0.25]))
    ages = list(np.round(rng.normal(62, 10, size=n)) + np.array([{"test": -4}.get(s, 0) for s in splits]))
    sexes = list(rng.choice(["F", "M"], size=n))
    categories = list(rng.choice(["osteoporosis", "osteopenia", "normal"], size=n))
    table = cohort_table(ages, sexes, categories, splits)
    groups = [np.array([a for a, s in zip(ages, splits) if s == split]) for split in SPLITS]
    k = kruskal(*groups)  # tie-corrected H, as table 1 needs for integer ages
    assert table["age"]["h"] == pytest.approx(k.statistic, abs=1e-12)
    assert table["age"]["p"] == pytest.approx(k.pvalue, abs=1e-12)
    for split, g in zip(SPLITS, groups):
        assert table["age"][split]["median"] == np.median(g)
        assert table["age"][split]["p25"] == np.percentile(g, 25)
        assert table["age"][split]["p75"] == np.percentile(g, 75)
    counts = [[sum(1 for c, s in zip(categories, splits) if c == cat and s == split) for split in SPLITS]
              for cat in ("osteoporosis", "osteopenia", "normal")]
    assert table["category"]["chi2"] == pytest.approx(chi2_contingency(counts, correction=False).statistic)
    json.dumps(table, allow_nan=False)


def test_missing_values_are_counted_and_left_out():
    ages = [50, None, 70, 60, 65, float("nan")]
    sexes = ["F", "M", None, "F", "M", "F"]
    cats = ["normal", "osteopenia", "osteoporosis", None, "normal", "osteopenia"]
    splits = ["train", "train", "train", "test", "test", "test"]
    table = cohort_table(ages, sexes, cats, splits, split_order=("train", "test"))
    assert table["age"]["train"]["missing"] == 1 and table["age"]["test"]["missing"] == 1
    assert table["age"]["train"]["median"] == 60.0
    assert table["sex"]["train"]["missing"] == 1
    assert table["sex"]["train"]["F"] == {"n": 1, "percent": 50.0}
    assert table["category"]["test"]["missing"] == 1


def test_empty_split_is_reported_but_left_out_of_tests():
    table = cohort_table([50, 60, 70, 80], ["F", "M", "F", "M"], ["normal"] * 4, ["train", "train", "test", "test"])
    assert table["n"]["validation"] == 0
    assert table["age"]["validation"]["median"] is None
    assert table["sex"]["chi2"] == pytest.approx(0.0)  # identical 1:1 mix in train and test
    assert table["category"]["chi2"] is None  # one category only: nothing to test


def test_bad_input():
    with pytest.raises(ValueError, match="unknown split"):
        cohort_table([50], ["F"], ["normal"], ["holdout"])
    with pytest.raises(ValueError, match="lengths differ"):
        cohort_table([50, 60], ["F"], ["normal"], ["train"])
    with pytest.raises(ValueError, match="unknown value"):
        cohort_table([50, 60], ["F", "X"], ["normal", "normal"], ["train", "test"])
