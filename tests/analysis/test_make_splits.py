"""manage.py make_splits and the cohort splits page: the study's temporal test split and random 80/20
train/validation split (426 / 106 / 170 for the study's 702 patients), refused on a frozen cohort."""

import datetime as dt
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from studies.demo import seed_demo_project
from studies.models import Cohort, CohortMember

CUTOFF = "2023-03-01"  # seed study: development 2022-03 .. 2023-02, internal test 2023-03 .. 2023-06


@pytest.fixture
def demo(db):
    # 702 patients whose exam dates follow the study (analysis.modeling.synthetic: development exams
    # 2022-03-01 .. 2023-02-28, 532 of them; test exams 2023-03-01 .. 2023-06-30, 170).
    project, _ = seed_demo_project(n_patients=702, random_state=0, name="splits-demo")
    return project


def _counts(cohort):
    return Counter(CohortMember.objects.filter(cohort=cohort).values_list("split", flat=True))


def test_the_study_design_gives_426_106_170(demo, capsys):
    call_command("make_splits", "--project", demo.name, "--cohort", "study", "--test-from", CUTOFF)
    cohort = Cohort.objects.get(project=demo, name="study")
    # Seed study: 532 development patients -> round(0.8 * 532) = 426 train, 106 validation; 170 test.
    assert _counts(cohort) == {"train": 426, "validation": 106, "test": 170}
    assert "train 426, validation 106, test 170" in capsys.readouterr().out
    cutoff = dt.date.fromisoformat(CUTOFF)
    for split, date in CohortMember.objects.filter(cohort=cohort).values_list("split", "exam__exam_date"):
        assert (split == "test") == (date >= cutoff)


def test_seeded_random_by_default_and_stratified_on_request(demo):
    def splits(name, *extra):
        call_command("make_splits", "--project", demo.name, "--cohort", name, "--test-from", CUTOFF, *extra)
        return dict(CohortMember.objects.filter(cohort__project=demo, cohort__name=name)
                    .values_list("exam_id", "split"))

    a, b, other = splits("a", "--seed", "3"), splits("b", "--seed", "3"), splits("c", "--seed", "4")
    assert a == b and a != other
    stratified = splits("s", "--stratify", "--validation-share", "0.25")
    counts = Counter(stratified.values())
    # round(0.75 * 532) = 399 train, 133 validation.
    assert (counts["train"], counts["validation"], counts["test"]) == (399, 133, 170)
    # Stratified by category: each development category is split 75/25 to within one exam.
    from studies.models import Exam

    category = dict(Exam.objects.filter(patient__project=demo).values_list("pk", "qct__category"))
    for cat in ("osteoporosis", "osteopenia", "normal"):
        dev = [e for e, s in stratified.items() if s != "test" and category[e] == cat]
        in_val = sum(stratified[e] == "validation" for e in dev)
        assert abs(in_val - 0.25 * len(dev)) <= 1


def test_refused_on_a_frozen_cohort_and_bad_input(demo):
    main = Cohort.objects.get(project=demo, name="main")
    before = _counts(main)
    Cohort.objects.filter(pk=main.pk).update(frozen=True)
    with pytest.raises(CommandError, match="frozen"):
        call_command("make_splits", "--project", demo.name, "--cohort", "main", "--test-from", "2022-09-01")
    assert _counts(main) == before
    with pytest.raises(CommandError, match="not a date"):
        call_command("make_splits", "--project", demo.name, "--cohort", "x", "--test-from", "01/03/2023")
    with pytest.raises(CommandError, match="between 0 and 1"):
        call_command("make_splits", "--project", demo.name, "--cohort", "x", "--test-from", CUTOFF,
                     "--validation-share", "1.5")
    with pytest.raises(CommandError, match="no project"):
        call_command("make_splits", "--project", "nope", "--cohort", "x", "--test-from", CUTOFF)


def test_splits_page_makes_a_new_cohort_for_pis_only(client, demo):
    from tests.analysis.test_model_pages import login

    url = reverse("analysis:cohort_splits", args=[demo.pk])
    login(client, demo, "annotator")
    assert client.post(url, {"cohort": "paper", "test_from": CUTOFF, "validation_share": "0.2", "seed": "0"}
                       ).status_code in (403, 404)
    login(client, demo, "pi")
    page = client.get(url).content.decode()
    # The demo's main cohort is listed with its split counts (the generator's 426 / 106 / 170).
    assert '<td>main</td><td class="num">426</td><td class="num">106</td><td class="num">170</td>' in page
    response = client.post(url, {"cohort": "paper", "test_from": CUTOFF, "validation_share": "0.2", "seed": "0"})
    assert response.status_code == 302
    assert _counts(Cohort.objects.get(project=demo, name="paper")) == {"train": 426, "validation": 106, "test": 170}
    Cohort.objects.filter(project=demo, name="paper").update(frozen=True)
    refused = client.post(url, {"cohort": "paper", "test_from": CUTOFF, "validation_share": "0.2", "seed": "1"})
    assert refused.status_code == 400 and "frozen" in refused.content.decode()
