"""Creating, checking and revoking personal API tokens."""

import hashlib
import secrets

from django.utils import timezone

from .models import ApiToken

TOKEN_PREFIX = "bmd_"


def _hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(user, name=""):
    """A new token for ``user``; returns (row, token). The token is not stored and cannot be shown again."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(user=user, name=name[:100], prefix=token[:12], token_hash=_hash(token))
    return row, token


def user_for_token(token):
    """The active user owning ``token``, or None (unknown, revoked, or an inactive user)."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    row = ApiToken.objects.select_related("user").filter(token_hash=_hash(token), revoked_at=None).first()
    if row is None or not row.user.is_active:
        return None
    # One conditional update a minute at most: a busy script must not write on every frame it reads.
    now = timezone.now()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user


def revoke_token(user, token_id):
    """Revoke one of ``user``'s tokens; returns True when a token was revoked now."""
    row = ApiToken.objects.filter(user=user, pk=token_id, revoked_at=None).first()
    if row is None:
        return False
    row.revoked_at = timezone.now()
    row.save(update_fields=["revoked_at"])
    return True
