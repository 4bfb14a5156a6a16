"""Two segmenters compared on reviewed cases: Dice per level, level agreement and the paired ROI HU difference
against hand-computed answers, then the whole comparison as a job run by a real `manage.py rqworker`."""

import numpy as np
import pytest

from analysis.segmentation.comparison import SegmenterOutput, compare_case, match_levels, paired_hu, summarise
from analysis.segmentation.levels import VERSE_LABEL

T12, L1 = VERSE_LABEL["T12"], VERSE_LABEL["L1"]


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


def _reference():
    """Two 10 x 10 x 10 bodies (1000 voxels each): T12 in z 0-9, L1 in z 20-29."""
    ref = np.zeros((40, 12, 12), dtype=np.uint8)
    ref[0:10, 1:11, 1:11] = T12
    ref[20:30, 1:11, 1:11] = L1
    return ref


def test_dice_of_label_maps_differing_by_a_known_number_of_voxels():
    ref = _reference()
    seg = np.zeros(ref.shape, dtype=np.uint8)
    seg[1:10, 1:11, 1:11] = 1  # T12 less its top slab: 900 voxels, all inside
    seg[20:30, 1:11, 1:11] = 2
    seg[30, 1:6, 1:11] = 2  # L1 plus 50 voxels below it: 1050 voxels
    out = match_levels(ref, SegmenterOutput(seg, {1: "T12", 2: "L1"}, {1: 150.0, 2: 140.0}))
    # By hand: 2 * 900 / (1000 + 900) and 2 * 1000 / (1000 + 1050).
    assert out["T12"]["dice"] == pytest.approx(1800 / 1900, abs=1e-12)
    assert out["L1"]["dice"] == pytest.approx(2000 / 2050, abs=1e-12)
    assert (out["T12"]["index"], out["L1"]["named"], out["L1"]["mean_hu"]) == (1, "L1", 140.0)


def test_a_run_naming_every_level_one_too_high_agrees_on_nothing_with_perfect_dice():
    ref = _reference()
    seg = np.where(ref == T12, 1, np.where(ref == L1, 2, 0)).astype(np.uint8)
    right = SegmenterOutput(seg, {1: "T12", 2: "L1"}, {1: 150.0, 2: 140.0})
    one_high = SegmenterOutput(seg, {1: "T11", 2: "T12"}, {1: 150.0, 2: 140.0})
    summary = summarise([compare_case("case", ref, right, one_high)])
    assert summary["agreement"]["a"] == {"agree": 2, "n": 2, "share": 1.0}
    assert summary["agreement"]["b"] == {"agree": 0, "n": 2, "share": 0.0}
    assert [(lv["level"], lv["n"], lv["dice_a"], lv["dice_b"]) for lv in summary["levels"]] == [
        ("T12", 1, 1.0, 1.0), ("L1", 1, 1.0, 1.0)]


def test_a_body_no_segment_touches_has_dice_zero_and_no_name():
    ref = _reference()
    seg = np.where(ref == T12, 1, 0).astype(np.uint8)
    out = match_levels(ref, SegmenterOutput(seg, {1: "T12"}, {1: 150.0}))
    assert out["L1"] == {"index": None, "dice": 0.0, "named": None, "mean_hu": None}


def test_case_hu_is_the_mean_over_levels_both_measured():
    ref = _reference()
    seg = np.where(ref == T12, 1, np.where(ref == L1, 2, 0)).astype(np.uint8)
    a = SegmenterOutput(seg, {1: "T12", 2: "L1"}, {1: 150.0, 2: 130.0})
    b = SegmenterOutput(seg, {1: "T12", 2: "L1"}, {1: 140.0, 2: None})  # B's L1 ROI is empty
    row = compare_case("case", ref, a, b)
    assert (row["hu_levels"], row["hu_a"], row["hu_b"]) == (["T12"], 150.0, 140.0)


def test_paired_hu_statistics_by_hand():
    b = np.array([100.0, 120.0, 90.0, 150.0, 80.0])
    a = b + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    hu = paired_hu(a, b)
    # Differences 1..5: mean 3, SD sqrt(2.5) (ddof 1), limits 3 -/+ 1.96 sqrt(2.5).
    assert hu["n"] == 5 and hu["mean_difference"] == pytest.approx(3.0)
    assert hu["sd"] == pytest.approx(np.sqrt(2.5))
    assert (hu["loa_low"], hu["loa_high"]) == pytest.approx((3 - 1.96 * np.sqrt(2.5), 3 + 1.96 * np.sqrt(2.5)))
    # Wilcoxon signed-rank, exact: all five differences positive, W- = 0; P(W- = 0) = 1/2^5, two-sided 2/32.
    assert hu["statistic"] == 0.0 and hu["p_value"] == pytest.approx(0.0625)
    assert "Wilcoxon" in hu["test"]
    assert paired_hu(b, b)["p_value"] == 1.0 and paired_hu(b, b)["note"] == "every difference is zero"
    assert paired_hu([100.0, 95.0], [90.0, 90.0]) == {
        "n": 2, "test": hu["test"], "mean_difference": 7.5,
        "note": "fewer than three cases with both ROIs measured: no limits or test"}


def test_comparison_job_on_reviewed_cases(rq_worker, storage, redis_url):
    """Rule-based against an (untrained) network on two reviewed phantom cases: one accepted as it was, one
    whose reviewer named every level one lower. The rule-based segmenter names the phantom's levels right, so
    it agrees with 5 of the 10 reviewed levels: 0.5 exactly. Its stored Dice equal a direct computation."""
    from analysis.models import MeasurementRun, SegmenterComparison
    from analysis.segmentation.network.registry import RuleBasedSegmenter
    from analysis.segmenters import _label_array, _segmenter_output, start_comparison
    from studies.models import JobState
    from studies.review import actions
    from studies.review.models import ReviewCase
    from tests.analysis.test_segmentation_network import _untrained_weights, _version
    from tests.factories import ExamFactory, MembershipFactory
    from tests.studies.review.conftest import make_measured_exam

    pytest.importorskip("torch")
    project = ExamFactory().patient.project
    exams = [make_measured_exam(ExamFactory(patient__project=project), random_state=s)[0] for s in (0, 1)]
    actions.open_cases(project)
    reader = MembershipFactory(project=project, role="annotator").user
    for exam, shift in zip(exams, (False, True)):
        reading = actions.working_reading(ReviewCase.objects.get(exam=exam), reader, "annotator")
        version = reading.version
        if shift:
            actions.edit_levels(reading, version, reader, "shift", delta=1)
            version += 1
        actions.decide(reading, version, reader, "accept")
    _version(project, "untrained-net", _untrained_weights())
    pi = MembershipFactory(project=project, role="pi").user
    comparison = start_comparison(project, "anatomy", "untrained-net", user=pi)
    assert comparison.job.queue == "gpu" and len(comparison.reference_runs) == 2

    worker = rq_worker("gpu", burst=True, extra_env={"STORAGE_ROOT": str(storage), "BMDSITE_TORCH_THREADS": "1"})
    worker.wait(timeout=600)
    comparison = SegmenterComparison.objects.get(pk=comparison.pk)
    assert comparison.job.state == JobState.SUCCEEDED, comparison.job.error or worker.output()
    results = comparison.results
    assert comparison.n_cases == results["n_cases"] == 2
    assert results["agreement"]["a"] == {"agree": 5, "n": 10, "share": 0.5}
    assert [lv["level"] for lv in results["levels"]] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    assert results["hu"]["n"] <= 2 and "fewer than three cases" in results["hu"]["note"]

    # Direct computation of segmenter A on the same cases gives the stored per-case Dice.
    for case in results["cases"]:
        run = MeasurementRun.objects.get(pk=case["reference_run"])
        volume = run.exam.stored_series.get().load_volume()
        direct = compare_case("x", _label_array(run.labels), _segmenter_output(RuleBasedSegmenter(), volume, "cpu", 3.0),
                              _segmenter_output(RuleBasedSegmenter(), volume, "cpu", 3.0))
        assert [r["a"]["dice"] for r in case["levels"]] == pytest.approx([r["a"]["dice"] for r in direct["levels"]])
        assert all(d > 0.9 for d in (r["a"]["dice"] for r in case["levels"]))
