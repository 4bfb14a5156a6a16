"""The training grid as an RQ job, run by a real `manage.py rqworker` process on the test database."""

from analysis.modeling.demo import seed_demo_measurements
from analysis.models import ModelVersion
from studies import jobs
from studies.demo import seed_demo_project
from studies.models import Cohort, JobState


def test_train_grid_job_stores_versions_and_freezes_the_cohort(rq_worker, settings, tmp_path):
    project, _ = seed_demo_project(n_patients=90, random_state=2, name="job-demo")
    seed_demo_measurements(project, random_state=2)
    job = jobs.submit("analysis.train_grid", project=project, project_id=project.pk, feature_sets=["abdomen"],
                      n_resamples=20, seed=5)
    worker = rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)})
    worker.wait(timeout=180)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error or worker.output()
    versions = ModelVersion.objects.filter(project=project)
    assert sorted(job.result["model_versions"]) == sorted(versions.values_list("pk", flat=True))
    assert sorted(versions.values_list("task", "algorithm")) == [
        ("classification", "BDT"), ("classification", "LR"), ("classification", "RF"),
        ("regression", "BDT"), ("regression", "RF"), ("regression", "SGD")]
    assert all(v.random_seed == 5 and v.evaluations.count() == 3 for v in versions)
    assert (tmp_path / versions.first().artefact.name).is_file()  # the worker wrote the artefact
    assert Cohort.objects.get(project=project, name="main").frozen
