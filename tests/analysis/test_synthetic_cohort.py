"""Synthetic cohort: the seed's table 1 mix, temporal split dates, realistic HU, bit-for-bit reproducible."""

import csv
import datetime as dt
import io
from collections import Counter

import numpy as np
import pytest

from analysis.categories import CATEGORIES
from analysis.modeling.calibration import ThoracolumbarCalibration
from analysis.modeling.synthetic import CSV_COLUMNS, cohort_to_csv_rows, generate_cohort
from analysis.stats.cohort import cohort_table


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort()


def test_split_sex_and_category_counts_follow_seed_table1(cohort):
    # Seed table 1: n 426/106/170; female 266/75/133; osteoporosis/osteopenia/normal
    # 155/178/93, 38/45/23, 56/83/31.
    expected = {
        "train": (426, 266, (155, 178, 93)),
        "validation": (106, 75, (38, 45, 23)),
        "test": (170, 133, (56, 83, 31)),
    }
    for split, (n, n_female, cats) in expected.items():
        members = [e for e in cohort if e.split == split]
        assert len(members) == n
        assert sum(e.sex == "F" for e in members) == n_female
        counts = Counter(e.category for e in members)
        assert tuple(counts[c] for c in CATEGORIES) == cats


def test_table1_statistics_reproduce_the_seed(cohort):
    # Exact counts, so the published chi-square values come back: sex 14.417, category 2.614; the ages
    # follow the published quartiles (66 (57, 73), 65 (55, 72), 59 (55, 69)) within a year.
    table = cohort_table([e.age for e in cohort], [e.sex for e in cohort], [e.category for e in cohort],
                         [e.split for e in cohort])
    assert round(table["sex"]["chi2"], 3) == 14.417
    assert round(table["category"]["chi2"], 3) == 2.614
    quartiles = {"train": (57, 66, 73), "validation": (55, 65, 72), "test": (55, 59, 69)}
    for split, (p25, med, p75) in quartiles.items():
        got = table["age"][split]
        assert abs(got["p25"] - p25) <= 1 and abs(got["median"] - med) <= 1 and abs(got["p75"] - p75) <= 1
    assert table["age"]["p"] < 0.05  # the test set is younger, as in the seed


def test_exam_dates_follow_the_temporal_split_and_ids_the_date_order(cohort):
    for e in cohort:
        if e.split == "test":
            assert dt.date(2023, 3, 1) <= e.exam_date <= dt.date(2023, 6, 30)
        else:
            assert dt.date(2022, 3, 1) <= e.exam_date <= dt.date(2023, 2, 28)
    assert [e.patient_id for e in cohort[:2]] == ["DEMO-0001", "DEMO-0002"]
    assert [e.exam_date for e in cohort] == sorted(e.exam_date for e in cohort)
    assert len({e.patient_id for e in cohort}) == 702


def test_bmd_values(cohort):
    for e in cohort:
        values = [v for v in (e.bmd_l1, e.bmd_l2, e.bmd_l3) if v is not None]
        assert values, e.patient_id
        assert all(round(v, 1) == v for v in values)
        assert 20 <= e.qct_bmd <= 250
    assert 0.02 < np.mean([None in (e.bmd_l1, e.bmd_l2, e.bmd_l3) for e in cohort]) < 0.2


def test_every_patient_has_chest_and_abdominal_hu(cohort):
    # Issue 12 / the study's design: all 702 patients have T5-T10 and T12-L2, so every feature set uses
    # the same 426 / 106 / 170 patients.
    for e in cohort:
        assert e.region == "both" and list(e.hu_by_level) == ["T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12",
                                                              "L1", "L2", "L3"]


def test_age_kruskal_wallis_h_is_the_seeds(cohort):
    # Seed table 1: age H = 18.424 across train / validation / test (the issue asks for within 0.5),
    # quartiles 66 (57, 73), 65 (55, 72), 59 (55, 69).
    table = cohort_table([e.age for e in cohort], [e.sex for e in cohort], [e.category for e in cohort],
                         [e.split for e in cohort])
    assert abs(table["age"]["h"] - 18.424) < 0.5
    assert table["age"]["p"] < 0.001


def test_hu_relates_to_bmd_and_falls_caudally(cohort):
    # L1 HU vs QCT BMD: slope about 0.9, strong but imperfect correlation.
    pairs = np.array([(e.qct_bmd, e.hu_by_level["L1"]) for e in cohort if "L1" in e.hu_by_level])
    slope = np.polyfit(pairs[:, 0], pairs[:, 1], 1)[0]
    r = np.corrcoef(pairs.T)[0, 1]
    assert 0.8 < slope < 1.0 and 0.85 < r < 0.97
    # The generator's gradient is -3 HU per level; the cohort calibration finds it.
    cal = ThoracolumbarCalibration().fit([e.hu_by_level for e in cohort])
    assert -3.6 < cal.k_ < -2.4
    # Age and sex effects: osteoporosis is more frequent in older patients and in women.
    osteo = np.array([e.category == "osteoporosis" for e in cohort])
    ages = np.array([e.age for e in cohort])
    female = np.array([e.sex == "F" for e in cohort])
    assert ages[osteo].mean() > ages[~osteo].mean() + 3
    assert osteo[female].mean() > osteo[~female].mean()


def test_reproducible_bit_for_bit_and_seed_dependent(cohort):
    assert generate_cohort(random_state=0) == cohort
    other = generate_cohort(random_state=1)
    assert [e.hu_by_level for e in other] != [e.hu_by_level for e in cohort]


def test_scales_proportionally():
    small = generate_cohort(n_patients=100, random_state=3)
    counts = Counter(e.split for e in small)
    # 100 * (426, 106, 170) / 702 = (60.7, 15.1, 24.2) -> largest remainders (61, 15, 24).
    assert (counts["train"], counts["validation"], counts["test"]) == (61, 15, 24)
    assert [e.patient_id for e in small][-1] == "DEMO-0100"


def test_csv_rows_have_import_qct_columns(cohort):
    rows = cohort_to_csv_rows(cohort[:20])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    parsed = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert list(parsed[0]) == list(CSV_COLUMNS)
    first = cohort[0]
    assert parsed[0]["patient_id"] == first.patient_id
    assert parsed[0]["exam_date"] == first.exam_date.isoformat()
    assert parsed[0]["bmd_l1"] == ("" if first.bmd_l1 is None else f"{first.bmd_l1:.1f}")
    assert {r["split"] for r in parsed} <= {"train", "validation", "test"}
