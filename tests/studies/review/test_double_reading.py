"""Double reading: blinded readings, disagreement to an adjudicator, agreement with Cohen's kappa."""

import pytest

from analysis.stats.agreement import cohen_kappa
from studies.review import actions
from studies.review.models import CaseStatus, Reading, ReadingKind, ReviewCase, ReviewSettings
from tests.factories import ExamFactory, MembershipFactory
from tests.studies.review.conftest import make_measured_exam


def test_cohen_kappa_equals_the_hand_computed_value():
    # 10 items; both accept 6, both reject 1, rater 1 accept / rater 2 reject 2, rater 1 reject / 2 accept 1.
    # observed = 7/10; rater 1 accepts 8/10, rater 2 accepts 7/10: expected = .8*.7 + .2*.3 = 0.62;
    # kappa = (0.70 - 0.62) / (1 - 0.62) = 0.08 / 0.38 = 0.210526...
    pairs = [("accept", "accept")] * 6 + [("reject", "reject")] + [("accept", "reject")] * 2 + [("reject", "accept")]
    result = cohen_kappa(pairs)
    assert result["observed"] == pytest.approx(0.7)
    assert result["expected"] == pytest.approx(0.62)
    assert result["kappa"] == pytest.approx(0.08 / 0.38)
    assert cohen_kappa([])["kappa"] is None


@pytest.fixture
def double_read(db, storage):
    """Two exams of one project, both assigned for double reading to two annotators, and an adjudicator."""
    project = ExamFactory().patient.project
    exams = [make_measured_exam(ExamFactory(patient__project=project), random_state=i)[0] for i in range(2)]
    actions.open_cases(project)
    a, b = (MembershipFactory(project=project, role="annotator", user__username=n).user for n in ("ann", "bob"))
    adjudicator = MembershipFactory(project=project, role="admin").user
    ReviewSettings.objects.create(project=project, adjudicator=adjudicator)
    assert actions.assign(project, double_read_share=1.0, seed=0) == 2
    return project, exams, a, b, adjudicator


def _reading(exam, user):
    case = ReviewCase.objects.get(exam=exam)
    return actions.working_reading(case, user, "annotator")


def test_readers_are_blinded_disagree_and_an_adjudicator_decides(client, double_read):
    project, (exam, _), a, b, adjudicator = double_read
    ra, rb = _reading(exam, a), _reading(exam, b)
    assert {ra.kind, rb.kind} == {ReadingKind.FIRST, ReadingKind.SECOND} and ra.pk != rb.pk
    actions.edit_levels(ra, 1, a, "shift", delta=1)
    actions.decide(ra, 2, a, "accept")
    # Bob does not see Ann's reading, decision or edits while he has not decided.
    client.force_login(b)
    page = client.get(f"/p/{project.pk}/exams/{exam.pk}/case/")
    html = page.content.decode()
    assert [r.pk for r in page.context["readings"]] == [rb.pk]
    assert "shifted all levels" not in html and "ann" not in html.split("Review history")[1]
    case = actions.decide(rb, 1, b, "accept")  # Bob accepts the automatic levels: they disagree
    assert case.status == CaseStatus.ADJUDICATION
    adjudication = Reading.objects.get(case=case, kind=ReadingKind.ADJUDICATION)
    assert adjudication.reader == adjudicator
    # Now both decided, each sees both readings; the adjudicator works on the third one.
    client.force_login(adjudicator)
    page = client.get(f"/p/{project.pk}/exams/{exam.pk}/case/")
    assert page.context["reading"].pk == adjudication.pk
    assert "readers disagree: segment 1: ann T11 / bob T10; segment 2: ann T12 / bob T11" in page.content.decode()
    client.post(f"/p/{project.pk}/exams/{exam.pk}/case/action/",
                {"operation": "shift", "delta": "1", "reading": adjudication.pk, "version": 1})
    client.post(f"/p/{project.pk}/exams/{exam.pk}/case/action/",
                {"operation": "accept", "reading": adjudication.pk, "version": 2})
    case.refresh_from_db()
    assert case.status == CaseStatus.ACCEPTED and case.result_run.parameters["review"]["reader"] == adjudicator.username
    assert sorted(case.result_run.levels.values_list("level", flat=True)) == sorted(["T11", "T12", "L1", "L2", "L3"])


def test_agreeing_readers_settle_the_case_and_the_agreement_page_shows_kappa(client, double_read):
    project, (first_exam, second_exam), a, b, _ = double_read
    for user in (a, b):  # both accept the first exam as it is
        reading = _reading(first_exam, user)
        actions.decide(reading, reading.version, user, "accept")
    assert ReviewCase.objects.get(exam=first_exam).status == CaseStatus.ACCEPTED
    ra, rb = _reading(second_exam, a), _reading(second_exam, b)
    actions.decide(ra, 1, a, "accept")
    actions.decide(rb, 1, b, "reject")
    assert ReviewCase.objects.get(exam=second_exam).status == CaseStatus.ADJUDICATION
    # Pairs: (accept, accept), (accept, reject). Observed 1/2; expected: rater 1 accepts 2/2, rater 2 accepts
    # 1/2 -> 1 * 0.5 + 0 * 0.5 = 0.5; kappa = (0.5 - 0.5) / (1 - 0.5) = 0.0.
    client.force_login(a)
    page = client.get(f"/p/{project.pk}/review/agreement/")
    agreement = page.context["agreement"]
    assert agreement["decisions"]["n"] == 2 and agreement["decisions"]["kappa"] == 0.0
    assert 'id="kappa">0.000<' in page.content.decode()
    # Level names: both accepted exam 1 unchanged, so every level agrees.
    assert {row["level"]: row["share"] for row in agreement["levels"]} == {
        "T10": 1.0, "T11": 1.0, "T12": 1.0, "L1": 1.0, "L2": 1.0}
