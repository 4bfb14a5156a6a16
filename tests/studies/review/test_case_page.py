"""The case page: per-level table, notes, QCT, predictions' absence, and the segment map the viewer loads."""

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL
from studies.models import QCTResult
from tests.factories import MembershipFactory, UserFactory
from tests.studies.review.conftest import LEVELS, make_measured_exam


def test_case_page_lists_levels_notes_and_qct(client, db, storage):
    exam, run, _ = make_measured_exam()
    QCTResult.objects.create(exam=exam, bmd_l1=95.0, bmd_l2=105.0)
    project = exam.patient.project
    client.force_login(MembershipFactory(project=project, role="annotator").user)
    page = client.get(f"/p/{project.pk}/exams/{exam.pk}/case/")
    html = page.content.decode()
    assert page.status_code == 200
    rows = page.context["segments"]
    assert [s["shown_level"] for s in rows] == list(LEVELS)  # head first, segment 1 = T10
    measured = {m.level: m for m in run.levels.all()}
    # The segments list stores HU rounded to 4 decimals (analysis.measurement.segments_json).
    assert [s["mean_hu"] for s in rows] == [round(measured[name].mean_hu, 4) for name in LEVELS]
    assert [s["sd_hu"] for s in rows] == [measured[name].sd_hu for name in LEVELS]
    assert "levels from the phantom&#x27;s truth" in html or "levels from the phantom's truth" in html
    assert "100.0" in html and "osteopenia" in html  # mean of 95 and 105 mg/cm3, 80-120 is osteopenia
    assert f'data-series="{run.series_uid}"' in html


def test_segment_map_is_the_label_map_renumbered_head_first(client, db, storage):
    exam, run, phantom = make_measured_exam()
    project = exam.patient.project
    client.force_login(MembershipFactory(project=project, role="pi").user)
    answer = client.get(f"/p/{project.pk}/exams/{exam.pk}/runs/{run.pk}/segments.bin")
    shape = tuple(int(n) for n in answer["X-Shape"].split(","))
    indices = np.frombuffer(answer.content, dtype=np.uint8).reshape(shape)
    expected = np.zeros(phantom.body_labels.shape, dtype=np.uint8)
    for index, level in enumerate(LEVELS, start=1):
        expected[phantom.body_labels == VERSE_LABEL[level]] = index
    assert shape == phantom.volume.shape and np.array_equal(indices, expected)


def test_case_page_is_404_outside_the_project(client, db, storage):
    exam, run, _ = make_measured_exam()
    client.force_login(UserFactory())
    assert client.get(f"/p/{exam.patient.project_id}/exams/{exam.pk}/case/").status_code == 404
    assert client.get(f"/p/{exam.patient.project_id}/exams/{exam.pk}/runs/{run.pk}/segments.bin").status_code == 404


def test_annotators_see_the_review_queue_first(client, db):
    membership = MembershipFactory(role="annotator")
    client.force_login(membership.user)
    answer = client.get(f"/p/{membership.project_id}/")
    assert answer.status_code == 302 and answer["Location"] == f"/p/{membership.project_id}/review/"
    assert client.get(f"/p/{membership.project_id}/?overview=1").status_code == 200
    coordinator = MembershipFactory(role="coordinator", project=membership.project)
    client.force_login(coordinator.user)
    assert client.get(f"/p/{membership.project_id}/").status_code == 200


def test_case_history_still_names_a_reader_whose_account_was_deleted(client, db, storage):
    from studies.review import actions
    from studies.review.models import ReviewCase, ReviewComment, ReviewEvent

    exam, _, _ = make_measured_exam()
    project = exam.patient.project
    actions.open_cases(project)
    case = ReviewCase.objects.get(exam=exam)
    reader = MembershipFactory(project=project, role="annotator").user
    reader.username = "rita.reader"
    reader.save()
    reading = actions.working_reading(case, reader, "annotator")
    actions.edit_levels(reading, reading.version, reader, "name", index=1, level="T11")
    actions.comment(case, reader, "segment 1 is T11", reading=reading)
    events = list(ReviewEvent.objects.filter(case=case, user=reader).values_list("pk", flat=True))
    assert len(events) == 2  # named, commented

    reader.delete()
    assert ReviewEvent.objects.filter(pk__in=events, user__isnull=True).count() == 2
    client.force_login(MembershipFactory(project=project, role="pi").user)
    html = client.get(f"/p/{project.pk}/exams/{exam.pk}/case/").content.decode()
    history = html[html.index('id="review-history"'):]
    history = history[:history.index("</ul>")]
    assert history.count("rita.reader (account deleted):") == 3  # two events and the comment
    assert "rita.reader (account deleted): “segment 1 is T11”" in history
    comment = ReviewComment.objects.get(case=case)
    assert comment.author is None and comment.who == "rita.reader (account deleted)"


def test_review_names_are_filled_in_for_rows_written_before_they_were_kept(db, storage):
    """The data migration that fills the kept names of the events and comments written before it."""
    import importlib

    from django.apps import apps

    from studies.review import actions
    from studies.review.models import ReviewCase, ReviewComment, ReviewEvent

    fill = importlib.import_module("studies.review.migrations.0003_review_event_and_comment_user_names").fill_names
    exam, _, _ = make_measured_exam()
    actions.open_cases(exam.patient.project)
    case = ReviewCase.objects.get(exam=exam)
    reader = MembershipFactory(project=exam.patient.project, role="annotator").user
    actions.comment(case, reader, "looks fine")
    ReviewEvent.objects.update(username="")
    ReviewComment.objects.update(author_name="")
    fill(apps, None)
    assert list(ReviewEvent.objects.filter(user=reader).values_list("username", flat=True)) == [reader.username]
    assert ReviewComment.objects.get(case=case).author_name == reader.username
    assert set(ReviewEvent.objects.filter(user__isnull=True).values_list("username", flat=True)) <= {""}
