"""`manage.py check --deploy` is clean with production-like variables; without SECRET_KEY commands still
work (a generated key in var/) but the deployment check fails."""

import os
import subprocess
import sys

from tests.conftest import REPO


def run_manage(*args, **env):
    # Production defaults: none of the test-only values that pytest-env puts in the environment.
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "PACS_ALLOW_LOOPBACK")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


PRODUCTION = dict(DEBUG="false", SECRET_KEY="x" * 20 + "a-long-random-production-secret-value-0123456789",
                  ALLOWED_HOSTS="bmd.example.org", SECURE_SSL_REDIRECT="true")


def test_check_deploy_passes_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout


def test_production_limits_and_headers():
    """What production gets without setting anything more: loopback PACS refused, the upload and zip limits
    and the security headers of README's Security section."""
    code = ("from django.conf import settings as s; from bmdsite.middleware import content_security_policy as c; "
            "print(s.PACS_ALLOW_LOOPBACK, s.MAX_UPLOAD_BYTES, s.DATA_UPLOAD_MAX_MEMORY_SIZE, "
            "s.IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES, s.IMPORT_ZIP_MAX_RATIO, s.SECURE_REFERRER_POLICY, "
            "'bmdsite.middleware.SecurityHeadersMiddleware' in s.MIDDLEWARE); "
            "print(c(s.CONTENT_SECURITY_POLICY))")
    result = run_manage("shell", "-c", code, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    limits, policy = result.stdout.strip().splitlines()[-2:]
    assert limits == f"False {2 * 1024 ** 3} {5 * 1024 ** 2} {4 * 1024 ** 3} 100 same-origin True"
    assert "script-src 'self';" in policy and "worker-src 'self';" in policy and "wasm" not in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy


def test_missing_secret_key_fails_the_deployment_check(tmp_path):
    var = tmp_path / "var"
    result = run_manage("check", DEBUG="false", BMDSITE_VAR_DIR=str(var))
    assert result.returncode == 0, result.stderr
    key_file = var / "secret_key"
    assert len(key_file.read_text()) >= 50 and key_file.stat().st_mode & 0o777 == 0o600
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false", BMDSITE_VAR_DIR=str(var),
                        ALLOWED_HOSTS="bmd.example.org")
    assert result.returncode != 0
    assert "bmdsite.W001" in result.stderr + result.stdout


def test_a_forbidden_request_is_logged_once_in_debug_and_in_production():
    # Django's "django" logger printed with its own console handler (DEBUG) and again through the root's.
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('django.request').warning('Forbidden (Permission denied): /p/1/')")
    for env in (dict(DEBUG="true"), PRODUCTION):
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                                env={**{k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")},
                                     "DJANGO_SETTINGS_MODULE": "bmdsite.settings", **env})
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("Forbidden (Permission denied): /p/1/") == 1, (env, result.stderr)
