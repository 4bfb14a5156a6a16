"""`manage.py check --deploy` is clean with production-like variables; a missing SECRET_KEY is refused."""

import os
import subprocess
import sys

from tests.conftest import REPO


def run_manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false",
                        SECRET_KEY="x" * 20 + "a-long-random-production-secret-value-0123456789",
                        ALLOWED_HOSTS="bmd.example.org", SECURE_SSL_REDIRECT="true")
    assert result.returncode == 0, result.stderr + result.stdout


def test_missing_secret_key_is_refused_when_debug_is_off():
    result = run_manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
