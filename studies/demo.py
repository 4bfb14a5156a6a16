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


def seed_demo_images(project, n_series=2, random_state=0, n_patients=702):
    """Store synthetic CT volumes (spine phantoms) for the first ``n_series`` chest-and-abdomen demo exams,
    so the image pipeline (segment, label, measure) can be tried without any real CT. Each phantom's
    trabecular HU per level is that synthetic patient's own ``hu_by_level``. Idempotent; returns the patient
    ids whose series were created."""
    import dataclasses

    from analysis.imaging.dicom import content_uid
    from analysis.imaging.phantom import make_spine_phantom
    from analysis.modeling.synthetic import generate_cohort

    from .pacs.ingest import store_volume

    cohort = [c for c in generate_cohort(n_patients=n_patients, random_state=random_state) if c.region == "both"]
    exams = {e.patient.pseudonym: e for e in Exam.objects.filter(patient__project=project).select_related("patient")}
    created = []
    for index, synthetic in enumerate(cohort[:n_series]):
        exam = exams.get(synthetic.patient_id)
        if exam is None or exam.stored_series.exists():
            continue
        phantom = make_spine_phantom(spacing=(2.5, 1.0, 1.0), trabecular_hu=dict(synthetic.hu_by_level),
                                     noise_sd=20.0, random_state=random_state + index)
        volume = dataclasses.replace(phantom.volume, series_uid=content_uid("bmdsite-demo", synthetic.patient_id))
        _, was_created = store_volume(project, volume, exam=exam, source="synthetic phantom (demo)",
                                      selection_reason="synthetic demo series",
                                      meta={"synthetic": True, "contrast": False})
        if was_created:
            created.append(synthetic.patient_id)
    return created
