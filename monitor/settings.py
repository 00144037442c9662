"""Django settings, read from environment variables through `monitor.config`.

With nothing set, Portwatch runs embedded: SQLite and a generated secret key under var/, a
filesystem Celery broker, DEBUG off. Each variable is named where it is read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from monitor.config import (
    database_from_url,
    env_base_url,
    env_bool,
    env_int,
    env_list,
    env_path,
    env_secret_key,
    env_str,
    load_secret_key,
    parse_keys,
    sqlite_database,
)
from monitor.metrics.guard import parse_allow_list
from monitor.validation import parse_days

BASE_DIR = Path(__file__).resolve().parent.parent

# Everything Portwatch writes in embedded mode lives here: database, secret key, broker queue.
DATA_DIR = env_path("PORTWATCH_DATA_DIR", BASE_DIR / "var", base=BASE_DIR)
with contextlib.suppress(OSError):  # the portwatch.E001 system check reports it with a hint
    DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_secret_key("DJANGO_SECRET_KEY") or load_secret_key(DATA_DIR / "secret_key")
DEBUG = env_bool("PORTWATCH_DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# Behind a TLS-terminating reverse proxy (deploy/systemd/README.md). Without these the admin login
# there failed CSRF's origin check with 403: the browser sent Origin https://host, Django saw http.
# PORTWATCH_BASE_URL is the address people use: a trusted origin and, when https, secure cookies
# and a redirect of plain http to https. Unset (the embedded mode), all of it stays off.
PORTWATCH_BASE_URL = env_base_url("PORTWATCH_BASE_URL")
CSRF_TRUSTED_ORIGINS = [PORTWATCH_BASE_URL] if PORTWATCH_BASE_URL else []
SECURE_SSL_REDIRECT = bool(PORTWATCH_BASE_URL and PORTWATCH_BASE_URL.startswith("https://"))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
# Take the proxy's X-Forwarded-Proto as the scheme. Safe only because nothing but the proxy can
# reach gunicorn (it binds 127.0.0.1) and the proxy overwrites any X-Forwarded-Proto a client sends.
PORTWATCH_BEHIND_PROXY = env_bool("PORTWATCH_BEHIND_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PORTWATCH_BEHIND_PROXY else None
# HSTS: browsers then refuse plain http to this host for that long, so it is off until asked for;
# at most two years (63072000), the value hstspreload.org recommends.
SECURE_HSTS_SECONDS = env_int("PORTWATCH_HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PORTWATCH_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool("PORTWATCH_HSTS_PRELOAD", default=False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "monitor.apps.MonitorConfig",
    "dashboard.apps.DashboardConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboard.middleware.ContentSecurityPolicy",
]

ROOT_URLCONF = "monitor.urls"
WSGI_APPLICATION = "monitor.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context.role",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": database_from_url(DATABASE_URL, base=BASE_DIR)
    if DATABASE_URL
    else sqlite_database(DATA_DIR / "portwatch.sqlite3")
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Keep connections: a new PostgreSQL backend costs ~6 ms of its CPU (measured here), and workers
    # run several tasks a second. Health checks ping a kept connection before its first use in a
    # task or request, so one broken by a database restart is replaced instead of failing.
    DATABASES["default"] |= {"CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True}
    # No JIT: the uptime sums are wide aggregates (SUM ... FILTER per period) that PostgreSQL judged
    # worth compiling; compiling them took 6.8 s of a 10 s query at 10,000 services, running 3 s.
    # A `?options=` in DATABASE_URL still wins.
    DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

# The dashboard's sign-in (dashboard/urls.py); the admin at /admin/ keeps its own.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"
STATIC_ROOT = DATA_DIR / "static"

# The cache holds rate-limit counters ("check now", "test"), so every web process must share it:
# Redis when REDIS_URL is set, else files under DATA_DIR (runserver and gunicorn workers alike).
REDIS_URL = env_str("REDIS_URL")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(DATA_DIR / "cache")}
}

# Celery: Redis when REDIS_URL is set, else a queue of files under DATA_DIR, so the embedded
# mode needs no server. `monitor/celery.py` reads every CELERY_* name below.
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
# kombu's filesystem transport with atomic writes (monitor/broker.py says why).
CELERY_BROKER_TRANSPORT = None if REDIS_URL else "monitor.broker:Transport"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        # Acks are early (below), so only messages prefetched but not started wait for an ack;
        # a dead worker's are re-delivered after this, by when they have expired anyway.
        "visibility_timeout": 600,
        # A Redis that vanishes (restart, network) must not hang a worker or beat forever.
        "socket_timeout": 15,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }
    if REDIS_URL
    else {
        # One folder for in and out: the filesystem transport's consumers read what producers write there.
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # kombu lists the folder this often; its default of 1 s would make every hop (beat to
        # dispatch, dispatch to probe batch) up to a second late.
        "polling_interval": 0.1,
    }
)
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_IGNORE_RESULT = True  # results live in our own tables, not in a result backend
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "portwatch"  # dispatch and maintenance; probe batches name probe.<location>
# One batch per worker process at a time: a prefetched batch would sit behind a running one
# and start its probes late, while an idle worker elsewhere could have taken it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Acks early: a worker killed mid-batch loses that batch, and the next slot (at most one
# interval later) probes those services again. Late acks would re-deliver the batch after the
# visibility timeout, long after its slots, and a slot could be probed twice.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Wait for the broker forever, at startup and after a restart, instead of exiting.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Beat's default scheduler keeps only last-run times in this file; the schedule itself is below.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Each entry expires before its next run (paperless-style), so a backlog of ticks built up
# while workers were down or busy is dropped instead of run in a burst.
CELERY_BEAT_SCHEDULE = {
    "dispatch": {"task": "portwatch.dispatch", "schedule": 1.0, "options": {"expires": 1.0}},
    "update-rollups": {"task": "portwatch.update_rollups", "schedule": 60.0, "options": {"expires": 55.0}},
    # Uptime over a day, a week and a month for the overview and /metrics: ~20 s of work at 10,000
    # services, so every ten minutes; readers.SNAPSHOT_MAX_AGE allows for one run missed.
    "refresh-uptimes": {"task": "portwatch.refresh_uptimes", "schedule": 600.0, "options": {"expires": 590.0}},
    "prune": {"task": "portwatch.prune", "schedule": 3600.0, "options": {"expires": 3300.0}},
    "sweep": {"task": "portwatch.sweep", "schedule": 15.0, "options": {"expires": 14.0}},
    # Alerting (monitor/alerting/notifier.py): a change waits at most 5 s to be claimed; overlapping runs
    # share the work by their claims.
    "notify": {"task": "portwatch.notify", "schedule": 5.0, "options": {"expires": 5.0}},
    # dashboard/tasks.py: public status pages are read here, not while a visitor waits.
    "refresh-status-pages": {
        "task": "portwatch.refresh_status_pages",
        "schedule": 30.0,
        "options": {"expires": 25.0},
    },
}

# The daemon. Each is read once here; `docs/architecture.md` shows where they act.
PORTWATCH_LOCATION = env_str("PORTWATCH_LOCATION", "default")  # the location a worker probes from
PORTWATCH_BATCH_SIZE = env_int("PORTWATCH_BATCH_SIZE", 50, minimum=1, maximum=5000)  # checks per task
PORTWATCH_WORKER_CONCURRENCY = env_int("PORTWATCH_WORKER_CONCURRENCY", 2, minimum=1, maximum=256)  # processes
# Probes one worker process keeps running at once (each holds a socket); jobs waiting for their slot don't count.
PORTWATCH_MAX_IN_FLIGHT = env_int("PORTWATCH_MAX_IN_FLIGHT", 2000, minimum=1, maximum=100_000)
# DNS servers (IP or IP:port) that probes resolve host names with, instead of /etc/resolv.conf's.
PORTWATCH_DNS_SERVERS = env_list("PORTWATCH_DNS_SERVERS", [])
PORTWATCH_RESULT_RETENTION_DAYS = env_int("PORTWATCH_RESULT_RETENTION_DAYS", 7, minimum=1, maximum=3650)
PORTWATCH_HOURLY_RETENTION_DAYS = env_int("PORTWATCH_HOURLY_RETENTION_DAYS", 400, minimum=1, maximum=36500)
CELERY_WORKER_CONCURRENCY = PORTWATCH_WORKER_CONCURRENCY  # a plain `celery worker` honours it too

# Prometheus: /probe, blackbox_exporter's multi-target endpoint (monitor/metrics/, docs/architecture.md).
# It makes the server connect where it is told, so it needs a bearer token (Authorization: Bearer ...)
# and/or basic auth ("user:password"); with neither it answers 403 unless PORTWATCH_METRICS_PUBLIC=true.
PORTWATCH_METRICS_TOKEN = env_str("PORTWATCH_METRICS_TOKEN")
PORTWATCH_METRICS_BASIC_AUTH = env_str("PORTWATCH_METRICS_BASIC_AUTH")
if PORTWATCH_METRICS_BASIC_AUTH is not None and ":" not in PORTWATCH_METRICS_BASIC_AUTH:
    raise ImproperlyConfigured("PORTWATCH_METRICS_BASIC_AUTH must be user:password, with a colon between them")
PORTWATCH_METRICS_PUBLIC = env_bool("PORTWATCH_METRICS_PUBLIC", default=False)
# The modules, in blackbox.yml's own shape; the default file has blackbox's example modules.
PORTWATCH_PROBE_MODULES = env_path(
    "PORTWATCH_PROBE_MODULES", BASE_DIR / "deploy" / "prometheus" / "blackbox.yml", base=BASE_DIR
)
# Networks and host names (*.example.com: the names under it) /probe may probe; empty: anywhere.
PORTWATCH_PROBE_ALLOW = env_list("PORTWATCH_PROBE_ALLOW", [])
try:
    parse_allow_list(PORTWATCH_PROBE_ALLOW)
except ValueError as error:
    raise ImproperlyConfigured(f"PORTWATCH_PROBE_ALLOW: {error}") from None
# /probe refuses the host:port of REDIS_URL and DATABASE_URL unless this says the operator wants them probed.
PORTWATCH_PROBE_ALLOW_OWN_SERVICES = env_bool("PORTWATCH_PROBE_ALLOW_OWN_SERVICES", default=False)
# /metrics' latency histogram per service, location and these phases: the whole probe ("total") by default,
# what latency SLOs and deploy/prometheus/alerts.yml use. Each phase costs 14 series a pair (~154,000 at
# 10,000 services, in Prometheus' memory too); all six make a 10,000-service scrape 1.3 million series and
# ~0.55 s gzipped, "total" 516,000 and ~0.4 s (docs/performance.md). Every phase's last value is always
# there, in portwatch_probe_phase_seconds.
HISTOGRAM_PHASES = ("resolve", "connect", "tls", "processing", "transfer", "total")  # monitor.models.history.PHASES
PORTWATCH_METRICS_HISTOGRAM_PHASES = env_list("PORTWATCH_METRICS_HISTOGRAM_PHASES", ["total"])
if unknown := [phase for phase in PORTWATCH_METRICS_HISTOGRAM_PHASES if phase not in HISTOGRAM_PHASES]:
    raise ImproperlyConfigured(
        f"PORTWATCH_METRICS_HISTOGRAM_PHASES: unknown phase {unknown[0]!r}; "
        f"the phases are {', '.join(HISTOGRAM_PHASES)}"
    )

# Alerting: Fernet keys (comma-separated; the first encrypts, all decrypt) for channel secrets at rest
# (monitor/secrets.py). Unset: a key made once into DATA_DIR/secrets_key. Checked here so a bad key stops
# the start, not the first alert.
PORTWATCH_SECRETS_KEY = env_list("PORTWATCH_SECRETS_KEY", [])
if PORTWATCH_SECRETS_KEY:
    parse_keys(PORTWATCH_SECRETS_KEY)

# Alerting's notifier (monitor/alerting/notifier.py, the portwatch.notify task). A change older than
# PORTWATCH_ALERT_MAX_AGE seconds when the notifier first sees it is recorded but not sent (after a long
# stop, no storm of stale alerts); a failing delivery is retried with backoff for
# PORTWATCH_ALERT_RETRY_WINDOW seconds from its alert, then marked failed.
PORTWATCH_ALERT_MAX_AGE = env_int("PORTWATCH_ALERT_MAX_AGE", 3600, minimum=60, maximum=7 * 24 * 3600)
PORTWATCH_ALERT_RETRY_WINDOW = env_int("PORTWATCH_ALERT_RETRY_WINDOW", 24 * 3600, minimum=60, maximum=7 * 24 * 3600)
# Certificate warnings go out once per certificate at each of these days before expiry (a service's own
# certificate_warn_days wins). Flapping (Icinga's measure: the weighted share of state changes over a
# location's last 21 checks) starts above HIGH percent and ends below LOW. Monitor-health alerts fire
# when a location has had no live worker for PORTWATCH_ALERT_WORKER_GRACE seconds, when the dispatcher stopped,
# or when more than PORTWATCH_ALERT_MISSED_SHARE percent of a location's slots in the last 10 minutes went
# unmeasured; PORTWATCH_ALERT_MONITOR_HEALTH=false turns these off (for those who alert on the daemon's
# health with Prometheus' rules in deploy/prometheus instead).
try:
    PORTWATCH_ALERT_CERTIFICATE_DAYS = parse_days(env_str("PORTWATCH_ALERT_CERTIFICATE_DAYS", "30,14,7,1"))
except ValueError as error:
    raise ImproperlyConfigured(f"PORTWATCH_ALERT_CERTIFICATE_DAYS: {error}") from None
PORTWATCH_ALERT_FLAP_HIGH = env_int("PORTWATCH_ALERT_FLAP_HIGH", 30, minimum=1, maximum=100)
PORTWATCH_ALERT_FLAP_LOW = env_int("PORTWATCH_ALERT_FLAP_LOW", 25, minimum=0, maximum=100)
PORTWATCH_ALERT_WORKER_GRACE = env_int("PORTWATCH_ALERT_WORKER_GRACE", 120, minimum=30, maximum=24 * 3600)
PORTWATCH_ALERT_MONITOR_HEALTH = env_bool("PORTWATCH_ALERT_MONITOR_HEALTH", default=True)
PORTWATCH_ALERT_MISSED_SHARE = env_int("PORTWATCH_ALERT_MISSED_SHARE", 10, minimum=1, maximum=100)

# Email channels send through this SMTP server (monitor/alerting/channels/email.py); Django's own names.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)  # STARTTLS
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=False)  # implicit TLS (465)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: STARTTLS (587) or implicit TLS (465)")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "portwatch@localhost")
