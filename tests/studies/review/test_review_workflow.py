"""The review workflow on real measurement runs: queue order, relabel into a new immutable run that the
features use, unusable vertebrae leaving the features, conflicts, audit."""

import numpy as np
import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analysis.imaging.volume import load_nifti
from analysis.models import MeasurementRun
from analysis.modeling.features import build_feature_table
from analysis.modeling.records import records_for_exams
from analysis.segmentation.levels import VERSE_LABEL
from studies.models import Exam
from studies.review import actions
from studies.review.models import CaseStatus, Reading, ReadingKind, ReviewCase
from tests.factories import ExamFactory, MembershipFactory
from tests.studies.review.conftest import LEVELS, make_measured_exam


@pytest.fixture
def case(db, storage):
    exam, run, phantom = make_measured_exam()
    actions.open_cases(exam.patient.project)
    review_case = ReviewCase.objects.get(exam=exam)
    review_case.phantom = phantom
    return review_case


def _reader(case, role="annotator"):
    return MembershipFactory(project=case.project, role=role).user


def test_queue_puts_withheld_low_confidence_and_flagged_cases_first(db, storage):
    project = ExamFactory().patient.project
    clean, _, _ = make_measured_exam(ExamFactory(patient__project=project))
    low, _, _ = make_measured_exam(ExamFactory(patient__project=project), low=("T10",))
    assert actions.open_cases(project) == 2 and actions.open_cases(project) == 0
    ordered = list(actions.queue(project))
    assert [c.exam_id for c in ordered] == [low.pk, clean.pk]
    assert "low confidence: T10" in ordered[0].priority_reasons


def test_the_sacrum_listed_as_a_segment_is_no_withheld_level():
    # The default segmenter lists the sacrum (flag "sacrum", no level): it made every measured abdomen "high"
    # need ("1 level(s) withheld"). A segment withheld by the naming rules still counts.
    from types import SimpleNamespace

    run = SimpleNamespace(flags=[])
    named = [{"index": 1, "level": "L4", "confidence": 0.95, "flags": []},
             {"index": 2, "level": "L5", "confidence": 0.95, "flags": []}]
    sacrum = {"index": 3, "level": None, "confidence": None, "flags": ["sacrum", "hu_outlier"]}
    withheld = {"index": 3, "level": None, "confidence": None, "flags": ["level_withheld"]}
    assert actions.priority_of(run, named + [sacrum]) == (0, [])
    assert actions.priority_of(run, named + [withheld]) == (1010, ["1 level(s) withheld"])


def test_queue_page_names_the_need_instead_of_the_raw_score(client, db, storage):
    project = ExamFactory().patient.project
    clean, _, _ = make_measured_exam(ExamFactory(patient__project=project))
    low, _, _ = make_measured_exam(ExamFactory(patient__project=project), low=("T10",))
    actions.open_cases(project)
    by_exam = {c.exam_id: c for c in ReviewCase.objects.filter(project=project)}
    # priority_of's bands: low confidence scores 100-999 ("medium"); a clean run scores 0 ("routine").
    assert (by_exam[low.pk].need, by_exam[clean.pk].need) == ("medium", "routine")
    client.force_login(MembershipFactory(project=project, role="coordinator").user)
    page = client.get(f"/p/{project.pk}/review/?mine=0").content.decode()
    assert f'title="priority score {by_exam[low.pk].priority}">medium</span>' in page
    assert ">routine</span>" in page


def test_naming_one_segment_relabels_the_spine_into_a_new_run_used_by_the_features(case):
    reader, phantom = _reader(case), case.phantom
    reading = actions.working_reading(case, reader, "annotator")
    assert actions.as_int_map(reading.level_map) == dict(enumerate(LEVELS, start=1))
    # The reader says segment 1 is T11 (the automatic levels were one off): all follow by counting.
    actions.edit_levels(reading, 1, reader, "name", index=1, level="T11")
    case = actions.decide(reading, 2, reader, "accept")
    assert case.status == CaseStatus.ACCEPTED
    new, base = case.result_run, case.base_run
    assert new.pk != base.pk and new.source == base.source and new.parameters["review"]["base_run"] == base.pk
    renamed = dict(zip(LEVELS, ("T11", "T12", "L1", "L2", "L3")))
    old_levels = {m.level: m for m in base.levels.all()}
    new_levels = {m.level: m for m in new.levels.all()}
    assert set(new_levels) == set(renamed.values())
    for old_name, new_name in renamed.items():  # same values, re-keyed
        assert new_levels[new_name].mean_hu == old_levels[old_name].mean_hu
        assert new_levels[new_name].roi_voxels == old_levels[old_name].roi_voxels
    assert new.parameters["level_confidence"]["L3"] == 1.0 and "reviewed" in new.flags
    # The label map is the same voxels re-numbered: VerSe T10 voxels now carry T11's number, and so on.
    labels = load_nifti(_local(new.labels)).array
    truth = phantom.body_labels
    for old_name, new_name in renamed.items():
        assert np.all(labels[truth == VERSE_LABEL[old_name]] == VERSE_LABEL[new_name])
    assert np.array_equal(labels > 0, np.isin(truth, [VERSE_LABEL[n] for n in LEVELS]))
    # The exam's features now read the reviewed run (the latest run of its source).
    (record,) = records_for_exams(Exam.objects.filter(pk=case.exam_id), base.source)
    assert record.run_id == new.pk and record.hu["L3"] == old_levels["L2"].mean_hu
    # Immutable, and audited.
    # Audited: the relabel and the decision on the reading, the case's new status.
    entries = LogEntry.objects.get_for_object(reading).filter(action=LogEntry.Action.UPDATE)
    assert entries.count() == 2 and entries.filter(actor=reader).count() == 2
    assert LogEntry.objects.get_for_object(case).filter(action=LogEntry.Action.UPDATE).exists()


def _local(field):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "labels.nii.gz"
    path.write_bytes(field.open("rb").read())
    return path


def test_a_withheld_segment_named_by_the_reader_gets_its_measured_values(db, storage):
    exam, run, _ = make_measured_exam(withheld=("T10", "T11"))
    project = exam.patient.project
    actions.open_cases(project)
    case = ReviewCase.objects.get(exam=exam)
    assert case.priority_reasons[0] == "2 level(s) withheld"
    reader = MembershipFactory(project=project, role="annotator").user
    reading = actions.working_reading(case, reader, "annotator")
    assert actions.as_int_map(reading.level_map) == {1: None, 2: None, 3: "T12", 4: "L1", 5: "L2"}
    actions.edit_levels(reading, 1, reader, "name", index=5, level="L2")  # confirms by counting: 1 is T10
    case = actions.decide(reading, 2, reader, "accept")
    new = case.result_run
    by_index = {s["index"]: s for s in run.segments}
    levels = {m.level: m for m in new.levels.all()}
    assert set(levels) == set(LEVELS)
    # T10 was measured as segment 1 though unnamed: its values move into the new run's T10 row.
    assert levels["T10"].mean_hu == by_index[1]["mean_hu"] and levels["T10"].roi_voxels == by_index[1]["roi_voxels"]
    assert [s["level"] for s in new.segments] == list(LEVELS)
    assert new.segment_labels.name == run.segment_labels.name  # same voxels, same file


def test_unusable_vertebra_leaves_the_features(case):
    case.exam.region = "abdomen"
    case.exam.save()
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    actions.set_unusable(reading, 1, reader, 4)  # segment 4 is L1 (fracture, say)
    case = actions.decide(reading, 2, reader, "accept")
    l1 = case.result_run.levels.get(level="L1")
    assert "unusable_by_reader" in l1.flags
    records = records_for_exams(Exam.objects.filter(pk=case.exam_id), case.base_run.source)
    table = build_feature_table(records, "abdomen", require_label=False, require_split=False)
    assert table.dropped and "L1" in str(table.dropped[0])


def test_a_plain_accept_of_a_confident_case_creates_no_run_and_lists_it_as_training_data(client, case):
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    case = actions.decide(reading, 1, reader, "accept")
    assert case.status == CaseStatus.ACCEPTED and case.result_run is None
    assert MeasurementRun.objects.filter(exam=case.exam).count() == 1
    client.force_login(reader)
    page = client.get(f"/p/{case.project_id}/review/training/")
    assert [c.pk for c in page.context["cases"]] == [case.pk] and f"{case.base_run_id} (confirmed)" in page.content.decode()


def test_second_save_on_an_old_version_is_told_what_changed(case):
    first, second = _reader(case), _reader(case)
    reading = actions.working_reading(case, first, "annotator")
    opened = reading.version
    actions.edit_levels(reading, opened, first, "shift", delta=1)
    stale = Reading.objects.get(pk=reading.pk)
    with pytest.raises(actions.EditConflict) as conflict:
        actions.edit_levels(stale, opened, second, "rename", index=2, level="T12")
    assert conflict.value.reading.version == opened + 1
    assert [e.user for e in conflict.value.events] == [first]
    assert "shifted all levels down by one" in conflict.value.events[0].summary
    assert actions.as_int_map(Reading.objects.get(pk=reading.pk).level_map)[1] == "T11"  # first's edit kept


def test_a_stale_accept_after_another_reader_decided_says_who_decided_what(client, case):
    first, second = _reader(case), _reader(case)
    url = f"/p/{case.project_id}/exams/{case.exam_id}/case/"
    client.force_login(first)
    client.get(url)  # opens the single reading
    reading = Reading.objects.get(case=case)
    client.force_login(second)
    assert client.post(url + "action/", {"operation": "accept", "reading": reading.pk, "version": 1}
                       ).status_code == 302
    client.force_login(first)
    page = client.post(url + "action/", {"operation": "reject", "reading": reading.pk, "version": 1}, follow=True)
    text = page.content.decode()
    assert f"Not saved: this case is accepted. Last change: case accepted by {second.username} at " in text
    assert ReviewCase.objects.get(pk=case.pk).status == CaseStatus.ACCEPTED


def test_conflict_shown_on_the_page_and_resolved_by_reapplying(client, case):
    first, second = _reader(case), _reader(case)
    url = f"/p/{case.project_id}/exams/{case.exam_id}/case/"
    client.force_login(first)
    client.get(url)
    reading = Reading.objects.get(case=case)
    action = url + "action/"
    client.force_login(second)
    assert client.post(action, {"operation": "shift", "delta": "1", "reading": reading.pk, "version": 1}
                       ).status_code == 302
    client.force_login(first)
    page = client.post(action, {"operation": "rename", "index": "1", "level": "T9", "reading": reading.pk,
                                "version": 1})
    assert page.status_code == 409
    html = page.content.decode()
    assert "changed while you had it open" in html and second.username in html and "shifted all levels" in html
    assert actions.as_int_map(Reading.objects.get(pk=reading.pk).level_map)[1] == "T11"
    again = client.post(action, {"operation": "rename", "index": "1", "level": "T9", "reading": reading.pk,
                                 "version": 2})
    assert again.status_code == 302
    assert actions.as_int_map(Reading.objects.get(pk=reading.pk).level_map)[1] == "T9"


def test_queue_page_has_a_constant_number_of_queries(client, db, storage):
    exam, run, _ = make_measured_exam()
    project = exam.patient.project
    cases = [ReviewCase(project=project, exam=ExamFactory(patient__project=project), base_run=run, priority=i)
             for i in range(60)]
    ReviewCase.objects.bulk_create(cases)
    client.force_login(MembershipFactory(project=project, role="coordinator").user)
    counts = []
    for per in (10, 60):
        ReviewCase.objects.filter(pk__in=[c.pk for c in cases[per:]]).update(status=CaseStatus.ACCEPTED)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/p/{project.pk}/review/?mine=0").status_code == 200
        counts.append(len(ctx.captured_queries))
        ReviewCase.objects.update(status=CaseStatus.PENDING)
    assert counts[0] == counts[1]


def test_model_versions_built_on_a_superseded_run_are_marked_stale(client, case):
    from analysis.models import ModelVersion

    version = ModelVersion.objects.create(project=case.project, name="BDT chest", task="classification",
                                          algorithm="BDT", feature_set="chest",
                                          measurement_source="default",
                                          data_snapshot={"exam_ids": [case.exam_id], "measurement_source": "default",
                                                         "measurement_run_ids": [case.base_run_id]})
    client.force_login(_reader(case, role="pi"))
    assert "stale" not in client.get(f"/p/{case.project_id}/models/").content.decode()
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    actions.edit_levels(reading, 1, reader, "shift", delta=-1)
    actions.decide(reading, 2, reader, "accept")
    page = client.get(f"/p/{case.project_id}/models/")
    # One staleness rule for every cause (analysis.modeling.staleness): the reviewed run is now the one chosen.
    case.refresh_from_db()
    listed = {v.pk: v.stale_reasons for v in page.context["versions"]}
    assert listed[version.pk] == [f"another measurement run would be used for 1 exam "
                                  f"({case.exam.patient.pseudonym} {case.exam.exam_date:%Y-%m-%d}: "
                                  f"run {case.base_run_id} -> {case.result_run_id})"]
    assert 'class="badge stale"' in page.content.decode()


@pytest.fixture
def three_cases(db, storage):
    """Three open cases of one project (needs 30, 20, 10) on one measured run, and two annotators."""
    exam, run, _ = make_measured_exam()
    project = exam.patient.project
    cases = [ReviewCase.objects.create(project=project, exam=ExamFactory(patient__project=project), base_run=run,
                                       priority=p) for p in (30, 20, 10)]
    ann, bob = (MembershipFactory(project=project, role="annotator", user__username=n).user for n in ("ann", "bob"))
    return project, cases, ann, bob


def test_a_case_opened_before_assignment_is_assigned_and_keeps_its_reading(three_cases):
    from studies.review.models import ReviewEvent

    project, (first, opened, last), ann, bob = three_cases
    reading = actions.working_reading(opened, bob, "annotator")  # bob opens it before any assignment
    actions.edit_levels(reading, 1, bob, "shift", delta=1)
    assert reading.reader is None

    assert actions.assign(project, readers=[ann, bob], user=ann) == 3
    readers = dict(Reading.objects.filter(case__project=project).values_list("case_id", "reader__username"))
    assert readers == {first.pk: "ann", opened.pk: "bob", last.pk: "ann"}  # round-robin by need
    kept = Reading.objects.get(case=opened)
    assert kept.pk == reading.pk and kept.version == 2 and actions.as_int_map(kept.level_map)[1] == "T11"
    event = ReviewEvent.objects.get(reading=kept, action="assign")
    assert event.user == ann and event.summary == "Reading (opened before) assigned to bob"
    entry = LogEntry.objects.get_for_object(kept).filter(actor=ann).get()
    assert entry.changes_dict == {"reader": ["None", "bob"]}
    assert actions.unassigned_cases(project).count() == 0 and actions.assign(project, readers=[ann, bob]) == 0


def test_an_assigned_reading_is_its_readers_and_others_are_told_why_they_only_view(client, three_cases):
    project, (case, *_), ann, bob = three_cases
    ReviewCase.objects.exclude(pk=case.pk).update(status=CaseStatus.ACCEPTED)
    assert actions.assign(project, readers=[ann, bob]) == 1
    reading = Reading.objects.get(case=case)
    assert reading.reader == ann
    assert actions.working_reading(case, ann, "annotator").pk == reading.pk
    assert actions.working_reading(case, bob, "annotator") is None
    assert actions.why_view_only(case, bob, "annotator") == "this case is assigned to ann."
    admin = MembershipFactory(project=project, role="admin").user
    assert actions.working_reading(case, admin, "admin").pk == reading.pk  # an admin may step in

    url = f"/p/{project.pk}/exams/{case.exam_id}/case/"
    client.force_login(bob)
    assert 'id="view-only">View only: this case is assigned to ann.' in client.get(url).content.decode()
    answer = client.post(url + "action/", {"operation": "accept", "reading": reading.pk, "version": 1}, follow=True)
    assert "Not saved: this case is assigned to ann." in answer.content.decode()
    assert Reading.objects.get(pk=reading.pk).decided_at is None


def test_an_opened_case_drawn_for_double_reading_becomes_its_first_reading(three_cases):
    project, (case, *_), ann, bob = three_cases
    ReviewCase.objects.exclude(pk=case.pk).update(status=CaseStatus.ACCEPTED)
    reading = actions.working_reading(case, bob, "annotator")
    actions.edit_levels(reading, 1, bob, "shift", delta=1)

    assert actions.assign(project, readers=[ann, bob], double_read_share=1.0) == 1
    case.refresh_from_db()
    readings = {r.kind: r for r in case.readings.all()}
    assert case.double_read and set(readings) == {ReadingKind.FIRST, ReadingKind.SECOND}
    assert readings[ReadingKind.FIRST].pk == reading.pk and readings[ReadingKind.FIRST].reader == ann
    assert actions.as_int_map(readings[ReadingKind.FIRST].level_map)[1] == "T11"  # the edit stays
    assert readings[ReadingKind.SECOND].reader == bob and readings[ReadingKind.SECOND].version == 1
    assert actions.as_int_map(readings[ReadingKind.SECOND].level_map)[1] == LEVELS[0]  # automatic levels
    assert actions.working_reading(case, ann, "annotator").pk == reading.pk


def test_an_annotators_queue_lists_their_cases_and_the_unassigned_ones_by_need(client, three_cases):
    project, (first, opened, last), ann, bob = three_cases
    # Before any assignment every open case is there for every annotator, an opened one included.
    actions.working_reading(opened, bob, "annotator")
    assert list(actions.queue(project, user=ann)) == [first, opened, last]
    client.force_login(ann)
    page = client.get(f"/p/{project.pk}/review/")  # an annotator's default: their cases and the unassigned
    assert page.context["mine"] and [c.pk for c in page.context["page"]] == [first.pk, opened.pk, last.pk]
    assert "mine and unassigned" in page.content.decode()

    # Assigned: each sees their own; a case read by someone else, or decided, is no longer offered.
    ReviewCase.objects.filter(pk=first.pk).update(status=CaseStatus.ACCEPTED)
    third = MembershipFactory(project=project, role="annotator", user__username="cy").user
    third_case = ReviewCase.objects.create(project=project, exam=ExamFactory(patient__project=project),
                                           base_run=first.base_run, priority=25)
    assert actions.assign(project, readers=[ann, bob]) == 3
    assert list(actions.queue(project, user=ann)) == [third_case, last]
    assert list(actions.queue(project, user=bob)) == [opened]
    assert list(actions.queue(project, user=third)) == []
    # The filter's box: checked sends mine=0&mine=1 (the hidden 0 first), unchecked only mine=0.
    shown = {q: [c.pk for c in client.get(f"/p/{project.pk}/review/?status=open&{q}").context["page"]]
             for q in ("mine=0&mine=1", "mine=0")}
    assert shown == {"mine=0&mine=1": [third_case.pk, last.pk], "mine=0": [third_case.pk, opened.pk, last.pk]}
