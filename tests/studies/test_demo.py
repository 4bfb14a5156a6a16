"""The demo project follows table 1 of the seed study: 426 / 106 / 170 patients with its sex and category
mix (counts from the seed's table 1; the categories here come from our thresholds applied to the BMD)."""

from django.core.management import call_command

from studies.models import CohortMember, Patient, Project, QCTResult
from studies.demo import DEMO_PROJECT, seed_demo_project


def test_seed_demo_creates_admin_and_cohort(db, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo admin: user 'admin', password" in out
    assert "synthetic CT series stored for DEMO-" in out
    assert (tmp_path / "demo-admin.txt").read_text().startswith("user: admin")
    project = Project.objects.get(name=DEMO_PROJECT)
    assert Patient.objects.filter(project=project).count() == 702
    splits = CohortMember.objects.filter(cohort__project=project)
    assert {s: splits.filter(split=s).count() for s in ("train", "validation", "test")} == {
        "train": 426, "validation": 106, "test": 170}
    females_train = splits.filter(split="train", exam__patient__sex="F").count() / 426
    assert abs(females_train - 0.624) < 0.03
    osteoporosis = QCTResult.objects.filter(exam__patient__project=project, category="osteoporosis").count() / 702
    assert abs(osteoporosis - 249 / 702) < 0.04  # table 1: 155 + 38 + 56 = 249 osteoporosis
    # Idempotent: a second run adds nothing and keeps the admin's password.
    call_command("seed_demo")
    assert Patient.objects.filter(project=project).count() == 702
    assert "exists; its password is in" in capsys.readouterr().out


def test_demo_images_are_measured_by_the_pipeline(db, settings, tmp_path):
    """The demo's synthetic CT goes through the real pipeline; the phantom's trabecular HU is the synthetic
    patient's hu_by_level, so the measured mean HU must come back within a few HU of it (noise SD 20 HU
    over thousands of ROI voxels; the segmenter's known bias on phantoms is below 10 HU)."""
    from analysis.modeling.synthetic import generate_cohort
    from analysis.pipeline import measure_exam
    from studies.demo import seed_demo_images
    from studies.models import Exam

    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=40, random_state=2)
    created = seed_demo_images(project, n_series=1, random_state=2, n_patients=40)
    assert len(created) == 1 and seed_demo_images(project, n_series=1, random_state=2, n_patients=40) == []
    truth = next(c for c in generate_cohort(n_patients=40, random_state=2) if c.patient_id == created[0])
    run = measure_exam(Exam.objects.get(patient__project=project, patient__pseudonym=created[0]))
    measured = {m.level: m.mean_hu for m in run.levels.all()}
    common = [level for level in truth.hu_by_level if level in measured and level[0] in "TL"]
    assert len(common) >= 5
    for level in common:
        assert abs(measured[level] - truth.hu_by_level[level]) < 10, (level, measured[level], truth.hu_by_level[level])
