"""Patient list page with 100,000 patients: server time (median) and SQL queries per page size.

Target (issue "Foundation"): median under 300 ms and the same number of queries whatever the page size.
Baseline in the same process: the project overview page (a few aggregate queries, a small template).

Runs on a throw-away test database: PostgreSQL when DATABASE_URL points to one (as in CI), else SQLite.
    .venv/bin/python benchmarks/bench_patient_list.py [--patients 100000] [--repeats 15]
"""

import argparse
import datetime as dt
import statistics
import sys
import time

from django_bench import start_test_database, stop_test_database  # noqa: E402 (sets the environment first)

TARGET_S = 0.300  # median server time of every listed page (issue "Foundation")


def populate(n_patients, seed=0):
    import numpy as np

    from studies.models import Cohort, CohortMember, Exam, Patient, Project, QCTResult

    rng = np.random.default_rng(seed)
    project = Project.objects.create(name="Benchmark")
    batch = 10_000
    cohort = Cohort.objects.create(project=project, name=Cohort.DEFAULT_NAME)
    thresholds = project.thresholds
    for start in range(0, n_patients, batch):
        size = min(batch, n_patients - start)
        patients = Patient.objects.bulk_create(
            [Patient(project=project, pseudonym=f"B{start + i:07d}", sex="FM"[int(rng.integers(2))])
             for i in range(size)]
        )
        days = rng.integers(0, 480, size)
        exams = Exam.objects.bulk_create(
            [Exam(patient=p, exam_date=dt.date(2022, 3, 1) + dt.timedelta(days=int(d)), age_at_exam=60,
                  region=("chest", "abdomen", "both")[int(rng.integers(3))]) for p, d in zip(patients, days)]
        )
        results = []
        for exam, bmd in zip(exams, rng.normal(100, 30, size).clip(20, 250)):
            result = QCTResult(exam=exam, bmd_l1=float(bmd))
            result.derive(thresholds)
            results.append(result)
        QCTResult.objects.bulk_create(results)
        CohortMember.objects.bulk_create(
            [CohortMember(cohort=cohort, exam=e, split=("train", "validation", "test")[int(rng.integers(3))])
             for e in exams]
        )
    return project


def timed_get(client, url, repeats):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], None
    for _ in range(repeats):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.status_code
        queries = len(ctx.captured_queries)
    return statistics.median(times), queries


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from studies.models import Membership
    from tests.factories import UserFactory

    old_name = start_test_database()
    try:
        start = time.perf_counter()
        project = populate(args.patients)
        print(f"database: {connection.vendor}; populated {args.patients} patients in "
              f"{time.perf_counter() - start:.1f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        user = UserFactory()
        Membership.objects.create(project=project, user=user, role="coordinator")
        client = Client()
        client.force_login(user)
        list_url = reverse("studies:patient_list", args=[project.pk])
        base_s, base_q = timed_get(client, reverse("studies:project_detail", args=[project.pk]), args.repeats)
        print(f"baseline project overview: median {base_s * 1000:.1f} ms, {base_q} queries")
        rows = [
            ("page 1, 25 per page", f"{list_url}?per_page=25"),
            ("page 1, 50 per page", f"{list_url}?per_page=50"),
            ("page 1, 200 per page", f"{list_url}?per_page=200"),
            ("last page, 50 per page", f"{list_url}?per_page=50&page=last"),
            ("filter osteoporosis+test", f"{list_url}?category=osteoporosis&split=test&per_page=50"),
            ("search 'B00123'", f"{list_url}?q=B00123&per_page=50"),
        ]
        misses, query_counts = [], set()
        for label, url in rows:
            median_s, queries = timed_get(client, url, args.repeats)
            print(f"{label:28s} median {median_s * 1000:7.1f} ms  x{median_s / base_s:5.2f} of baseline  "
                  f"{queries} queries")
            if median_s >= TARGET_S:
                misses.append(f"{label}: median {median_s * 1000:.0f} ms >= {TARGET_S * 1000:.0f} ms")
            if "per page" in label:
                query_counts.add(queries)
        if len(query_counts) > 1:
            misses.append(f"queries differ with the page size: {sorted(query_counts)}")
    finally:
        stop_test_database(old_name)
    print("PASS" if not misses else "FAIL: " + "; ".join(misses))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
