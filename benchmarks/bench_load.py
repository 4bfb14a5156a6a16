"""Load: 1, 5 and 20 concurrent signed-in users browsing and saving, against the site served as in
production, on loopback only.

The site runs in its own processes with production settings (DEBUG off, the security middleware, sessions,
CSRF): gunicorn (``pip install -e '.[serve]'``; 2 workers x 4 threads) when it is installed, else Django's
threaded ``runserver``; on PostgreSQL when DATABASE_URL is set (a throw-away database beside it, dropped at
the end), else SQLite in a temporary folder. It seeds the demo project (702 synthetic patients with QCT
values, HU measurements and one trained model version) and one coordinator per virtual user.

Each virtual user signs in, then does ``--rounds`` rounds of: the patient list (a page of 50), a patient's
page, the model list, an exam's edit form (GET) and its save (POST with the form's CSRF token and every
field as the page gave it, one field changed; answered by a redirect). Before each request it pauses
``--think-s`` on average (uniform, 0.5 to 1.5 times; seeded). Users edit distinct exams, so no save meets
another's (concurrent edits of one exam are the integrity tests' subject). Request counts are fixed:
5 x rounds per user, and a level's users start together.

Target: at every level, no error (any answer other than the expected status, or no answer) and p95 of all
requests under 1.0 s. One second is the limit beyond which a page stops feeling immediate (Nielsen). Twenty
users each clicking about once a second is several times a research group's whole team at work (people
read a page for many seconds); without pauses (``--think-s 0``) 20 users saturate two cores, and the
latency only measures the queue (about users / throughput). The load generator shares the machine with the
server, and the load average before the run is printed: other work on the machine slows every level. The
1-user level is the baseline: the other levels print their p50 as a ratio to it.

    .venv/bin/python benchmarks/bench_load.py [--rounds 4] [--levels 1,5,20] [--server auto|gunicorn|runserver]
"""

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

P95_TARGET_S = 1.0
PASSWORD = "load-benchmark-password-0123"


# -- the database and settings shared by this process (seeding) and the server -----------------------------
def throwaway_database(url: str) -> tuple[str, callable]:
    """A fresh PostgreSQL database beside the one in ``url``; returns (its URL, a function dropping it)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_bench_load"
    maintenance = urlunsplit(parts._replace(path="/postgres"))

    def run(sql):
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(sql)

    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), lambda: run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def production_env(var_dir: Path, database_url: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "PACS_ALLOW_LOOPBACK")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "bmdsite.settings", "DEBUG": "false",
        "SECRET_KEY": "load-benchmark-only-secret-key-0123456789-abcdefghijklmnop",
        "ALLOWED_HOSTS": "127.0.0.1", "BMDSITE_VAR_DIR": str(var_dir), "STATIC_MANIFEST": "false",
        # Plain HTTP on loopback: no TLS redirect, and cookies a plain-HTTP client sends back.
        "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
    })
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
    return env


def seed(n_users: int, train: bool = True) -> dict:
    """Migrate, then the demo project with measurements and one model version, and the coordinators."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from analysis.modeling.demo import seed_demo_measurements
    from analysis.modeling.versions import train_cohort
    from studies.demo import seed_demo_project
    from studies.models import Exam, Membership

    project, _ = seed_demo_project(random_state=0, name="Load benchmark")
    seed_demo_measurements(project, random_state=0)
    if train:
        train_cohort(project, feature_sets=("chest_cal",), tasks=("regression",),
                     algorithms={"regression": ["SGD"]}, n_resamples=10)
    users = []
    for k in range(n_users):
        user = get_user_model().objects.create_user(username=f"load{k:02d}", password=PASSWORD)
        Membership.objects.create(project=project, user=user, role="coordinator")
        users.append(user.username)
    exams = list(Exam.objects.filter(patient__project=project).order_by("pk").values_list("pk", "patient_id"))
    return {"project": project.pk, "users": users, "exams": exams}


# -- the server --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    if kind == "gunicorn":
        # Keep-alive longer than a user's pause, as a front proxy would: with gunicorn's 2 s default the
        # server closes a connection while its user reads, and the next request on it races the close
        # (a reset, which a browser retries silently but this client counts as an error).
        cmd = [sys.executable, "-m", "gunicorn", "bmdsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--threads", "4", "--timeout", "120", "--keep-alive", "20", "--chdir", str(REPO)]
    else:
        cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    import requests

    probe = requests.Session()
    probe.trust_env = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the {kind} server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if probe.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=60).status_code == 200:
                return proc
        except requests.RequestException:
            pass  # not listening yet, or still loading: ask again
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"the {kind} server did not answer within 120 s: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen):
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the virtual users -------------------------------------------------------------------------------------
class FormFields(HTMLParser):
    """The fields of the page's first POST form without an ``action`` (the exam form), as a browser would
    submit them unchanged."""

    def __init__(self):
        super().__init__()
        self.fields, self._in_form, self._done, self._select, self._textarea = {}, False, False, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and not self._done and a.get("method", "").lower() == "post" and "action" not in a:
            self._in_form = True
        if not self._in_form:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields[name] = a.get("value", "on")
            elif kind not in ("submit", "button"):
                self.fields[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, None)
        elif tag == "option" and self._select:
            # The selected option, or the first one when none is marked.
            if self.fields[self._select] is None or "selected" in a:
                self.fields[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data


class VirtualUser:
    def __init__(self, base: str, username: str, project: int, exams: list, patients: list, seed: int,
                 think_s: float = 0.0):
        import requests

        self.think_s = think_s
        self.base, self.username, self.project = base, username, project
        self.exams, self.patients = exams, patients
        self.random = random.Random(seed)
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: no proxy from the environment
        self.samples = []  # (kind, seconds, ok, what)

    def request(self, kind, method, path, expect, **kwargs):
        if self.think_s:
            time.sleep(self.random.uniform(0.5, 1.5) * self.think_s)  # reading the last page
        start = time.perf_counter()
        try:
            response = self.session.request(method, self.base + path, allow_redirects=False, timeout=120, **kwargs)
            ok = response.status_code == expect
            what = f"{method} {path}: {response.status_code}"
        except Exception as exc:  # noqa: BLE001 (an unanswered request is an error of the run, counted)
            response, ok, what = None, False, f"{method} {path}: {type(exc).__name__}"
        self.samples.append((kind, time.perf_counter() - start, ok, what))
        return response

    def login(self):
        page = self.session.get(self.base + "/accounts/login/", timeout=120)
        token = self.session.cookies.get("csrftoken")
        response = self.session.post(self.base + "/accounts/login/", allow_redirects=False, timeout=120, data={
            "csrfmiddlewaretoken": token, "username": self.username, "password": PASSWORD})
        if page.status_code != 200 or response.status_code != 302:
            raise SystemExit(f"{self.username} could not sign in: {response.status_code}")

    def round(self, k):
        p = f"/p/{self.project}"
        page = self.random.randint(1, 14)  # 702 patients, 50 per page
        self.request("list", "GET", f"{p}/patients/?page={page}", 200)
        self.request("patient", "GET", f"{p}/patients/{self.random.choice(self.patients)}/", 200)
        self.request("models", "GET", f"{p}/models/", 200)
        exam_id, patient_id = self.exams[k % len(self.exams)]
        edit = f"{p}/patients/{patient_id}/exams/{exam_id}/"
        response = self.request("form", "GET", edit, 200)
        if response is None or response.status_code != 200:
            return
        form = FormFields()
        form.feed(response.text)
        data = {name: value for name, value in form.fields.items() if value is not None}
        data["exam-scanner_model"] = f"Bench {self.username} round {k}"
        self.request("save", "POST", edit, 302, data=data, headers={"Referer": self.base + edit})


def run_level(base, seeded, n_users, rounds, seed, think_s=0.0):
    patients = sorted({patient for _, patient in seeded["exams"]})
    exams = seeded["exams"]
    users = [VirtualUser(base, seeded["users"][k], seeded["project"], exams[k::n_users], patients, seed + k,
                         think_s) for k in range(n_users)]
    with ThreadPoolExecutor(n_users) as pool:
        list(pool.map(VirtualUser.login, users))
    start_line = threading.Barrier(n_users)

    def work(user):
        start_line.wait()
        for k in range(rounds):
            user.round(k)

    started = time.perf_counter()
    with ThreadPoolExecutor(n_users) as pool:
        list(pool.map(work, users))
    elapsed = time.perf_counter() - started
    return [s for u in users for s in u.samples], elapsed


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,5,20")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 5 requests per user and level")
    parser.add_argument("--server", choices=["auto", "gunicorn", "runserver"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think-s", type=float, default=1.0,
                        help="mean pause before each request (uniform, 0.5 to 1.5 times this)")
    parser.add_argument("--untrained", action="store_true",
                        help="no model version (saves then never meet a cohort frozen by training)")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    kind = args.server
    if kind == "auto":
        try:
            import gunicorn  # noqa: F401

            kind = "gunicorn"
        except ImportError:
            kind = "runserver"

    var_dir = Path(tempfile.mkdtemp(prefix="bmdsite-bench-load-"))
    (var_dir / "static").mkdir()  # STATIC_ROOT: WhiteNoise warns on every request without it
    drop = None
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        database_url, drop = throwaway_database(database_url)
    env = production_env(var_dir, database_url)
    os.environ.update(env)
    if not database_url:
        os.environ.pop("DATABASE_URL", None)
    proc, failures = None, []
    try:
        t0 = time.perf_counter()
        seeded = seed(max(levels), train=not args.untrained)
        print(f"seeded {len(seeded['exams'])} exams and {len(seeded['users'])} users in "
              f"{time.perf_counter() - t0:.1f} s ({'PostgreSQL' if database_url else 'SQLite'})")
        port = free_port()
        proc = start_server(kind, port, env, var_dir / "server.log")
        base = f"http://127.0.0.1:{port}"
        print(f"server: {kind} on {base}; {args.rounds} rounds of 5 requests per user, {args.think_s:g} s "
              f"mean pause before each; target p95 < {P95_TARGET_S * 1000:.0f} ms and no error at every level; "
              f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        run_level(base, seeded, 1, 1, args.seed + 999)  # warm-up (not counted): templates, connections
        kinds = ["list", "patient", "models", "form", "save"]
        print(f"{'users':>5} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} {'req/s':>6} {'p50 ratio':>9}   "
              + " ".join(f"{k + ' p95':>11}" for k in kinds))
        baseline = None
        for n_users in levels:
            samples, elapsed = run_level(base, seeded, n_users, args.rounds, args.seed, args.think_s)
            times = [s[1] for s in samples]
            errors = [s[3] for s in samples if not s[2]]
            p50, p95 = percentile(times, 50), percentile(times, 95)
            by_kind = [percentile([s[1] for s in samples if s[0] == k], 95) for k in kinds]
            baseline = baseline or p50
            print(f"{n_users:>5} {len(samples):>8} {len(errors):>6} {p50 * 1000:>7.0f} {p95 * 1000:>7.0f} "
                  f"{len(samples) / elapsed:>6.1f} {p50 / baseline:>9.2f}   "
                  + " ".join(f"{t * 1000:>11.0f}" for t in by_kind))
            if errors:
                failures.append(f"{n_users} users: {len(errors)} error(s), e.g. {'; '.join(errors[:3])}")
            if p95 >= P95_TARGET_S:
                failures.append(f"{n_users} users: p95 {p95 * 1000:.0f} ms >= {P95_TARGET_S * 1000:.0f} ms")
    finally:
        if proc is not None:
            stop_server(proc)
            log = (var_dir / "server.log").read_text(errors="replace")
            if failures and log.strip():
                print(f"server log (last lines):\n{log[-3000:]}")
        if drop is not None:
            from django.db import connections

            connections.close_all()
            drop()
        shutil.rmtree(var_dir, ignore_errors=True)
    if failures:
        print("FAIL: " + " | ".join(failures))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
