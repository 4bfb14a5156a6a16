"""Site-wide helpers for settings and the deployment checks that go with them."""

import os
import secrets

from django.core.checks import Tags, Warning, register


def generated_secret_key(path):
    """A random secret key created once in ``path`` (mode 0600) and read back on later starts."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # O_EXCL: when two processes start at once, one writes and the other reads what it wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


@register(Tags.security, deploy=True)
def check_secret_key_set(app_configs, **kwargs):
    from django.conf import settings

    if getattr(settings, "SECRET_KEY_GENERATED", False):
        return [Warning("SECRET_KEY is not set: the site uses a key generated in var/secret_key.",
                        hint="Set the SECRET_KEY environment variable in production.", id="bmdsite.W001")]
    return []
