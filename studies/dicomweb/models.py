"""Personal API tokens: scripts send ``Authorization: Bearer <token>`` to the site's DICOMweb endpoint.

Only a SHA-256 hash of each token is stored. A token is 32 random bytes, so a plain hash is enough: there is
nothing to guess that a slow password hash would protect. The token itself is shown once, when created.
"""

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="what the token is for, e.g. a script's name")
    # The first characters of the token, shown on the user's page so a token can be recognised.
    prefix = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"token {self.prefix}... of {self.user} ({self.name or 'unnamed'})"

    @property
    def is_active(self):
        return self.revoked_at is None
