"""cohort_table --json on a registry: n per split and the tests agree with scipy on the same data."""

import json

import numpy as np
from django.core.management import call_command
from scipy import stats

from studies.demo import seed_demo_project


def test_cohort_table_of_demo_project_matches_scipy(db, capsys):
    project, _ = seed_demo_project(n_patients=702, random_state=3)
    call_command("cohort_table", "--project", project.name, "--json")
    table = json.loads(capsys.readouterr().out)
    assert table["n"] == {"train": 426, "validation": 106, "test": 170}
    from studies.models import CohortMember

    members = CohortMember.objects.filter(cohort__project=project).select_related("exam__patient", "exam__qct")
    by_split = {s: [m for m in members if m.split == s] for s in ("train", "validation", "test")}
    h, p = stats.kruskal(*[[m.exam.age_at_exam for m in ms] for ms in by_split.values()])
    assert np.isclose(table["age"]["h"], h) and np.isclose(table["age"]["p"], p)
    sex_counts = [[sum(m.exam.patient.sex == sex for m in ms) for ms in by_split.values()] for sex in "FM"]
    chi2, p_sex, _, _ = stats.chi2_contingency(sex_counts, correction=False)
    assert np.isclose(table["sex"]["chi2"], chi2) and np.isclose(table["sex"]["p"], p_sex)
    assert "chi2" in table["category"] and "p" in table["category"]
