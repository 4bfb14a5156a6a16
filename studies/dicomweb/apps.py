from django.apps import AppConfig


class DicomwebConfig(AppConfig):
    name = "studies.dicomweb"
    label = "dicomweb"
    verbose_name = "DICOMweb endpoint and API tokens"

    def ready(self):
        from auditlog.registry import auditlog

        from .models import ApiToken

        # Who created or revoked a token is recorded; the hash never enters the log.
        auditlog.register(ApiToken, exclude_fields=["token_hash"])
