"""Lost updates: an edit carries the version it was opened at; a save against a newer version is refused with
what differs (field: theirs -> yours), and saving again overrides knowingly. Nothing is overwritten silently.

Each test opens the page as a browser would (the form's own fields, hidden versions included), lets someone
else save first, then submits.
"""

from django.urls import reverse

from studies.models import Exam, ExclusionFlag, Membership, QCTResult
from tests.factories import ExamFactory, MembershipFactory, PatientFactory, QCTResultFactory
from tests.pageforms import form_values


def _exam_url(project, exam):
    return reverse("studies:exam_edit", args=[project.pk, exam.patient_id, exam.pk])


def test_second_saver_is_told_what_changed_and_decides(coordinator_client, client, member, project):
    qct = QCTResultFactory(exam__patient__project=project, exam__age_at_exam=65, bmd_l1=93.0,
                           levels_note="L1 only")
    exam = qct.exam
    url = _exam_url(project, exam)
    mine = form_values(coordinator_client, url, "exam-exam_date")  # I open the exam ...
    other = member("coordinator")
    client.force_login(other)
    theirs = form_values(client, url, "exam-exam_date")                   # ... so does a colleague, who saves first
    theirs.update({"exam-age_at_exam": "66", "qct-bmd_l1": "95"})
    assert client.post(url, theirs).status_code == 302

    mine.update({"qct-bmd_l1": "90", "qct-levels_note": "L1 only, L2 fractured"})
    response = coordinator_client.post(url, mine)
    page = response.content.decode()
    assert response.status_code == 200
    assert "someone else saved this exam since you opened it" in page
    # Theirs -> mine, for every field where the stored values differ from what I submit.
    assert "Age at exam: 66 -&gt; 65" in page
    assert "BMD L1 (mg/cm3): 95 -&gt; 90" in page
    assert "Levels note: L1 only -&gt; L1 only, L2 fractured" in page
    qct.refresh_from_db()
    exam.refresh_from_db()
    assert (exam.age_at_exam, qct.bmd_l1, qct.levels_note) == (66, 95.0, "L1 only")  # theirs, untouched

    # The page kept my values and now carries the stored versions: saving again overrides knowingly.
    again = coordinator_client.post(url, {**mine, "exam-version": str(exam.version),
                                          "qct-version": str(qct.version)})
    assert again.status_code == 302
    qct.refresh_from_db()
    exam.refresh_from_db()
    assert (exam.age_at_exam, qct.bmd_l1, qct.levels_note) == (65, 90.0, "L1 only, L2 fractured")


def test_resubmitting_the_conflict_page_saves(coordinator_client, client, member, project):
    """The conflict page's own form (hidden versions moved forward) saves on the next click."""
    from tests.pageforms import form_with

    qct = QCTResultFactory(exam__patient__project=project, bmd_l1=93.0)
    url = _exam_url(project, qct.exam)
    mine = form_values(coordinator_client, url, "exam-exam_date")
    client.force_login(member("coordinator"))
    theirs = form_values(client, url, "exam-exam_date")
    assert client.post(url, {**theirs, "qct-bmd_l1": "95"}).status_code == 302
    conflict = coordinator_client.post(url, {**mine, "qct-bmd_l1": "91"})
    resubmit = form_with(conflict.content.decode(), "exam-exam_date")
    assert resubmit["qct-bmd_l1"] == "91.0" or resubmit["qct-bmd_l1"] == "91"
    assert coordinator_client.post(url, resubmit).status_code == 302
    assert QCTResult.objects.get(pk=qct.pk).bmd_l1 == 91.0


def test_edit_without_a_version_is_refused(coordinator_client, project):
    """A form that does not say which version it edits could overwrite anything: it is refused."""
    qct = QCTResultFactory(exam__patient__project=project, bmd_l1=93.0)
    data = form_values(coordinator_client, _exam_url(project, qct.exam), "exam-exam_date")
    del data["exam-version"]
    response = coordinator_client.post(_exam_url(project, qct.exam), {**data, "qct-bmd_l1": "70"})
    assert response.status_code == 200
    assert QCTResult.objects.get(pk=qct.pk).bmd_l1 == 93.0


def test_split_changed_by_someone_else_is_a_conflict(coordinator_client, project):
    from studies.registry import set_split

    qct = QCTResultFactory(exam__patient__project=project)
    set_split(qct.exam, "train")
    url = _exam_url(project, qct.exam)
    mine = form_values(coordinator_client, url, "exam-exam_date")
    set_split(qct.exam, "test")                          # e.g. an import, after I opened the page
    response = coordinator_client.post(url, {**mine, "exam-age_at_exam": "70"})
    assert "Split: Test -&gt; Train" in response.content.decode()
    assert qct.exam.cohort_memberships.get().split == "test"


def test_flag_edit_conflict(coordinator_client, project):
    patient = PatientFactory(project=project)
    flag = ExclusionFlag.objects.create(patient=patient, reason="vertebral_fracture", note="L2")
    url = reverse("studies:flag_edit", args=[project.pk, patient.pk, flag.pk])
    mine = form_values(coordinator_client, url, "reason")
    flag.note = "L2 and L3"
    flag.save()                                          # someone else, meanwhile
    response = coordinator_client.post(url, {**mine, "reason": "focal_lesion"})
    page = response.content.decode()
    assert "someone else saved this exclusion flag since you opened it" in page
    assert "Note: L2 and L3 -&gt; L2" in page
    flag.refresh_from_db()
    assert (flag.reason, flag.note) == ("vertebral_fracture", "L2 and L3")


def test_removing_a_flag_changed_since_the_page_was_opened_is_refused(coordinator_client, project):
    patient = PatientFactory(project=project)
    flag = ExclusionFlag.objects.create(patient=patient, reason="vertebral_fracture", note="L2")
    page = coordinator_client.get(reverse("studies:patient_detail", args=[project.pk, patient.pk])).content.decode()
    assert f'name="version" value="{flag.version}"' in page
    flag.note = "L2, confirmed"
    flag.save()
    coordinator_client.post(reverse("studies:flag_delete", args=[project.pk, patient.pk, flag.pk]),
                            {"version": "1"})
    assert ExclusionFlag.objects.filter(pk=flag.pk).exists()
    coordinator_client.post(reverse("studies:flag_delete", args=[project.pk, patient.pk, flag.pk]),
                            {"version": str(flag.version)})
    assert not ExclusionFlag.objects.filter(pk=flag.pk).exists()


def test_role_change_conflict(client, member, project):
    admin = member("admin")
    client.force_login(admin)
    membership = MembershipFactory(project=project, role="annotator")
    url = reverse("studies:members", args=[project.pk])
    page = client.get(url).content.decode()
    assert f'name="m{membership.pk}-version" value="1"' in page
    membership.role = "pi"
    membership.save()                                   # another admin, meanwhile
    response = client.post(reverse("studies:member_role", args=[project.pk, membership.pk]),
                           {f"m{membership.pk}-role": "coordinator", f"m{membership.pk}-version": "1"}, follow=True)
    assert "Role of " in response.content.decode() and "PI -&gt; Coordinator" in response.content.decode()
    assert Membership.objects.get(pk=membership.pk).role == "pi"
    client.post(reverse("studies:member_role", args=[project.pk, membership.pk]),
                {f"m{membership.pk}-role": "coordinator", f"m{membership.pk}-version": "2"})
    assert Membership.objects.get(pk=membership.pk).role == "coordinator"


def test_stale_copy_cannot_be_saved_over_a_newer_row(db):
    """Below the pages: any code path saving an outdated copy is refused (jobs, importers, the admin)."""
    import pytest

    from studies.models import EditConflict

    exam = ExamFactory(age_at_exam=60)
    stale = Exam.objects.get(pk=exam.pk)
    exam.age_at_exam = 61
    exam.save()
    stale.age_at_exam = 59
    with pytest.raises(EditConflict, match="changed since it was read"):
        stale.save()
    assert Exam.objects.get(pk=exam.pk).age_at_exam == 61
