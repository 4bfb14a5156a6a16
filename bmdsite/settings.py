"""Settings for bmdsite, read from environment variables with safe defaults.

The embedded default needs no service: SQLite in ``var/`` and, for jobs, the in-process Redis-protocol
server started by ``manage.py runembedded``. Production sets ``DATABASE_URL`` (PostgreSQL),
``REDIS_URL`` (RQ), ``SECRET_KEY`` and ``ALLOWED_HOSTS`` and turns ``DEBUG`` off.
"""

import importlib.util
from pathlib import Path

import environ

from bmdsite.checks import generated_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# django-environ raises on malformed values (``DEBUG=maybe``), which is what we want: fail loudly.
DEBUG = env.bool("DEBUG", default=False)

VAR_DIR = Path(env.str("BMDSITE_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="")
# Without SECRET_KEY, a random key generated once and kept in var/ (owner-only) lets the commands and the
# embedded site work out of the box; `check --deploy` reports it (bmdsite.W001), so production must set one.
SECRET_KEY_GENERATED = not SECRET_KEY
if SECRET_KEY_GENERATED:
    SECRET_KEY = generated_secret_key(VAR_DIR / "secret_key")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

STORAGE_ROOT = Path(env.str("STORAGE_ROOT", default=str(VAR_DIR / "storage")))
# Imported label maps (TotalSegmentator / VerSe NIfTI) that the segmenter page offers as training data: one
# sub-folder per case with ct.nii.gz and labels-verse.nii.gz or labels-totalsegmentator.nii.gz.
SEGMENTER_LABEL_MAPS = Path(env.str("SEGMENTER_LABEL_MAPS", default=str(VAR_DIR / "label-maps")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "auditlog",
    "axes",
    "studies",
    "analysis",
    "studies.dicomweb",
    "studies.review",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise (static files keep their own caching headers), before anything reads the body.
    "bmdsite.middleware.RequestSizeLimitMiddleware",
    "bmdsite.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # Last, as django-axes asks: it answers locked-out logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "bmdsite.urls"
WSGI_APPLICATION = "bmdsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'bmdsite.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout rides out short write locks.
    # Transactions begin IMMEDIATE (take the write lock at BEGIN, waiting up to the timeout): a deferred
    # transaction that reads and then writes cannot wait for another writer, SQLite answers "database is
    # locked" at once, which concurrent saves turned into 500s (benchmarks/bench_load.py, 5 users).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
         "transaction_mode": "IMMEDIATE"}
    )
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A file, not memory, so that job workers started by the tests see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Jobs. Without REDIS_URL the embedded server of ``manage.py runembedded`` listens on this address.
EMBEDDED_REDIS_PORT = env.int("EMBEDDED_REDIS_PORT", default=6390)
REDIS_URL = env.str("REDIS_URL", default=f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
    "gpu": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 4 * 3600},
}
# Modules whose import registers job kinds (``studies.jobs.task``).
JOB_TASK_MODULES = ["studies.tasks", "studies.pacs.tasks", "analysis.tasks"] + env.list("EXTRA_JOB_TASK_MODULES", default=[])
RQ = {"WORKER_CLASS": "studies.workers.HeartbeatWorker"}
# Workers heartbeat every JOB_HEARTBEAT_S seconds while running a job; a running job whose worker has been
# silent for JOB_LOST_AFTER_S is declared lost (failed, with the reason) and can be retried.
JOB_HEARTBEAT_S = env.int("JOB_HEARTBEAT_S", default=10)
JOB_LOST_AFTER_S = env.int("JOB_LOST_AFTER_S", default=60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "studies:project_list"
LOGOUT_REDIRECT_URL = "login"

# Failed-login rate limiting: lock a username+address pair after 5 failures for 15 minutes.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner on every management command
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # plotly.js for the dashboards, served from the installed plotly Python package (its package_data ships
    # plotly.min.js; plotly.py 7.1 bundles plotly.js 4.1.1, MIT licence) so the bundle is never committed.
    ("vendor/plotly", Path(importlib.util.find_spec("plotly").origin).parent / "package_data"),
]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(STORAGE_ROOT)},
    },
    "staticfiles": {
        "BACKEND": (
            # Hashed, compressed files need `collectstatic`; development and tests serve the sources.
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Limits. A request body over MAX_UPLOAD_BYTES (files included) is answered 413 with a page that says the
# limit, before any of it is read; form fields without files are capped at DATA_UPLOAD_MAX_MEMORY_SIZE.
# Uploaded files up to FILE_UPLOAD_MAX_MEMORY_SIZE stay in memory, larger ones go to a temporary file.
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=2 * 1024 ** 3)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# A QCT CSV of 200,000 rows with every optional column is about 28 MB; large files are imported by a job.
MAX_CSV_UPLOAD_BYTES = env.int("MAX_CSV_UPLOAD_BYTES", default=100 * 1024 * 1024)
# Zip imports of DICOM files: a zip bomb must not fill the disk. A thin-slice CT series is about 0.5 GiB
# uncompressed and deflates 2-5 times; refuse past 4 GiB in all, or a member that expands more than 100
# times (checked from the zip's directory before extracting and on the bytes written while extracting).
IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES = env.int("IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES", default=4 * 1024 ** 3)
IMPORT_ZIP_MAX_RATIO = env.int("IMPORT_ZIP_MAX_RATIO", default=100)
IMPORT_ZIP_MAX_MEMBERS = env.int("IMPORT_ZIP_MAX_MEMBERS", default=20000)

# PACS connections may point at private networks (hospital PACS live there) but never at link-local,
# cloud-metadata, multicast or unspecified addresses. Loopback is refused too unless allowed here: on in
# development (DEBUG) and in the tests (which run Orthanc on 127.0.0.1), off in production.
PACS_ALLOW_LOOPBACK = env.bool("PACS_ALLOW_LOOPBACK", default=DEBUG)

# Security. Production values by default; DEBUG (development) relaxes the transport ones.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy sent with every page (bmdsite.middleware.SecurityHeadersMiddleware). Everything
# comes from the site itself: no inline scripts (plotly.js and the site's modules are static files; chart
# data travels in <script type="application/json">, which is not executed). The image viewer needs neither
# WebAssembly nor blob: workers (it bundles no DICOM decoder; its one worker is the static file
# static/viewer/voxelWorker.js); its cursors are SVG images from blob: URLs (img-src); WebGL needs nothing
# here. Styles: plotly.js creates one empty <style> element and fills it through
# the CSSOM (allowed: the hash of the empty string), and at load adds its map library's stylesheet as an
# inline <style> (allowed by the hash of that text in plotly.js 4.1.1; another plotly.js version may need
# its own, which tests/browser/test_csp_browser.py reports as a violation). No 'unsafe-inline' anywhere.
CSP_STYLE_HASHES = [
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # "" (plotly's style rule sheet)
    "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='",  # plotly.js 4.1.1's maplibre-gl stylesheet
]
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", *CSP_STYLE_HASHES],
    "img-src": ["'self'", "data:", "blob:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "worker-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# Audit: record who changed what; keep the JSON of before/after values.
AUDITLOG_INCLUDE_ALL_MODELS = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Django's own "django" logger prints to its console handler when DEBUG is on and then passes the record
    # up to the root handler: every 403 or 500 traceback was printed twice. One handler, no propagation.
    "loggers": {"django": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO"),
                           "propagate": False},
                "django.db.backends": {"level": "WARNING"}},
}
