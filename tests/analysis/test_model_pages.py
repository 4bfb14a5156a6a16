"""Model version pages: the metrics table with CIs, project access, and who may launch training."""

import pytest
from django.urls import reverse

from analysis.modeling.demo import seed_demo_measurements
from analysis.modeling.versions import train_cohort
from studies.demo import seed_demo_project
from studies.models import Job, Membership
from tests.factories import UserFactory


@pytest.fixture
def trained(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=90, random_state=1, name="pages-demo")
    seed_demo_measurements(project, random_state=1)
    # Every demo patient has both regions (issue 12); one exam excluded gives the page a left-out exam to name.
    from studies.models import ExclusionFlag

    exam = project.patients.order_by("pk").first().exams.first()
    ExclusionFlag.objects.create(patient=exam.patient, exam=exam, reason="vertebral_fracture")
    versions, _ = train_cohort(project, feature_sets=("abdomen",), algorithms={"classification": ["LR"],
                               "regression": ["SGD"]}, n_resamples=20)
    return project, versions


def login(client, project, role):
    user = UserFactory()
    Membership.objects.create(project=project, user=user, role=role)
    client.force_login(user)
    return user


def test_detail_shows_metrics_with_cis_and_says_one_vs_rest_macro(client, trained):
    project, (lr, sgd) = trained
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_detail", args=[project.pk, lr.pk])).content.decode()
    m = lr.evaluations.get(split="validation").metrics
    low, high = m["ci"]["macro_auc"]
    # The stored macro AUC and its bootstrap interval, as the page formats them.
    assert f"{m['macro_auc']:.3f} ({low:.3f}–{high:.3f})" in page
    assert "one-vs-rest macro" in page and "DeLong" in page
    page = client.get(reverse("analysis:model_detail", args=[project.pk, sgd.pk])).content.decode()
    assert f"{sgd.evaluations.get(split='test').metrics['mae']:.2f}" in page
    listing = client.get(reverse("analysis:model_list", args=[project.pk])).content.decode()
    assert lr.name in listing and sgd.name in listing


def test_other_projects_versions_are_not_found(client, trained):
    project, (lr, _) = trained
    client.force_login(UserFactory())
    assert client.get(reverse("analysis:model_detail", args=[project.pk, lr.pk])).status_code == 404


def test_only_pi_and_admin_launch_training(client, trained):
    project, _ = trained
    login(client, project, "annotator")
    assert client.post(reverse("analysis:train", args=[project.pk]), {"seed": "1"}).status_code == 403
    login(client, project, "pi")
    response = client.post(reverse("analysis:train", args=[project.pk]), {"seed": "1", "cohort": "main"})
    job = Job.objects.get(kind="analysis.train_grid")
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    # No source chosen: None, the project default (newest reviewed, else newest automatic run per exam).
    assert job.params == {"project_id": project.pk, "cohort_name": "main", "seed": 1, "user_id": job.created_by_id,
                          "measurement_source": None}


def test_left_out_exams_are_named_by_patient_and_date(client, trained):
    project, (lr, _) = trained
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_detail", args=[project.pk, lr.pk])).content.decode()
    left_out = lr.data_snapshot["excluded"]
    assert left_out, "the fixture's exam with an exclusion flag is left out"
    from studies.models import Exam

    exam = Exam.objects.select_related("patient").get(pk=left_out[0]["exam_id"])
    assert f"{exam.patient.pseudonym}</a> {exam.exam_date:%Y-%m-%d}" in page
    assert left_out[0]["reason"] in page


def test_model_list_has_metric_columns_per_split(client, trained):
    # Issue 10: the list shows each version's headline metric per split, read from the stored evaluations.
    project, (lr, sgd) = trained
    login(client, project, "annotator")
    page = client.get(reverse("analysis:model_list", args=[project.pk])).content.decode()
    auc = [f"{lr.evaluations.get(split=s).metrics['macro_auc']:.3f}" for s in ("train", "validation", "test")]
    mae = [f"{sgd.evaluations.get(split=s).metrics['mae']:.2f}" for s in ("train", "validation", "test")]
    assert "<td>AUC</td>" + "".join(f'<td class="num">{x}</td>' for x in auc) in page
    assert "<td>MAE</td>" + "".join(f'<td class="num">{x}</td>' for x in mae) in page
