"""The demo project of the embedded default: a synthetic cohort that follows table 1 of the seed study."""

import secrets

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import Cohort, CohortMember, Exam, Membership, Patient, Project, QCTResult, Role

DEMO_PROJECT = "Demo cohort (synthetic)"


@transaction.atomic
def seed_demo_project(n_patients=702, random_state=0, name=DEMO_PROJECT):
    """Create the demo project with ``n_patients`` synthetic patients; returns (project, created)."""
    from analysis.modeling.synthetic import generate_cohort

    project, created = Project.objects.get_or_create(
        name=name, defaults={"description": "Synthetic patients generated to follow table 1 of the seed study. "
                                            "Not real data."}
    )
    if not created:
        return project, False
    cohort = generate_cohort(n_patients=n_patients, random_state=random_state)
    patients = Patient.objects.bulk_create(
        [Patient(project=project, pseudonym=c.patient_id, sex=c.sex) for c in cohort]
    )
    exams = Exam.objects.bulk_create([
        Exam(patient=p, exam_date=c.exam_date, age_at_exam=c.age, region=c.region) for p, c in zip(patients, cohort)
    ])
    thresholds = project.thresholds
    results = []
    for exam, c in zip(exams, cohort):
        result = QCTResult(exam=exam, bmd_l1=c.bmd_l1, bmd_l2=c.bmd_l2, bmd_l3=c.bmd_l3)
        result.derive(thresholds)
        results.append(result)
    QCTResult.objects.bulk_create(results)
    main = Cohort.objects.create(project=project, name=Cohort.DEFAULT_NAME,
                                 description="Temporal split (test after 2023-03-01) and random 80/20 train/validation.")
    CohortMember.objects.bulk_create(
        [CohortMember(cohort=main, exam=exam, split=c.split) for exam, c in zip(exams, cohort)]
    )
    return project, True


def ensure_demo_admin(username="admin"):
    """Create the demo superuser if missing; returns (user, password or None when it already existed)."""
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user, None
    password = secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username=username, email="", password=password)
    return user, password


def add_member(project, user, role=Role.ADMIN):
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})
