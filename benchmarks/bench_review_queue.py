"""Review queue of 10,000 exams: server time (median) of the queue page and its SQL queries.

Target (issue 11): median under 300 ms and a constant number of queries (page 1, a later page, the open
cases, a reader's own assignments, and the queue of a reader with none: every case is assigned to someone
else, so the filter "mine and unassigned" looks at each open case and finds nothing). Baseline in the same
process: the project overview page. (Open cases were once selected by ``status IN (pending, adjudication)``,
for which SQLite sorted every open case with its exam and patient on each page: 588 ms reported at page 100;
see ``ReviewCase.in_queue``.)

Runs on a throw-away test database: PostgreSQL when DATABASE_URL points to one (as in CI), else SQLite (the
embedded default). ``--backends both`` runs it on the configured PostgreSQL and then on SQLite (a second
process without DATABASE_URL); the exit status is non-zero if either misses the target.
    .venv/bin/python benchmarks/bench_review_queue.py [--exams 10000] [--repeats 15] [--backends both]
"""

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time

from django_bench import start_test_database, stop_test_database  # noqa: E402 (sets the environment first)

TARGET_S = 0.300


def populate(n_exams, readers, seed=0):
    import numpy as np

    from analysis.models import MeasurementRun
    from studies.models import Exam, Patient, Project
    from studies.review.models import Reading, ReadingKind, ReviewCase

    rng = np.random.default_rng(seed)
    project = Project.objects.create(name="Review benchmark")
    patients = Patient.objects.bulk_create([Patient(project=project, pseudonym=f"R{i:06d}", sex="F")
                                            for i in range(n_exams)])
    exams = Exam.objects.bulk_create([Exam(patient=p, exam_date=dt.date(2023, 1, 1), region="both")
                                      for p in patients])
    runs = MeasurementRun.objects.bulk_create([MeasurementRun(exam=e, labels="x.nii.gz") for e in exams])
    priorities = rng.integers(0, 1200, n_exams)
    cases = ReviewCase.objects.bulk_create([
        ReviewCase(project=project, exam=e, base_run=r, priority=int(p), priority_reasons=["benchmark"])
        for e, r, p in zip(exams, runs, priorities)])
    Reading.objects.bulk_create([Reading(case=c, kind=ReadingKind.SINGLE, reader=readers[i % len(readers)],
                                         level_map={"1": "T12"}) for i, c in enumerate(cases)])
    return project


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--exams", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--backends", choices=["configured", "both"], default="configured",
                        help="both: the configured PostgreSQL (DATABASE_URL), then SQLite in a second process")
    args = parser.parse_args()
    if args.backends == "both":
        if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
            sys.exit("--backends both needs DATABASE_URL pointing to PostgreSQL (SQLite runs without it)")
        child = [sys.executable, __file__, "--exams", str(args.exams), "--repeats", str(args.repeats)]
        codes = [subprocess.call(child), subprocess.call(child, env={k: v for k, v in os.environ.items()
                                                                     if k != "DATABASE_URL"})]
        sys.exit(1 if any(codes) else 0)

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from studies.models import Membership
    from tests.factories import UserFactory

    old_name = start_test_database()
    failed = False
    try:
        readers = [UserFactory() for _ in range(4)]
        start = time.perf_counter()
        project = populate(args.exams, readers)
        print(f"database: {connection.vendor}; populated {args.exams} review cases in "
              f"{time.perf_counter() - start:.1f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        coordinator = UserFactory()
        Membership.objects.create(project=project, user=coordinator, role="coordinator")
        for reader in readers:
            Membership.objects.create(project=project, user=reader, role="annotator")

        def timed(client, url):
            times, queries = [], None
            for _ in range(args.repeats):
                with CaptureQueriesContext(connection) as ctx:
                    t = time.perf_counter()
                    response = client.get(url)
                    times.append(time.perf_counter() - t)
                assert response.status_code == 200, (url, response.status_code)
                queries = len(ctx.captured_queries)
            return statistics.median(times), queries

        staff = Client()
        staff.force_login(coordinator)
        reader = Client()
        reader.force_login(readers[0])
        newcomer_user = UserFactory()
        Membership.objects.create(project=project, user=newcomer_user, role="annotator")
        newcomer = Client()
        newcomer.force_login(newcomer_user)
        base_s, base_q = timed(staff, f"/p/{project.pk}/?overview=1")
        print(f"baseline project overview: median {base_s * 1000:.1f} ms, {base_q} queries")
        queue = f"/p/{project.pk}/review/"
        rows = [("page 1, all open cases", staff, f"{queue}?mine=0"),
                ("page 100, all open cases", staff, f"{queue}?mine=0&page=100"),
                ("last page", staff, f"{queue}?mine=0&page=last"),
                ("a reader's own cases, page 1", reader, f"{queue}?mine=1"),
                ("a reader with none assigned", newcomer, f"{queue}?mine=1")]
        counts = set()
        for label, client, url in rows:
            median_s, queries = timed(client, url)
            if client is not newcomer:  # an empty page has no rows to load: fewer queries
                counts.add(queries)
            print(f"{label:30s} median {median_s * 1000:7.1f} ms  x{median_s / base_s:5.2f} of baseline  "
                  f"{queries} queries")
            failed |= median_s > TARGET_S
        print(f"query counts: {sorted(counts)} (target: one count for every page; the reader's view may differ "
              "by its role lookup only)")

        failed |= len(counts) > 2
    finally:
        stop_test_database(old_name)
    if failed:
        print(f"FAIL: over {TARGET_S * 1000:.0f} ms or query count not constant")
        sys.exit(1)


if __name__ == "__main__":
    main()
