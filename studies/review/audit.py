"""Every review action is audited (django-auditlog): settings, cases, readings and comments."""

from auditlog.registry import auditlog

from .models import Reading, ResegmentationRequest, ReviewCase, ReviewComment, ReviewSettings

auditlog.register(ReviewSettings)
auditlog.register(ReviewCase)
auditlog.register(Reading)
auditlog.register(ReviewComment)
auditlog.register(ResegmentationRequest)
