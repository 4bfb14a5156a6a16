"""`manage.py train_models` prints the summary table and stops with one line on bad input."""

import pytest
from django.core.management import CommandError, call_command

from analysis.modeling.demo import seed_demo_measurements
from analysis.models import ModelVersion
from studies.demo import seed_demo_project


@pytest.fixture
def demo(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    project, _ = seed_demo_project(n_patients=90, random_state=1, name="cmd-demo")
    seed_demo_measurements(project, random_state=1)
    return project


def test_summary_table(demo, capsys):
    call_command("train_models", "--project", demo.name, "--feature-sets", "chest", "--n-resamples", "20",
                 "--seed", "3")
    out = capsys.readouterr().out
    versions = ModelVersion.objects.filter(project=demo)
    assert versions.count() == 6
    lr = versions.get(task="classification", algorithm="LR")
    m = lr.evaluations.get(split="validation").metrics
    # The printed line carries the stored validation macro AUC to 3 decimals.
    assert f"macro AUC {m['macro_auc']:.3f}" in out
    assert "6 model version(s)" in out and "cohort 'main' is now frozen" in out


@pytest.mark.parametrize("args,message", [
    (["--project", "nope"], "no project named 'nope'"),
    (["--project", "cmd-demo", "--feature-sets", "legs"], "unknown feature set(s) legs"),
    (["--project", "cmd-demo", "--cohort", "other"], "has no cohort 'other'"),
    (["--project", "cmd-demo", "--source", "TotalSegmentator"], "no measurement runs of source 'TotalSegmentator'"),
])
def test_bad_input(demo, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("train_models", *args)
