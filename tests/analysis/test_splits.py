"""Splits: temporal cut-off, seeded stratified train/validation draw, frozen cohorts refuse changes."""

import datetime as dt

import numpy as np
import pytest

from analysis.modeling.records import CohortFrozenError, apply_splits, assign_splits, freeze_cohort
from analysis.modeling.splits import temporal_random_split
from studies.models import Cohort, CohortMember
from tests.factories import ExamFactory, QCTResultFactory

CUTOFF = dt.date(2023, 3, 1)


def cohort_inputs(n=200, seed=1):
    rng = np.random.default_rng(seed)
    dates = [dt.date(2022, 3, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 480, n)]
    categories = list(rng.choice(["osteoporosis", "osteopenia", "normal"], n, p=[0.35, 0.45, 0.2]))
    return dates, categories


def test_exams_from_the_cutoff_on_are_the_test_split():
    dates, categories = cohort_inputs()
    splits = temporal_random_split(dates, categories, test_from=CUTOFF, random_state=0)
    is_test = np.array([d >= CUTOFF for d in dates])
    assert (splits[is_test] == "test").all()
    assert set(splits[~is_test]) == {"train", "validation"}


def test_validation_draw_is_scikit_learns_stratified_split_with_the_seed():
    from sklearn.model_selection import train_test_split

    dates, categories = cohort_inputs()
    splits = temporal_random_split(dates, categories, test_from=CUTOFF, validation_fraction=0.2, random_state=7)
    development = np.array([i for i, d in enumerate(dates) if d < CUTOFF])
    # Expected: the same call made directly on the development set.
    _, expected = train_test_split(development, test_size=0.2, stratify=[categories[i] for i in development],
                                   random_state=7)
    assert sorted(np.flatnonzero(splits == "validation").tolist()) == sorted(expected.tolist())
    # Stratified: each category's validation share is within one exam of 20 %.
    for category in set(categories):
        members = [i for i in development if categories[i] == category]
        n_val = sum(splits[i] == "validation" for i in members)
        assert abs(n_val - 0.2 * len(members)) <= 1


def test_same_seed_same_split_other_seed_other_split():
    dates, categories = cohort_inputs()
    a = temporal_random_split(dates, categories, test_from=CUTOFF, random_state=3)
    b = temporal_random_split(dates, categories, test_from=CUTOFF, random_state=3)
    c = temporal_random_split(dates, categories, test_from=CUTOFF, random_state=4)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_development_exams_without_category_stay_unassigned():
    splits = temporal_random_split([dt.date(2022, 5, 1)] * 5, ["normal", "normal", None, "osteopenia", "osteopenia"],
                                   validation_fraction=0.5)
    assert splits[2] == ""


def test_a_category_with_one_exam_cannot_be_stratified():
    with pytest.raises(ValueError, match="at least 2 development exams of each category"):
        temporal_random_split([dt.date(2022, 5, 1)] * 3, ["normal", "normal", "osteoporosis"])


def test_assign_splits_writes_the_cohort_and_freezing_stops_changes(project):
    cohort = Cohort.objects.create(project=project, name="main")
    for i in range(12):
        exam = ExamFactory(patient__project=project, exam_date=dt.date(2022, 4, 1) + dt.timedelta(days=40 * i))
        QCTResultFactory(exam=exam, bmd_l1=[60.0, 100.0, 150.0][i % 3])
        CohortMember.objects.create(cohort=cohort, exam=exam)
    counts = assign_splits(cohort, test_from=CUTOFF, validation_fraction=0.34, random_state=0)
    stored = dict(CohortMember.objects.filter(cohort=cohort).values_list("exam__exam_date", "split"))
    # Exam dates run 2022-04-01 + 40 days * i: i = 0..8 fall before the cut-off, i = 9..11 after.
    assert sum(s == "test" for s in stored.values()) == 3 == counts["test"]
    assert all(s == "test" for d, s in stored.items() if d >= CUTOFF)
    assert counts["train"] + counts["validation"] == 9
    freeze_cohort(cohort)
    with pytest.raises(CohortFrozenError, match="frozen"):
        assign_splits(cohort, random_state=1)
    with pytest.raises(CohortFrozenError):
        apply_splits(cohort, {CohortMember.objects.filter(cohort=cohort).first().exam_id: "train"})
    assert dict(CohortMember.objects.filter(cohort=cohort).values_list("exam__exam_date", "split")) == stored
