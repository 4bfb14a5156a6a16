"""A trained demo project for the dashboard benchmarks, on a throw-away test database.

The 702-patient demo cohort with its synthetic HU, the full grid at seed 0 (chest, abdomen and the three
calibrated chest variants, 6 algorithms each: 30 versions) and, for the comparison benchmark, the classifiers
of two more seeds, all with 2000-resample CIs stored as training stores them.
"""

# Sets the environment before Django loads; the benchmarks call these two through this module.
from django_bench import start_test_database, stop_test_database  # noqa: F401


def trained_project(extra_classifier_seeds=(), n_resamples=2000):
    """The demo project trained as described above; returns (project, versions of seed 0, extra versions)."""
    import tempfile

    from django.conf import settings

    from analysis.modeling.demo import seed_demo_measurements
    from analysis.modeling.versions import train_cohort
    from studies.demo import seed_demo_project

    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tempfile.mkdtemp(prefix="bmdsite-bench-")}}}
    project, _ = seed_demo_project(n_patients=702, random_state=0, name="Benchmark demo")
    seed_demo_measurements(project, random_state=0)
    versions, _ = train_cohort(project, random_state=0, n_resamples=n_resamples)
    extra = []
    for seed in extra_classifier_seeds:
        more, _ = train_cohort(project, random_state=seed, n_resamples=n_resamples, tasks=("classification",))
        extra += more
    return project, versions, extra


def client_for(project):
    from django.test import Client

    from studies.models import Membership
    from tests.factories import UserFactory

    user = UserFactory()
    Membership.objects.create(project=project, user=user, role="pi")
    client = Client()
    client.force_login(user)
    return client


def timed_get(client, url, repeats, params=None):
    """Median server time of a GET (the test client: no network, the whole Django stack) and query count."""
    import statistics
    import time

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], None
    for _ in range(repeats):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url, params or {})
            times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries, response
