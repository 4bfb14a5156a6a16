from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "studies.review"
    label = "review"
    verbose_name = "Case review"

    def ready(self):
        from . import audit  # noqa: F401  (registers the audited review models)
