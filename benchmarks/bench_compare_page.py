"""Comparing 45 model versions on one page: server time (median), from stored results only.

Target (issue 10): under 2 s for 45 versions (990 pairs: the paired bootstrap of the macro AUC and the paired
DeLong test of each pair read from the resample states stored at training). Baseline in the same process: the
model list page of the same project. Exits 1 when the target is missed.
    .venv/bin/python benchmarks/bench_compare_page.py [--repeats 5]
"""

import argparse
import sys
import time

import dashboard_setup

TARGET_S = 2.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    old = dashboard_setup.start_test_database()
    try:
        from django.urls import reverse

        start = time.perf_counter()
        project, versions, extra = dashboard_setup.trained_project(extra_classifier_seeds=(1, 2))
        classifiers = [v.pk for v in versions + extra if v.task == "classification"]
        print(f"set-up: {len(versions) + len(extra)} versions trained in {time.perf_counter() - start:.1f} s; "
              f"{len(classifiers)} classifiers compared")
        client = dashboard_setup.client_for(project)
        base_s, base_q, _ = dashboard_setup.timed_get(client, reverse("analysis:model_list", args=[project.pk]),
                                                      args.repeats)
        print(f"baseline model list: median {base_s * 1000:.0f} ms, {base_q} queries")
        url = reverse("analysis:model_compare", args=[project.pk])
        median_s, queries, response = dashboard_setup.timed_get(
            client, url, args.repeats, {"v": classifiers, "split": "validation"})
        page = response.content.decode()
        pairs = page.count("<tr><td><a href=") - len(classifiers)
        print(f"compare {len(classifiers)} versions ({pairs} pairs): median {median_s * 1000:.0f} ms "
              f"(x{median_s / base_s:.1f} of baseline), {queries} queries; target < {TARGET_S:.0f} s")
        ok = median_s < TARGET_S
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        dashboard_setup.stop_test_database(old)


if __name__ == "__main__":
    sys.exit(main())
