"""The segmenter pages: versions with their training, a training job started from the page with the data
chosen there, promotion to the project default (one at a time, audited), who may do what."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from analysis.models import SegmenterComparison, SegmenterVersion
from studies.models import Job
from tests.factories import MembershipFactory


@pytest.fixture
def version(project):
    return SegmenterVersion.objects.create(
        project=project, name="net-1", weights="segmenters/net-1.pt", weights_sha256="a" * 64,
        architecture={"name": "vbnet", "channels": [4, 8, 16]}, preprocessing={"spacing_mm": [4.0, 4.0, 4.0]},
        training_data={"train": [{"kind": "phantom"}, {"kind": "phantom"}, {"kind": "measurement_run", "id": 3}],
                       "held_out": [{"kind": "phantom"}], "epochs": 2, "device": "cpu"},
        training_log=[{"event": "start", "attempt": 0},
                      {"event": "epoch", "epoch": 1, "held_out_dice": {"L1": 0.5}, "mean_held_out_dice": 0.5},
                      {"event": "epoch", "epoch": 2, "held_out_dice": {"T12": 0.81, "L1": 0.875},
                       "mean_held_out_dice": 0.8425}],
        code_version="git:abc1234")


def _client(client, project, role):
    client.force_login(MembershipFactory(project=project, role=role).user)
    return client


def test_list_shows_architecture_training_data_last_epoch_dice_and_default(client, project, version):
    page = _client(client, project, "annotator").get(reverse("analysis:segmenter_list", args=[project.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "2 phantoms, 1 reviewed case; held out: 1 phantom" in text
    assert "T12 0.810 · L1 0.875" in text and "0.843" in text and "git:abc1234" in text and "vbnet 4-8-16" in text
    # Annotators see the versions; training and promotion are for PIs and admins.
    assert page.context["form"] is None and "Promote to default" not in text
    assert 'id="segmenter-anatomy"' in text and '<span class="badge">default</span>' in text


def test_training_from_the_page_submits_the_chosen_data(client, project, redis_url):
    page = _client(client, project, "pi").get(reverse("analysis:segmenter_list", args=[project.pk]))
    assert page.context["form"] is not None
    response = client.post(reverse("analysis:segmenter_train", args=[project.pk]), {
        "name": "net-from-page", "configuration": "cpu_trial", "epochs": 2, "seed": 7, "phantoms": 3,
        "osteoporotic": "on", "held_out_phantoms": 1})
    job = Job.objects.get(kind="analysis.train_segmenter")
    assert response.status_code == 302 and response.url == job.get_absolute_url()
    params = job.params
    assert (job.queue, params["name"], params["epochs"], params["seed"]) == ("gpu", "net-from-page", 2, 7)
    assert [s["seed"] for s in params["train_sources"]] == [7, 8, 9]
    assert [s.get("trabecular_scale", 1.0) for s in params["train_sources"]] == [1.0, 0.5, 1.0]
    assert params["held_out_sources"] == [{"kind": "phantom", "levels": ["T10", "T11", "T12", "L1", "L2"],
                                           "seed": 1007, "spacing": [3.0, 3.0, 3.0], "orientation": "RAS",
                                           "trabecular_scale": 0.5}]
    assert params["training"]["crop_size"] == [32, 32, 32]  # the CPU trial configuration
    # Nothing to train on, or a name in use: refused with the reason, no job.
    for data, reason in (({"name": "x", "phantoms": 0}, "choose at least one training case"),
                         ({"name": "net-from-page", "phantoms": 1}, "is queued or running")):
        page = client.post(reverse("analysis:segmenter_train", args=[project.pk]),
                           {"configuration": "default", "epochs": 1, "seed": 0, "held_out_phantoms": 0, **data})
        assert page.status_code == 400 and reason in page.content.decode()
    assert Job.objects.count() == 1


def test_promotion_keeps_one_default_and_is_audited(client, project, version):
    other = SegmenterVersion.objects.create(project=project, name="net-2", weights="x.pt", weights_sha256="b" * 64)
    _client(client, project, "admin")
    url = reverse("analysis:segmenter_promote", args=[project.pk])
    client.post(url, {"version": "net-1"})
    client.post(url, {"version": "net-2"})
    version.refresh_from_db()
    other.refresh_from_db()
    assert (version.promoted, other.promoted) == (False, True)
    client.post(url, {"version": "anatomy"})
    assert not SegmenterVersion.objects.filter(promoted=True).exists()
    updates = LogEntry.objects.get_for_object(other).filter(action=LogEntry.Action.UPDATE).order_by("timestamp")
    changes = [e.changes_dict["promoted"] for e in updates]
    assert changes == [["False", "True"], ["True", "False"]]
    assert updates.filter(actor__isnull=False).count() == 2


@pytest.mark.parametrize("role", ["annotator", "coordinator"])
def test_only_pis_and_admins_train_promote_and_compare(client, project, version, role):
    _client(client, project, role)
    assert client.post(reverse("analysis:segmenter_promote", args=[project.pk]), {"version": "net-1"}).status_code == 403
    assert client.post(reverse("analysis:segmenter_train", args=[project.pk]), {"name": "n"}).status_code == 403
    assert client.post(reverse("analysis:segmenter_compare", args=[project.pk]),
                       {"a": "anatomy", "b": "net-1"}).status_code == 403
    assert not SegmenterVersion.objects.filter(promoted=True).exists() and not Job.objects.exists()


def test_comparison_needs_reviewed_cases_and_two_segmenters(client, project, version):
    _client(client, project, "pi")
    url = reverse("analysis:segmenter_compare", args=[project.pk])
    assert "no reviewed cases" in client.post(url, {"a": "anatomy", "b": "net-1"}).content.decode()
    assert "two different segmenters" in client.post(url, {"a": "net-1", "b": "net-1"}).content.decode()
    assert not SegmenterComparison.objects.exists()


def test_stored_comparison_is_shown_with_its_numbers(client, project):
    results = {"n_cases": 3, "levels": [{"level": "L1", "n": 3, "dice_a": 0.91234, "dice_b": 0.5}],
               "mean_dice_a": 0.91234, "mean_dice_b": 0.5,
               "agreement": {"a": {"agree": 3, "n": 3, "share": 1.0}, "b": {"agree": 0, "n": 3, "share": 0.0}},
               "hu": {"n": 3, "test": "Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided)", "mean_difference": 2.5,
                      "sd": 1.0, "loa_low": 0.54, "loa_high": 4.46, "statistic": 0.0, "p_value": 0.25},
               "cases": []}
    comparison = SegmenterComparison.objects.create(project=project, segmenter_a="anatomy", segmenter_b="net",
                                                    results=results, n_cases=3)
    text = _client(client, project, "annotator").get(
        reverse("analysis:segmenter_comparison", args=[project.pk, comparison.pk])).content.decode()
    assert "<strong>3</strong> reviewed cases" in text and "0.912" in text and "0.54 to 4.46 HU" in text
    assert "p = 0.2500" in text and "Wilcoxon signed-rank" in text


def test_a_version_trained_from_the_page_on_a_reviewed_case(client, rq_worker, redis_url, settings, tmp_path):
    """The page's training job, run by a real worker on the gpu queue (CPU here), trains on a case accepted in
    review (its stored series and reviewed body labels) and a phantom, and the new version is listed."""
    pytest.importorskip("torch")
    from studies.review import actions
    from studies.review.models import ReviewCase
    from tests.factories import ExamFactory
    from tests.studies.review.conftest import make_measured_exam

    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project = ExamFactory().patient.project
    exam, run, _ = make_measured_exam(ExamFactory(patient__project=project))
    actions.open_cases(project)
    reader = MembershipFactory(project=project, role="annotator").user
    reading = actions.working_reading(ReviewCase.objects.get(exam=exam), reader, "annotator")
    actions.decide(reading, reading.version, reader, "accept")
    _client(client, project, "admin")
    response = client.post(reverse("analysis:segmenter_train", args=[project.pk]), {
        "name": "net-reviewed", "configuration": "cpu_trial", "epochs": 1, "seed": 0, "phantoms": 1,
        "held_out_phantoms": 1, f"run_{run.pk}": "train"})
    assert response.status_code == 302
    worker = rq_worker("gpu", burst=True, extra_env={"STORAGE_ROOT": str(tmp_path), "BMDSITE_TORCH_THREADS": "1"})
    worker.wait(timeout=900)
    job = Job.objects.get(kind="analysis.train_segmenter")
    assert job.state == "succeeded", job.error or worker.output()
    version = SegmenterVersion.objects.get(name="net-reviewed")
    assert version.training_data["train"][-1] == {"kind": "measurement_run", "id": run.pk}
    assert set(version.metrics["dice_per_level"]) == {"T10", "T11", "T12", "L1", "L2"}  # the held-out phantom
    text = client.get(reverse("analysis:segmenter_list", args=[project.pk])).content.decode()
    assert "1 phantom, 1 reviewed case; held out: 1 phantom" in text and 'id="promote-net-reviewed"' in text


@pytest.fixture
def exam_with_series(project, settings, tmp_path):
    """An exam with a stored (small, uniform) CT series: enough for the HU page to offer a measurement."""
    import numpy as np

    from analysis.imaging.volume import Volume
    from studies.pacs.ingest import store_volume
    from tests.factories import ExamFactory

    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    exam = ExamFactory(patient__project=project)
    volume = Volume(np.zeros((4, 8, 8), dtype=np.int16), np.diag([1.0, 1.0, 2.0, 1.0]),
                    series_uid="1.2.826.0.1.3680043.8.498.77")
    store_volume(project, volume, exam=exam, source="test")
    return exam


def test_hu_page_measures_with_the_chosen_segmenter(client, project, version, exam_with_series):
    """The HU page's "Segment and measure" offers the project's segmenters like the review's re-segmentation:
    the choice reaches the job, the default is the promoted version (else rule-based), and a name the
    project does not have is a form error."""
    from analysis.models import SegmenterVersion
    from studies.models import Project

    url = reverse("analysis:exam_measurements", args=[project.pk, exam_with_series.pk])
    coordinator = _client(client, project, "coordinator")
    page = coordinator.get(url).content.decode()
    assert 'id="measure-segmenter"' in page and "net-1" in page
    # The rule-based segmenter is the default here: offered once, as the default.
    assert "project default (rule-based, anatomy rules)" in page
    assert 'value="anatomy"' not in page and page.count("rule-based") == 1

    answer = coordinator.post(url, {"segmenter": "net-1"})
    job = Job.objects.get()
    assert answer.status_code == 302 and answer["Location"] == job.get_absolute_url()
    assert job.kind == "analysis.measure_exam" and job.params["exam_id"] == exam_with_series.pk
    assert job.params["segmenter"] == "net-1" and job.params["device"] == "cuda" and job.queue == "gpu"

    Job.objects.all().delete()
    assert coordinator.post(url).status_code == 302  # no choice sent (an older form): the default
    assert Job.objects.get().params["segmenter"] == "anatomy" and Job.objects.get().queue == "default"
    Job.objects.all().delete()
    version.promoted = True
    version.save()
    assert coordinator.post(url, {"segmenter": ""}).status_code == 302
    assert Job.objects.get().params["segmenter"] == "net-1"  # the promoted version, resolved when started
    Job.objects.all().delete()

    # Another project's version and a made-up name: refused on the page, no job.
    foreign = SegmenterVersion.objects.create(project=Project.objects.create(name="Other study"), name="net-foreign",
                                              weights="z.pt", weights_sha256="c" * 64)
    for name in (foreign.name, "no-such-net"):
        answer = coordinator.post(url, {"segmenter": name})
        assert answer.status_code == 400
        assert f"no segmenter named &#x27;{name}&#x27; in this project" in answer.content.decode()
    assert not Job.objects.exists()
    # The role check stays: an annotator sees no choice and may not start a measurement.
    annotator = _client(client, project, "annotator")
    assert 'id="measure-segmenter"' not in annotator.get(url).content.decode()
    assert annotator.post(url, {"segmenter": "net-1"}).status_code == 403 and not Job.objects.exists()
