"""The demo project follows table 1 of the seed study: 426 / 106 / 170 patients with its sex and category
mix (counts from the seed's table 1; the categories here come from our thresholds applied to the BMD)."""

from django.core.management import call_command

from studies.models import CohortMember, Patient, Project, QCTResult
from studies.demo import DEMO_PROJECT


def test_seed_demo_creates_admin_and_cohort(db, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo admin: user 'admin', password" in out
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
