"""PACS connections, stored series (assembled HU volumes) and the pseudonym map.

- :class:`PacsConnection` is site-wide configuration, managed by site admins. Its ``secret`` (password or
  bearer token) is stored in the database because the workers need it, but it never leaves the server:
  forms show an empty field ("leave blank to keep"), ``repr``/``str`` mask it and the audit log excludes it.
- :class:`StoredSeries` is one complete, assembled CT series of a project: its volume file (written to a
  temporary name and renamed, so a file under its final name is always complete) and the row (created in a
  transaction after the file is in place). One row per (project, SeriesInstanceUID): re-running a pull
  finds it and stores nothing twice.
- :class:`PseudonymMap` links a real PatientID (PHI) to the project pseudonym. It is the only place the
  real id is kept; pages that show it are for admins and log the access.
"""

from django.conf import settings
from django.db import models

from studies.models import Exam, Project


class PacsAuth(models.TextChoices):
    NONE = "none", "No authentication"
    BASIC = "basic", "HTTP basic (user name and password)"
    BEARER = "bearer", "Bearer token"


class PacsConnection(models.Model):
    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField("DICOMweb root URL", max_length=500,
                               help_text="e.g. https://pacs.example.org/dicom-web (QIDO, WADO and STOW below it)")
    auth = models.CharField(max_length=10, choices=PacsAuth.choices, default=PacsAuth.NONE)
    username = models.CharField(max_length=150, blank=True)
    # Password (basic) or token (bearer). Never rendered back, never logged, excluded from the audit log.
    secret = models.CharField(max_length=2000, blank=True)
    connect_timeout_s = models.FloatField(default=5.0)
    read_timeout_s = models.FloatField(default=60.0)
    max_retries = models.PositiveSmallIntegerField(
        default=3, help_text="Retries after a timeout, a 5xx or a 429 answer, with exponential backoff.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def __repr__(self):
        # The secret is deliberately absent: reprs end up in tracebacks and logs.
        return f"<PacsConnection {self.name!r} {self.base_url} auth={self.auth} secret={'***' if self.secret else ''}>"

    @property
    def has_secret(self):
        return bool(self.secret)


class StoredSeries(models.Model):
    """One complete CT series of a project, assembled into a HU volume and cached for the viewer and
    segmentation (``volume``: a ``.npz`` with ``array`` (z, y, x) HU and ``affine`` (4, 4) LPS)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="stored_series")
    exam = models.ForeignKey(Exam, on_delete=models.SET_NULL, null=True, blank=True, related_name="stored_series")
    series_uid = models.CharField("SeriesInstanceUID", max_length=64)
    study_uid = models.CharField("StudyInstanceUID", max_length=64, blank=True)
    modality = models.CharField(max_length=16, default="CT")
    n_slices = models.PositiveIntegerField()
    # [dz, dy, dx] in mm and [z, y, x] voxels, as Volume.spacing and Volume.shape.
    spacing = models.JSONField()
    shape = models.JSONField()
    dtype = models.CharField(max_length=10)
    # {"affine_lps": 4x4, "origin_lps": [x, y, z], "direction": 3x3}
    geometry = models.JSONField()
    # De-identified acquisition facts: kvp, contrast, manufacturer, model, slice_thickness, study_date,
    # patient_sex, patient_age, transfer_syntaxes, de-identification record, ...
    meta = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(default=list, blank=True)
    volume = models.FileField(max_length=300)
    source = models.CharField(max_length=300, blank=True, help_text="PACS connection, URL or local import")
    selection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "stored series"
        constraints = [
            models.UniqueConstraint(fields=["project", "series_uid"], name="one_stored_series_per_project_uid"),
        ]
        indexes = [models.Index(fields=["series_uid"])]

    def __str__(self):
        return f"{self.series_uid} ({self.n_slices} slices)"

    def load_volume(self):
        """The stored volume as :class:`analysis.imaging.volume.Volume` (LPS affine, HU array (z, y, x))."""
        from .ingest import load_stored_volume

        return load_stored_volume(self)

    def get_additional_data(self):
        return {"project_id": self.project_id, "patient_id": self.exam.patient_id if self.exam_id else None}


class PseudonymMap(models.Model):
    """Real PatientID (PHI) -> project pseudonym. Separate from the registry; admins only; audited."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pseudonym_map")
    real_patient_id = models.CharField(max_length=64)
    pseudonym = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["project", "pseudonym"]
        constraints = [
            models.UniqueConstraint(fields=["project", "real_patient_id"], name="one_pseudonym_per_real_id"),
            models.UniqueConstraint(fields=["project", "pseudonym"], name="one_real_id_per_pseudonym"),
        ]

    def __str__(self):
        # The real id stays out of str(): it would show in admin lists, log lines and error messages.
        return f"pseudonym {self.pseudonym} in {self.project}"

    def __repr__(self):
        return f"<PseudonymMap {self.pk} project={self.project_id} pseudonym={self.pseudonym!r}>"

    def get_additional_data(self):
        return {"project_id": self.project_id}


__all__ = ["PacsAuth", "PacsConnection", "PseudonymMap", "StoredSeries"]
