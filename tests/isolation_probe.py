"""Run only by tests/test_isolation.py (the name keeps it out of normal collection): reports where this run
keeps its var directory and SQLite test database."""

import json
import os
from pathlib import Path


def test_report_var_dir(db):
    from django.conf import settings
    from django.db import connection

    Path(os.environ["VAR_DIR_PROBE_OUT"]).write_text(json.dumps({
        "var_dir": str(settings.VAR_DIR), "env": os.environ["BMDSITE_VAR_DIR"],
        "test_db": connection.settings_dict["NAME"], "storage": str(settings.STORAGE_ROOT),
    }))
