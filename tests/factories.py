import datetime as dt

import factory
from django.contrib.auth import get_user_model

from studies.models import Exam, Membership, Patient, Project, QCTResult, Role

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def saved(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.COORDINATOR


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    project = factory.SubFactory(ProjectFactory)
    pseudonym = factory.Sequence(lambda n: f"P{n:05d}")
    sex = "F"


class ExamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Exam

    patient = factory.SubFactory(PatientFactory)
    exam_date = dt.date(2022, 6, 1)
    age_at_exam = 65
    region = "chest"


class QCTResultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QCTResult

    exam = factory.SubFactory(ExamFactory)
    bmd_l1 = 100.0
