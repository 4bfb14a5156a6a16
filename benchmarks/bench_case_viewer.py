"""The case page: server time (median) and a 300-slice 512 x 512 series loaded into the Cornerstone3D viewer
from loopback in headless Chromium (WebGL on SwiftShader), as measured by the page itself
(``window.bmdViewer.loadSeconds``: from the viewer module's start to the whole volume drawn), with the page's
timing marks (``window.bmdViewer.marks``: Cornerstone initialised, first answer's headers, first slab drawn,
all voxels in, drawn, overlay ready).

Targets (issue 11): case page median under 300 ms; the series in the viewer under 5 s (the script exits 1
when a median is at or over its target). Baselines in the same process: the project overview page (server
time) and, for the viewer, the transfer alone from Python: the series' frames in one WADO-RS request (what
the viewer loaded before) and its voxels in one request of the viewer's /voxels extension. The machine's load
average is printed with the numbers (a shared machine's timings depend on it).

Runs on a throw-away test database (PostgreSQL when DATABASE_URL points to one, else SQLite) and a temporary
storage folder.
    .venv/bin/python benchmarks/bench_case_viewer.py [--slices 300] [--repeats 15] [--cold]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import django_bench  # noqa: E402, F401  (sets the environment before Django loads)
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("STORAGE_ROOT", tempfile.mkdtemp(prefix="bmdsite-bench-storage-"))

PAGE_TARGET_S = 0.300
VIEWER_TARGET_S = 5.0


def make_case(n_slices):
    """An exam with a stored 512 x 512 series and a run whose label map holds five box-shaped bodies."""
    import numpy as np
    from django.core.files.base import ContentFile

    from analysis.imaging.volume import Volume, save_nifti
    from analysis.models import LevelMeasurement, MeasurementRun
    from studies.pacs.ingest import store_volume
    from tests.factories import ExamFactory

    exam = ExamFactory(region="both")
    rng = np.random.default_rng(0)
    array = rng.normal(40, 20, size=(n_slices, 512, 512)).astype(np.int16)
    labels = np.zeros(array.shape, dtype=np.uint8)
    names = ["T11", "T12", "L1", "L2", "L3"]
    step = n_slices // len(names)
    for i, name in enumerate(names):
        z0 = n_slices - (i + 1) * step  # head end at high z (LPS z up)
        labels[z0 + 2:z0 + step - 2, 300:340, 236:276] = 18 + i
        array[z0 + 2:z0 + step - 2, 300:340, 236:276] = 200
    volume = Volume(array=array, affine=np.diag([0.7, 0.7, 1.0, 1.0]), series_uid="1.2.3.4.300",
                    meta={"study_uid": "1.2.3.4"})
    store_volume(exam.patient.project, volume, exam=exam, source="benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.nii.gz"
        save_nifti(volume.with_array(labels), path, dtype="uint8")
        data = path.read_bytes()
    run = MeasurementRun(exam=exam, series_uid=volume.series_uid, segmenter_version="benchmark",
                         parameters={"level_confidence": {n: 0.9 for n in names}, "notes": ["benchmark boxes"]})
    run.labels.save("bench.nii.gz", ContentFile(data), save=False)
    run.save()
    LevelMeasurement.objects.bulk_create([LevelMeasurement(run=run, level=n, mean_hu=200.0, median_hu=200.0,
                                                           sd_hu=0.0, roi_voxels=1000) for n in names])
    return exam


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loads", type=int, default=3, help="viewer loads (medians are reported)")
    parser.add_argument("--voxel-requests", type=int, nargs="*", default=[],
                        help="also load with these numbers of parallel voxel requests (the page's default first)")
    parser.add_argument("--compare-tiled", action="store_true",
                        help="also load with Cornerstone's tiled rendering mode (one WebGL context for the views)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.testcases import LiveServerThread
    from django.test.utils import setup_test_environment

    from studies.models import Membership
    from tests.factories import UserFactory

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    if connection.vendor == "sqlite":
        # A file, not the in-memory default: the server's threads each open their own connection to it.
        connection.settings_dict["TEST"]["NAME"] = str(Path(tempfile.mkdtemp()) / "bench.sqlite3")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    failed = False
    try:
        exam = make_case(args.slices)
        project = exam.patient.project
        user = UserFactory()
        Membership.objects.create(project=project, user=user, role="annotator")
        client = Client()
        client.force_login(user)
        case_url = f"/p/{project.pk}/exams/{exam.pk}/case/"

        def median_get(url):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.status_code
            return statistics.median(times)

        base_s = median_get(f"/p/{project.pk}/?overview=1")
        page_s = median_get(case_url)
        print(f"database: {connection.vendor}")
        print(f"baseline project overview: median {base_s * 1000:.1f} ms")
        print(f"case page: median {page_s * 1000:.1f} ms  x{page_s / base_s:.2f} of baseline  "
              f"(target {PAGE_TARGET_S * 1000:.0f} ms)")
        failed |= page_s >= PAGE_TARGET_S

        # An in-memory SQLite test database exists only in this connection: the server thread shares it.
        server = LiveServerThread("127.0.0.1", static_handler=_static_handler(), port=0)
        server.daemon = True
        server.start()
        server.is_ready.wait()
        if server.error:
            raise server.error
        url = f"http://127.0.0.1:{server.port}"
        try:
            cookie = client.cookies["sessionid"].value
            transfer_s = _fetch_frames(url, cookie, project, args.slices)
            voxels_s = _fetch_voxels(url, cookie, project, args.slices)
            print(f"baseline: the {args.slices} frames in one WADO-RS request from Python: {transfer_s:.2f} s; "
                  f"the voxels in one /voxels request: {voxels_s:.2f} s")
            urls = {"default": case_url}
            for n in args.voxel_requests:
                urls[f"{n} parallel voxel request(s)"] = f"{case_url}?voxel_requests={n}"
            if args.compare_tiled:
                urls["one WebGL context for the three views (tiled)"] = f"{case_url}?rendering_mode=tiled"
            # Interleaved (A, B, A, B, ...) in one browser: a later load finds warmer caches than an earlier one.
            by_url = _viewer_loads(url, cookie, list(urls.values()), args.loads)
            loads = by_url[case_url]
            variants = {name: by_url[u] for name, u in urls.items() if name != "default"}
        finally:
            server.terminate()
        total = statistics.median(load["loadSeconds"] for load in loads)
        print(f"load average (1, 5, 15 min) after the loads: {_loadavg()}")
        print(f"viewer, {args.slices} slices of 512 x 512: loads {[round(x['loadSeconds'], 2) for x in loads]} s, "
              f"median {total:.2f} s  x{total / transfer_s:.2f} of the one-request WADO-RS transfer  "
              f"(target under {VIEWER_TARGET_S:.0f} s)")
        for name in ("init", "typeKnown", "volumeCreated", "volumesSet", "emptyDrawn", "firstSlab", "firstSliceShown",
                     "allVoxels", "loaded", "ready"):
            print(f"  page mark {name:16s} median {statistics.median(load['marks'][name] for load in loads):.2f} s")
        print(f"  overlay drawn (data-ready) {statistics.median(load['readyAt'] for load in loads):.2f} s after the "
              "navigation started")
        for n, variant in variants.items():
            print(f"  with {n}: median "
                  f"{statistics.median(load['loadSeconds'] for load in variant):.2f} s, first slice shown by "
                  f"{statistics.median(load['marks']['firstSliceShown'] for load in variant):.2f} s")
        failed |= total >= VIEWER_TARGET_S
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    if failed:
        print("FAIL: over target")
        sys.exit(1)


def _static_handler():
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    return StaticFilesHandler


def _fetch_frames(url, cookie, project, n_slices):
    """Seconds to fetch the series' bulk data (every frame, one request) from Python: the transfer alone."""
    import requests

    session = requests.Session()
    session.cookies.set("sessionid", cookie)
    root = f"{url}/p/{project.pk}/dicom-web/studies/1.2.3.4/series/1.2.3.4.300"
    session.get(f"{root}/metadata", timeout=120).raise_for_status()  # warms the series cache
    start = time.perf_counter()
    answer = session.get(root, headers={"Accept": 'multipart/related; type="application/octet-stream"'}, timeout=300)
    answer.raise_for_status()
    assert len(answer.content) > n_slices * 512 * 512 * 2
    return time.perf_counter() - start


def _fetch_voxels(url, cookie, project, n_slices):
    """Seconds to fetch the series' voxels in one request of the viewer's /voxels extension from Python."""
    import requests

    session = requests.Session()
    session.cookies.set("sessionid", cookie)
    root = f"{url}/p/{project.pk}/dicom-web/studies/1.2.3.4/series/1.2.3.4.300"
    start = time.perf_counter()
    answer = session.get(f"{root}/voxels", timeout=300)
    answer.raise_for_status()
    assert len(answer.content) == n_slices * 512 * 512 * 2
    return time.perf_counter() - start


def _loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# Installed in every page before its scripts: when #viewer gets data-ready="1" (the volume and the overlay
# drawn), the time since the navigation started, in seconds; the same clock for any version of the viewer.
READY_OBSERVER = """
new MutationObserver((changes, observer) => {
  const viewer = document.getElementById('viewer');
  if (viewer && viewer.dataset.ready === '1') {
    window.bmdReadyAt = performance.now() / 1000;
    observer.disconnect();
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-ready']});
"""


def _viewer_loads(url, cookie, case_urls, n):
    """``{case URL: [the page's state after each of n loads]}``, the URLs loaded in turn."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="bmdsite-bench-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--window-size=1500,1100",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": READY_OBSERVER})
    loads = {case_url: [] for case_url in case_urls}
    try:
        driver.get(f"{url}/accounts/login/")
        driver.add_cookie({"name": "sessionid", "value": cookie, "path": "/"})
        for _ in range(n):
            for case_url in case_urls:
                driver.get(url + case_url)
                WebDriverWait(driver, 300).until(lambda d: d.execute_script(
                    "return !!window.bmdViewer && (window.bmdViewer.ready || window.bmdViewer.errors.length > 0)"))
                state = driver.execute_script(
                    "const s = window.bmdViewer; return {errors: s.errors, loadSeconds: s.loadSeconds, marks: s.marks, "
                    "readyAt: window.bmdReadyAt};")
                assert not state["errors"], state["errors"]
                loads[case_url].append(state)
        if os.environ.get("BMDSITE_SCREENSHOTS"):  # the last load, for a person to look at
            Path(os.environ["BMDSITE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(Path(os.environ["BMDSITE_SCREENSHOTS"]) / "bench-case-viewer.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return loads


if __name__ == "__main__":
    main()
