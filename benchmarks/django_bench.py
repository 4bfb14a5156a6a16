"""Django for the benchmarks: the environment they run under (importing this module sets it, before Django
loads) and a throw-away test database (PostgreSQL when DATABASE_URL points to one, else SQLite)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bmdsite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-0123456789-abcdefghijklmnop")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("STATIC_MANIFEST", "false")
os.environ.setdefault("BMDSITE_VAR_DIR", "/tmp/bmdsite-bench-var")


def start_test_database():
    """Set Django up on a new test database; returns the old database name for :func:`stop_test_database`."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    return connection.creation.create_test_db(verbosity=0, autoclobber=True)


def stop_test_database(old_name):
    from django.db import connection

    connection.creation.destroy_test_db(old_name, verbosity=0)
