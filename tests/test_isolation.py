"""Concurrent test runs must not share a var directory: a shared SQLite test database gave "disk I/O error".
Each run makes its own unless BMDSITE_VAR_DIR is set (tests/conftest.py)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO


def probe(tmp_path, name, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("BMDSITE_VAR_DIR", "DATABASE_URL")}
    out = tmp_path / f"{name}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/isolation_probe.py"], cwd=REPO,
        env={**base, **env, "VAR_DIR_PROBE_OUT": str(out)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    return proc, out


def test_concurrent_runs_get_their_own_var_dir_unless_one_is_set(tmp_path):
    explicit = tmp_path / "explicit-var"
    runs = [probe(tmp_path, "a"), probe(tmp_path, "b"), probe(tmp_path, "c", BMDSITE_VAR_DIR=str(explicit))]
    for proc, _ in runs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
    a, b, c = (json.loads(out.read_text()) for _, out in runs)
    assert a["var_dir"] != b["var_dir"]
    for report in (a, b):
        var = Path(report["var_dir"])
        assert var.parent == Path(tempfile.gettempdir()) and var.name.startswith("bmdsite-test-var-")
        assert report["env"] == report["var_dir"]  # worker processes inherit it
        assert report["test_db"] == str(var / "test.sqlite3") and report["storage"] == str(var / "storage")
        assert not var.exists()  # removed when the run ended
    assert c["var_dir"] == str(explicit) and c["test_db"] == str(explicit / "test.sqlite3")
    assert explicit.is_dir()  # an explicit directory is the user's: kept
