import time
from pathlib import Path

from django.conf import settings as dj_settings
from django.urls import reverse

SHOTS = Path("/tmp/shots-import")


def test_walk(browser, live_server, rq_worker, member, project, client, tmp_path, settings):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_import import make_csv

    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    SHOTS.mkdir(exist_ok=True)
    user = member("coordinator")
    client.force_login(user)
    csv_path = tmp_path / "registry-20k.csv"
    csv_path.write_bytes(make_csv(20000))
    b = browser
    b.get(live_server.url + "/")
    b.add_cookie({"name": dj_settings.SESSION_COOKIE_NAME, "value": client.cookies[dj_settings.SESSION_COOKIE_NAME].value})
    b.get(live_server.url + reverse("studies:import_csv", args=[project.pk]))
    b.save_screenshot(str(SHOTS / "01-import-page.png"))
    b.find_element("css selector", "input[type=file]").send_keys(str(csv_path))
    b.find_element("css selector", "form button[type=submit]").click()
    b.find_element("id", "confirm-import")
    b.save_screenshot(str(SHOTS / "02-preview.png"))
    b.find_element("id", "confirm-import").click()
    time.sleep(1)
    b.save_screenshot(str(SHOTS / "03-job-queued.png"))
    job_url = b.current_url
    worker = rq_worker(burst=True, extra_env={"STORAGE_ROOT": str(tmp_path)})
    t0 = time.time()
    shot = 4
    while worker.poll() is None and time.time() - t0 < 300:
        time.sleep(4)
        b.save_screenshot(str(SHOTS / f"{shot:02d}-job-{int(time.time() - t0)}s.png"))
        shot += 1
    time.sleep(3)
    b.save_screenshot(str(SHOTS / f"{shot:02d}-job-end.png"))
    print("job url", job_url, "worker rc", worker.poll(), "elapsed", time.time() - t0)
    print(worker.output()[-3000:])
    from studies.models import Patient
    patient = Patient.objects.filter(project=project).order_by("pk").first()
    b.get(live_server.url + reverse("studies:patient_detail", args=[project.pk, patient.pk]))
    b.save_screenshot(str(SHOTS / "20-patient.png"))
    b.get(live_server.url + reverse("studies:patient_history", args=[project.pk, patient.pk]))
    b.save_screenshot(str(SHOTS / "21-history.png"))
    print(b.find_element("id", "history").text)
    print("pending files", list((tmp_path / "imports" / "pending").glob("*")) if (tmp_path / "imports" / "pending").exists() else [])
