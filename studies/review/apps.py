from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "studies.review"
    label = "review"
    verbose_name = "Case review"

    def ready(self):
        from studies.jobs import job_succeeded

        from . import audit  # noqa: F401  (registers the audited review models)
        from .resegment import on_job_succeeded

        job_succeeded.connect(on_job_succeeded, dispatch_uid="review.resegmentation")
