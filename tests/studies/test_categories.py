"""QCT reference value and category: mean of the measured vertebrae; < 80 osteoporosis, 80-120 osteopenia
(both boundaries included), > 120 normal (2018 Chinese QCT guideline = ACR), thresholds per project."""

import pytest

from analysis.categories import DEFAULT_THRESHOLDS, Thresholds
from tests.factories import ExamFactory, ProjectFactory, QCTResultFactory


@pytest.mark.parametrize(
    "bmd, expected",
    [(0.0, "osteoporosis"), (79.99, "osteoporosis"), (80.0, "osteopenia"), (100.0, "osteopenia"),
     (120.0, "osteopenia"), (120.01, "normal"), (250.0, "normal")],
)
def test_default_boundaries(bmd, expected):
    assert DEFAULT_THRESHOLDS.categorize(bmd) == expected


def test_missing_value_has_no_category():
    assert DEFAULT_THRESHOLDS.categorize(None) is None


def test_qct_bmd_is_mean_of_measured_vertebrae(db):
    # (79 + 81) / 2 = 80.0 exactly: the boundary, so osteopenia; L3 not measured is left out of the mean.
    qct = QCTResultFactory(bmd_l1=79.0, bmd_l2=81.0, bmd_l3=None)
    assert qct.qct_bmd == 80.0
    assert qct.category == "osteopenia"


def test_project_thresholds_are_data(db):
    project = ProjectFactory(osteoporosis_below=70.0, normal_above=110.0)
    qct = QCTResultFactory(exam=ExamFactory(patient__project=project), bmd_l1=75.0, bmd_l2=None)
    assert qct.category == "osteopenia"  # 75 would be osteoporosis with the default 80
    assert project.thresholds == Thresholds(70.0, 110.0)


def test_recategorize_after_threshold_change(db):
    from studies.registry import recategorize_project

    qct = QCTResultFactory(bmd_l1=85.0)
    project = qct.exam.patient.project
    assert qct.category == "osteopenia"
    project.osteoporosis_below = 90.0
    project.save()
    assert recategorize_project(project) == 1
    qct.refresh_from_db()
    assert qct.category == "osteoporosis"
