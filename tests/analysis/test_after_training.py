"""After the first training: the registry stays correctable (only split changes are refused), corrections mark
the dependent model versions stale (with why), and training after a measurement by another tool lets the
user choose the measurement source on the page."""

import pytest
from django.template.defaultfilters import floatformat
from django.urls import reverse

from analysis.modeling.demo import SYNTHETIC_SOURCE, seed_demo_measurements
from analysis.modeling.versions import train_cohort
from analysis.models import LevelMeasurement, MeasurementRun, ModelVersion
from studies.demo import seed_demo_project
from studies.models import Cohort, Exam, ExclusionFlag, Job, Membership, QCTResult
from tests.factories import UserFactory
from tests.pageforms import form_values

N = 90


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


@pytest.fixture
def demo(db, storage):
    project, _ = seed_demo_project(n_patients=N, random_state=1, name="after-training")
    seed_demo_measurements(project, random_state=1)
    return project


@pytest.fixture
def trained(demo):
    versions, _ = train_cohort(demo, feature_sets=("abdomen",), algorithms={"classification": ["LR"],
                               "regression": ["SGD"]}, n_resamples=20)
    return demo, versions


def login(client, project, role):
    user = UserFactory()
    Membership.objects.create(project=project, user=user, role=role)
    client.force_login(user)
    return user


def used_exam(version):
    return Exam.objects.select_related("patient", "qct").get(pk=version.data_snapshot["exam_ids"][0])


def _edit_url(project, exam):
    return reverse("studies:exam_edit", args=[project.pk, exam.patient_id, exam.pk])


def test_correcting_qct_and_age_after_training_saves_and_marks_versions_stale(client, trained):
    project, (lr, sgd) = trained
    assert Cohort.objects.get(project=project, name="main").frozen
    login(client, project, "coordinator")
    exam = used_exam(lr)
    url = _edit_url(project, exam)
    data = form_values(client, url, "exam-exam_date")
    old_bmd = exam.qct.qct_bmd
    response = client.post(url, {**data, "qct-bmd_l1": "150", "qct-bmd_l2": "", "qct-bmd_l3": "",
                                 "exam-age_at_exam": str(exam.age_at_exam + 1),
                                 "qct-levels_note": "L1 only, re-read"})
    assert response.status_code == 302  # was a 500: "cohort 'main' is frozen"
    qct = QCTResult.objects.get(exam=exam)
    assert (qct.qct_bmd, qct.levels_note) == (150.0, "L1 only, re-read")

    listing = client.get(reverse("analysis:model_list", args=[project.pk])).content.decode()
    assert listing.count('data-testid="stale"') == 2  # both versions used that exam
    detail = client.get(reverse("analysis:model_detail", args=[project.pk, lr.pk])).content.decode()
    name = f"{exam.patient.pseudonym} {exam.exam_date:%Y-%m-%d}"
    # Rounded to one decimal as the registry's pages show BMD (the stored mean has three decimals).
    assert f"QCT BMD changed for 1 exam ({name}: {floatformat(old_bmd, 1)} -&gt; 150.0 mg/cm3)" in detail
    assert f"age changed for 1 exam ({name}: {exam.age_at_exam} -&gt; {exam.age_at_exam + 1})" in detail


def test_split_change_of_a_frozen_cohort_is_refused_with_a_message(client, trained):
    project, (lr, _) = trained
    login(client, project, "coordinator")
    exam = used_exam(lr)
    member = exam.cohort_memberships.get()
    other = "test" if member.split != "test" else "train"
    url = _edit_url(project, exam)
    data = form_values(client, url, "exam-exam_date")
    response = client.post(url, {**data, "exam-split": other, "exam-age_at_exam": "50"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Split of a frozen cohort cannot change: &#x27;main&#x27; was used to train a model" in page
    member.refresh_from_db()
    assert member.split != other and Exam.objects.get(pk=exam.pk).age_at_exam != 50  # nothing half-saved


def test_frozen_split_changes_names_the_refused_rows(trained):
    """The check a CSV import uses to report ``line N: split of a frozen cohort cannot change``."""
    import datetime as dt

    from studies.registry import FrozenSplitError, frozen_split_changes, set_split

    project, (lr, _) = trained
    exam = used_exam(lr)
    split = exam.cohort_memberships.get().split
    other = "test" if split != "test" else "train"
    key = (exam.patient.pseudonym, exam.exam_date)
    new_key = ("NEW-1", dt.date(2024, 1, 1))
    wanted = {key: other, new_key: "", ("NEW-2", dt.date(2024, 1, 1)): "train"}
    assert frozen_split_changes(project, wanted) == {key: split, ("NEW-2", dt.date(2024, 1, 1)): None}
    assert frozen_split_changes(project, {key: split, new_key: ""}) == {}
    assert set_split(exam, split).split == split  # the same split: fine
    with pytest.raises(FrozenSplitError, match="split of a frozen cohort cannot change"):
        set_split(exam, other)


def test_staleness_follows_the_data_and_clears_when_undone(trained):
    from analysis.modeling.staleness import stale_reasons

    project, (lr, sgd) = trained
    versions = list(ModelVersion.objects.filter(project=project))
    assert stale_reasons(versions) == {}
    exam = used_exam(lr)
    name = f"{exam.patient.pseudonym} {exam.exam_date:%Y-%m-%d}"

    flag = ExclusionFlag.objects.create(patient=exam.patient, exam=exam, reason="vertebral_fracture")
    assert stale_reasons(versions)[lr.pk] == [f"now excluded for 1 exam ({name})"]
    flag.delete()
    assert stale_reasons(versions) == {}

    # A newer run of the exam (e.g. "Segment and measure") is what the project default now picks.
    run_id = lr.data_snapshot["measurement_run_ids"][0]
    newer = MeasurementRun.objects.create(exam=exam, source="bmdsite")
    assert stale_reasons([lr])[lr.pk] == [
        f"another measurement run would be used for 1 exam ({name}: run {run_id} -> {newer.pk})"]
    newer.delete()

    # A threshold change (and its recategorize job) changes categories without changing any QCT value.
    from studies.registry import recategorize_project

    project.normal_above = 200.0
    project.save()
    recategorize_project(project)
    reason = stale_reasons([lr])[lr.pk][0]
    assert reason.startswith("category changed for ") and "normal -> osteopenia" in reason
    project.normal_above = 120.0
    project.save()
    recategorize_project(project)
    assert stale_reasons(versions) == {}

    # A deleted exam that was used.
    Exam.objects.filter(pk=exam.pk).delete()
    assert stale_reasons([sgd])[sgd.pk] == [f"deleted since training for 1 exam (exam id {exam.pk})"]


def test_excluded_exam_unflagged_after_training_marks_stale(demo):
    from analysis.modeling.staleness import stale_reasons

    patient = demo.patients.order_by("pseudonym").first()
    flag = ExclusionFlag.objects.create(patient=patient, reason="spine_surgery")
    (version,), _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                                 algorithms={"regression": ["SGD"]}, n_resamples=10)
    assert stale_reasons([version]) == {}
    flag.delete()
    exam = patient.exams.get()
    assert stale_reasons([version]) == {
        version.pk: [f"no longer excluded for 1 exam ({patient.pseudonym} {exam.exam_date:%Y-%m-%d})"]}


def _measure_one_exam_with_the_pipeline(project):
    """What "Segment and measure" leaves behind: one bmdsite run, newer than the exam's synthetic run (of an
    exam whose synthetic run has the abdomen levels, so that both trainings below use it)."""
    exam = Exam.objects.filter(patient__project=project, measurement_runs__levels__level="L2",
                               cohort_memberships__split="train").order_by("pk").first()
    run = MeasurementRun.objects.create(exam=exam, source=MeasurementRun.PIPELINE)
    LevelMeasurement.objects.bulk_create([LevelMeasurement(run=run, level=level, mean_hu=hu)
                                          for level, hu in (("T12", 150.0), ("L1", 145.0), ("L2", 140.0))])
    return exam, run


def test_training_after_one_measurement_with_the_project_default(demo):
    exam, run = _measure_one_exam_with_the_pipeline(demo)
    # Was: ValueError "exams have measurement runs of several sources (bmdsite, synthetic); choose one".
    (version,), _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                                 algorithms={"regression": ["SGD"]}, n_resamples=10)
    snap = version.data_snapshot
    assert version.measurement_source == "default" and snap["measurement_source"] == "default"
    runs = dict(zip(snap["exam_ids"], snap["measurement_run_ids"]))
    synthetic = dict(MeasurementRun.objects.filter(source=SYNTHETIC_SOURCE).values_list("exam_id", "pk"))
    # The measured exam contributes its newest run (the pipeline's), every other exam its synthetic run.
    assert runs[exam.pk] == run.pk
    assert all(runs[e] == synthetic[e] for e in runs if e != exam.pk)

    (named,), _ = train_cohort(demo, feature_sets=("abdomen",), tasks=("regression",),
                               algorithms={"regression": ["SGD"]}, n_resamples=10,
                               measurement_source=SYNTHETIC_SOURCE)
    runs = dict(zip(named.data_snapshot["exam_ids"], named.data_snapshot["measurement_run_ids"]))
    assert named.measurement_source == SYNTHETIC_SOURCE and runs[exam.pk] == synthetic[exam.pk]


def test_a_reviewed_run_wins_over_a_newer_automatic_one(demo):
    from analysis.modeling.records import PROJECT_DEFAULT_SOURCE, chosen_runs
    from studies.review.models import CaseStatus, ReviewCase

    exam = Exam.objects.filter(patient__project=demo).order_by("pk").first()
    base = MeasurementRun.objects.create(exam=exam, source="bmdsite")
    reviewed = MeasurementRun.objects.create(exam=exam, source="bmdsite", parameters={"reviewed": True})
    newer = MeasurementRun.objects.create(exam=exam, source="bmdsite")
    assert newer.created_at >= reviewed.created_at and newer.pk > reviewed.pk
    exams = Exam.objects.filter(pk=exam.pk)
    case = ReviewCase.objects.create(project=demo, exam=exam, base_run=base, result_run=reviewed,
                                     status=CaseStatus.ACCEPTED)
    assert chosen_runs(exams, PROJECT_DEFAULT_SOURCE) == {exam.pk: reviewed.pk}
    assert chosen_runs(exams, "bmdsite") == {exam.pk: newer.pk}
    # Reviewed means accepted now: a case sent back leaves its relabelled run an ordinary, older run.
    ReviewCase.objects.filter(pk=case.pk).update(status=CaseStatus.RESEGMENT)
    assert chosen_runs(exams, PROJECT_DEFAULT_SOURCE) == {exam.pk: newer.pk}


def test_training_page_offers_the_source_and_records_the_choice(client, demo):
    from analysis.tasks import train_grid

    exam, run = _measure_one_exam_with_the_pipeline(demo)
    login(client, demo, "pi")
    page = client.get(reverse("analysis:model_list", args=[demo.pk])).content.decode()
    assert "project default: per exam the newest reviewed run, else the newest automatic run" in page
    assert f'<option value="bmdsite">only bmdsite (1 exam)</option>' in page
    assert f'<option value="synthetic">only synthetic ({N} exams)</option>' in page
    assert '<label for="id_measurement_source">Measurements</label>' in page

    response = client.post(reverse("analysis:train", args=[demo.pk]),
                           {"cohort": "main", "seed": "3", "measurement_source": "synthetic"})
    job = Job.objects.get(kind="analysis.train_grid", project=demo)
    assert response.status_code == 302 and job.params["measurement_source"] == "synthetic"
    again = client.post(reverse("analysis:train", args=[demo.pk]),
                        {"cohort": "main", "seed": "3", "measurement_source": ""})
    assert again.status_code == 409
    assert f"already running (job #{job.pk}, queued)" in again.content.decode()
    assert Job.objects.filter(kind="analysis.train_grid", project=demo).count() == 1

    # The job's function with the recorded parameters (the worker path is tested in tests/integration).
    params = {k: v for k, v in job.params.items()}
    result = train_grid(progress=lambda f, m="": None, feature_sets=["abdomen"], tasks=["regression"],
                        n_resamples=10, **params)
    versions = ModelVersion.objects.filter(pk__in=result["model_versions"])
    assert {v.measurement_source for v in versions} == {"synthetic"}


def test_unknown_source_is_a_form_error_not_a_failed_job(client, demo):
    login(client, demo, "pi")
    response = client.post(reverse("analysis:train", args=[demo.pk]),
                           {"cohort": "main", "seed": "0", "measurement_source": "TotalSegmentator"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Job.objects.filter(project=demo).exists()


def test_csv_import_touching_trained_exams_with_their_splits_updates_them(trained):
    """An import with a split column that repeats the stored splits is not a split change (was a 500)."""
    from studies.importers import import_qct

    project, (lr, _) = trained
    exam = used_exam(lr)
    split = exam.cohort_memberships.get().split
    text = ("patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split\n"
            f"{exam.patient.pseudonym},{exam.patient.sex},{exam.age_at_exam},{exam.exam_date:%Y-%m-%d},"
            f"{exam.region},111,,,{split}\n")
    plan = import_qct(project, text, source="after.csv")
    assert plan.counts["updated_exams"] == 1
    assert QCTResult.objects.get(exam=exam).qct_bmd == 111.0
    assert exam.cohort_memberships.get().split == split
