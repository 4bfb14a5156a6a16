"""One 512 x 512 frame over WADO-RS from the site's DICOMweb endpoint, authenticated with an API token.

Target (issue 11): median under 50 ms per frame. Baseline in the same process: the QIDO-RS series search of
the same project (a few queries, no pixels). Also printed: the first frame of the series (reads and decodes
the stored volume once; later frames come from the per-process series cache) and the series metadata.

Runs on a throw-away test database (PostgreSQL when DATABASE_URL points to one, else SQLite) and a
temporary storage folder.
    .venv/bin/python benchmarks/bench_dicomweb_frame.py [--slices 300] [--repeats 30]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from django_bench import start_test_database, stop_test_database  # noqa: E402 (sets the environment first)
os.environ.setdefault("STORAGE_ROOT", tempfile.mkdtemp(prefix="bmdsite-bench-storage-"))

TARGET_S = 0.050


def timed(client, url, repeats, headers):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), len(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    import numpy as np
    from django.db import connection
    from django.test import Client

    from analysis.imaging.volume import Volume
    from studies.dicomweb.instances import sop_uid_of
    from studies.dicomweb.tokens import create_token
    from studies.models import Membership
    from studies.pacs.ingest import store_volume
    from tests.factories import ExamFactory, UserFactory

    old_name = start_test_database()
    try:
        exam = ExamFactory()
        project = exam.patient.project
        rng = np.random.default_rng(0)
        array = rng.integers(-1024, 2000, size=(args.slices, 512, 512), dtype=np.int16)
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
        stored, _ = store_volume(project, Volume(array=array, affine=affine, series_uid="1.2.3.300",
                                                 meta={"study_uid": "1.2.3"}), exam=exam, source="benchmark")
        user = UserFactory()
        Membership.objects.create(project=project, user=user, role="annotator")
        _, token = create_token(user, "benchmark")
        headers = {"Authorization": f"Bearer {token}"}
        client = Client()
        root = f"/p/{project.pk}/dicom-web"
        series = f"{root}/studies/1.2.3/series/1.2.3.300"

        def frame(k):
            return f"{series}/instances/{sop_uid_of('1.2.3.300', k)}/frames/1"

        base_s, _ = timed(client, f"{root}/series", args.repeats, headers)
        print(f"database: {connection.vendor}; series {args.slices} x 512 x 512 int16")
        print(f"baseline QIDO-RS series search: median {base_s * 1000:.1f} ms")
        cold_s, _ = timed(client, frame(0), 1, headers)
        print(f"first frame (reads and decodes the stored volume): {cold_s * 1000:.0f} ms")
        times = []
        for k in range(args.repeats):
            start = time.perf_counter()
            response = client.get(frame((k * 37) % args.slices), headers=headers)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200 and len(response.content) > 512 * 512 * 2
        frame_s = statistics.median(times)
        print(f"one 512 x 512 frame (WADO-RS, token): median {frame_s * 1000:.1f} ms  "
              f"x{frame_s / base_s:.2f} of baseline  (target {TARGET_S * 1000:.0f} ms)")
        meta_s, size = timed(client, f"{series}/metadata", 3, headers)
        print(f"series metadata ({args.slices} instances, {size / 1e6:.1f} MB JSON): median {meta_s * 1000:.0f} ms")
    finally:
        stop_test_database(old_name)
    if frame_s > TARGET_S:
        print("FAIL: frame over target")
        sys.exit(1)


if __name__ == "__main__":
    main()
