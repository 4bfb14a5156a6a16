"""The study report page for 18 model versions: server time (median), with 2000-resample CIs already stored.

Target (issue 12): under 1 s. The 18 versions are the paper's grid (T5-T10, T12-L2 and T5-T10-Cal with the
default abdomen transfer; 3 classifiers and 3 regressors each); the report of the whole 30-version grid (all
three calibration variants) is timed too. Baseline in the same process: the model list page. Exits 1 when
the target is missed.
    .venv/bin/python benchmarks/bench_report_page.py [--repeats 7]
"""

import argparse
import sys
import time

import dashboard_setup

TARGET_S = 1.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    old = dashboard_setup.start_test_database()
    try:
        from django.urls import reverse

        start = time.perf_counter()
        project, versions, _ = dashboard_setup.trained_project()
        print(f"set-up: {len(versions)} versions trained in {time.perf_counter() - start:.1f} s")
        paper = [v.pk for v in versions if v.calibration_variant in ("", "abdomen_transfer")]
        assert len(paper) == 18, len(paper)
        client = dashboard_setup.client_for(project)
        base_s, base_q, _ = dashboard_setup.timed_get(client, reverse("analysis:model_list", args=[project.pk]),
                                                      args.repeats)
        print(f"baseline model list: median {base_s * 1000:.0f} ms, {base_q} queries")
        url = reverse("analysis:study_report", args=[project.pk])
        median_s, queries, _ = dashboard_setup.timed_get(client, url, args.repeats, {"v": paper})
        print(f"report, 18 versions: median {median_s * 1000:.0f} ms (x{median_s / base_s:.1f} of baseline), "
              f"{queries} queries; target < {TARGET_S:.0f} s")
        all_s, all_q, _ = dashboard_setup.timed_get(client, url, args.repeats)
        print(f"report, all {len(versions)} versions of the grid: median {all_s * 1000:.0f} ms, {all_q} queries")
        ok = median_s < TARGET_S
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        dashboard_setup.stop_test_database(old)


if __name__ == "__main__":
    sys.exit(main())
