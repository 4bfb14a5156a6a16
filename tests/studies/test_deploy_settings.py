"""`manage.py check --deploy` is clean with production-like variables; without SECRET_KEY commands still
work (a generated key in var/) but the deployment check fails."""

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
