"""Registers the registry models with django-auditlog: every create, change and delete of patients, exams,
QCT values, exclusion flags, cohort splits and memberships is recorded with who, when, before and after.

``get_additional_data`` on each model stores the project and patient ids with the entry, so a patient's
history page finds the entries of its exams, QCT values and flags in one indexed query.
"""

from auditlog.registry import auditlog

from .models import CohortMember, Exam, ExclusionFlag, Membership, Patient, Project, QCTResult

auditlog.register(Project)
auditlog.register(Membership)
auditlog.register(Patient)
auditlog.register(Exam)
auditlog.register(QCTResult)
auditlog.register(ExclusionFlag)
auditlog.register(CohortMember)

# PACS (studies.pacs): the connection's secret never enters the audit log. Every change to the pseudonym map
# is recorded, without the real PatientID (PHI): the audit log is shown in the Django admin to every staff
# user, while the map itself is for project admins and logs each view (migration 0003 scrubs older entries).
from .pacs.models import PacsConnection, PseudonymMap, StoredSeries  # noqa: E402

auditlog.register(PacsConnection, exclude_fields=["secret"])
auditlog.register(StoredSeries, exclude_fields=["meta", "geometry"])
auditlog.register(PseudonymMap, exclude_fields=["real_patient_id"])
