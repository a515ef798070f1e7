"""Settings for Roster, read once from the environment with django-environ.

Every variable is listed with a comment in `.env.example`. The defaults give the embedded
office: SQLite (WAL) and a broker kept in a SQLite file, so nothing needs installing.
`DATABASE_URL` and `CELERY_BROKER_URL` switch to PostgreSQL and Redis.
See https://django-environ.readthedocs.io/ for the URL formats.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from celery.schedules import schedule
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from agents.failpoints import failpoints_parse

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _decimal_setting(name: str, default: str) -> Decimal:
    """A non-negative decimal from the environment, exactly as written (never a float)."""
    raw = env.str(name, default=default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a number >= 0, got {raw!r}")
    return value


def _positive_float_setting(name: str, default: float) -> float:
    try:
        value = env.float(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {env.str(name)!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds > 0, got {value!r}")
    return value


def _fraction_setting(name: str, default: float) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = env.float(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {env.str(name)!r}") from None
    if not 0 < value < 1:
        raise ImproperlyConfigured(f"{name} must be a number between 0 and 1, got {value!r}")
    return value


def _positive_int_setting(name: str, default: int) -> int:
    try:
        value = env.int(name, default=default)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a whole number, got {env.str(name)!r}"
        ) from None
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a whole number > 0, got {value!r}")
    return value


_host_name = re.compile(r"^\.?(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?)+$")


def _fetch_allow_setting(name: str) -> list[str]:
    """CIDRs and host names, each checked here so a typo fails at start, not at fetch time."""
    entries = [entry.strip().lower() for entry in env.list(name, default=[]) if entry.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _host_name.match(entry) or "/" in entry:
                raise ImproperlyConfigured(
                    f"{name}: {entry!r} is neither a CIDR (10.0.0.0/8, 127.0.0.1) nor a "
                    "host name (intranet.example.com, .example.com)"
                ) from None
    return entries


# Where the embedded office keeps its files: the SQLite database, the broker file, the
# credential encryption key and beat's schedule.
VAR_DIR = Path(env.str("ROSTER_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. `make run` writes one into .env; in production "
            "set it in the environment."
        )
    SECRET_KEY = "insecure-dev-only-key"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "office",
    "billing",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "office.urls"
WSGI_APPLICATION = "office.wsgi.application"

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

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'roster.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web process read while the worker writes; IMMEDIATE transactions take
        # the write lock up front, so two writers queue on the busy timeout instead of
        # failing with "database is locked" when a read transaction tries to upgrade.
        "timeout": env.int("ROSTER_SQLITE_BUSY_TIMEOUT", default=30),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # Tests run against a file so that worker processes share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-roster.sqlite3")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("ROSTER_DB_CONN_MAX_AGE", default=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "office:task_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("ROSTER_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Celery -------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# The default is the embedded broker (office/broker.py): a SQLite file, no server.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"sqlite:///{VAR_DIR / 'broker.sqlite3'}")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per slot: a dying worker then holds as few messages as possible.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Two queues: role calls on the default one, the local helper's preparation of a task
# (title, pages, thread history) on `helper`, so heavy helper work never holds up role
# calls and can be given workers of its own (`celery worker -Q helper`). A worker started
# without -Q consumes both. docs/architecture.md.
CELERY_TASK_DEFAULT_QUEUE = "celery"
ROSTER_HELPER_QUEUE = "helper"
CELERY_TASK_QUEUES = (
    Queue(CELERY_TASK_DEFAULT_QUEUE, routing_key=CELERY_TASK_DEFAULT_QUEUE),
    Queue(ROSTER_HELPER_QUEUE, routing_key=ROSTER_HELPER_QUEUE),
)
CELERY_TASK_ROUTES = {"agents.tasks.prepare_task": {"queue": ROSTER_HELPER_QUEUE}}

# Provider calls are bounded: each attempt has a timeout, retries are counted, and the
# waits between them are capped. The hard limit sits above that worst case, and the
# broker's visibility timeout above the hard limit, so Redis never redelivers a message
# whose task is still legitimately running.
ROSTER_PROVIDER_TIMEOUT = env.float("ROSTER_PROVIDER_TIMEOUT", default=120.0)
ROSTER_PROVIDER_CONNECT_TIMEOUT = env.float("ROSTER_PROVIDER_CONNECT_TIMEOUT", default=10.0)
ROSTER_PROVIDER_MAX_ATTEMPTS = env.int("ROSTER_PROVIDER_MAX_ATTEMPTS", default=3)
ROSTER_RETRY_MAX_WAIT = env.float("ROSTER_RETRY_MAX_WAIT", default=30.0)
_worst_case = ROSTER_PROVIDER_MAX_ATTEMPTS * (ROSTER_PROVIDER_TIMEOUT + ROSTER_RETRY_MAX_WAIT)
CELERY_TASK_TIME_LIMIT = env.int("ROSTER_TASK_TIME_LIMIT", default=int(_worst_case) + 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int(
    "ROSTER_TASK_SOFT_TIME_LIMIT", default=CELERY_TASK_TIME_LIMIT - 30
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int(
        "ROSTER_BROKER_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 300
    ),
    # The embedded SQLite broker is polled; a short interval keeps task pickup snappy.
    "polling_interval": env.float("ROSTER_BROKER_POLLING_INTERVAL", default=0.2),
}
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "ROSTER_BROKER_VISIBILITY_TIMEOUT must be above the task hard time limit "
        f"({CELERY_TASK_TIME_LIMIT}s), or Redis would redeliver running tasks."
    )
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Worker liveness: every worker process writes a heartbeat; a running task whose worker has
# been silent for ROSTER_WORKER_STALE_AFTER seconds is requeued by the sweeper (beat).
ROSTER_WORKER_HEARTBEAT_INTERVAL = env.float("ROSTER_WORKER_HEARTBEAT_INTERVAL", default=10.0)
ROSTER_WORKER_STALE_AFTER = env.float("ROSTER_WORKER_STALE_AFTER", default=60.0)
ROSTER_SWEEP_INTERVAL = env.float("ROSTER_SWEEP_INTERVAL", default=30.0)
# A queued task whose message has not been picked up this long is dispatched again (the
# embedded broker does not redeliver messages taken by a worker that died).
ROSTER_REDISPATCH_AFTER = env.float("ROSTER_REDISPATCH_AFTER", default=600.0)
# How often a task may be requeued after its worker died before it is failed.
ROSTER_MAX_EXECUTIONS = env.int("ROSTER_MAX_EXECUTIONS", default=3)
# A /v1 call's task is held by a web process, which writes no heartbeat: the sweeper fails
# it (its web process died) only once it has run this long, far beyond any real call.
ROSTER_PROXY_STALE_AFTER = env.float("ROSTER_PROXY_STALE_AFTER", default=3600.0)
if ROSTER_PROXY_STALE_AFTER <= ROSTER_WORKER_STALE_AFTER:
    raise ImproperlyConfigured(
        "ROSTER_PROXY_STALE_AFTER must be above ROSTER_WORKER_STALE_AFTER "
        f"({ROSTER_PROXY_STALE_AFTER} <= {ROSTER_WORKER_STALE_AFTER})."
    )

# Fault injection (tests/faults only): "point=probability,..." makes a worker SIGKILL
# itself at those points of a task (agents.failpoints). Never set in production.
try:
    ROSTER_FAILPOINTS = failpoints_parse(env.str("ROSTER_FAILPOINTS", default=""))
except ValueError as exc:
    raise ImproperlyConfigured(f"ROSTER_FAILPOINTS: {exc}") from None

# Periodic schedules live here, in one place.
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-tasks": {
        "task": "agents.tasks.sweep_stale_tasks",
        "schedule": schedule(ROSTER_SWEEP_INTERVAL),
    },
    # Alerts whose queued delivery was lost (broker down at commit) or failed.
    # Threshold alerts a crash lost between a settlement's commit and its alert.
    "sweep-budget-alerts": {
        "task": "billing.tasks.sweep_budget_alerts",
        "schedule": schedule(300),
    },
    "deliver-pending-alerts": {
        "task": "billing.tasks.deliver_pending_alerts",
        "schedule": schedule(300),
    },
}

# --- Roster -------------------------------------------------------------------------------
# Fernet keys for provider secrets, newest first (rotation: prepend a new key, run
# `manage.py rotate_secrets`, then drop the old one). `make run` writes one into .env.
ROSTER_FERNET_KEYS = env.list("ROSTER_FERNET_KEYS", default=[])

ROSTER_MAX_PROMPT_CHARS = env.int("ROSTER_MAX_PROMPT_CHARS", default=100_000)
ROSTER_DEFAULT_MAX_TOKENS = env.int("ROSTER_DEFAULT_MAX_TOKENS", default=1024)
ROSTER_MAX_TOKENS_LIMIT = env.int("ROSTER_MAX_TOKENS_LIMIT", default=32_768)
ROSTER_HTTP_MAX_CONNECTIONS = env.int("ROSTER_HTTP_MAX_CONNECTIONS", default=500)

# Per-credential rate limits (requests and tokens per minute, set on each credential) are
# counted in one place shared by every worker (agents/ratelimit.py): "auto" uses Redis
# when a Redis URL is known (ROSTER_RATE_LIMIT_REDIS_URL, else a Redis CELERY_BROKER_URL)
# and the database otherwise; "redis" and "database" force one.
ROSTER_RATE_LIMIT_BACKEND = env.str("ROSTER_RATE_LIMIT_BACKEND", default="auto")
if ROSTER_RATE_LIMIT_BACKEND not in ("auto", "redis", "database"):
    raise ImproperlyConfigured(
        "ROSTER_RATE_LIMIT_BACKEND must be auto, redis or database, "
        f"got {ROSTER_RATE_LIMIT_BACKEND!r}"
    )
ROSTER_RATE_LIMIT_REDIS_URL = env.str("ROSTER_RATE_LIMIT_REDIS_URL", default="")
# Slots are held this many seconds beyond the minute: a request reaches the provider a
# little after its slot is granted, and the provider counts arrivals.
ROSTER_RATE_LIMIT_MARGIN_SECONDS = env.float("ROSTER_RATE_LIMIT_MARGIN_SECONDS", default=1.0)
if not 0 <= ROSTER_RATE_LIMIT_MARGIN_SECONDS <= 60:
    raise ImproperlyConfigured("ROSTER_RATE_LIMIT_MARGIN_SECONDS must be between 0 and 60")
# How long the limits' "minute" lasts. For tests only: the end-to-end rate limit test
# shortens it to watch the window slide in seconds. Anything but 60 changes what every
# credential's per-minute limits mean.
ROSTER_RATE_LIMIT_WINDOW_SECONDS = env.float("ROSTER_RATE_LIMIT_WINDOW_SECONDS", default=60.0)
if not 1 <= ROSTER_RATE_LIMIT_WINDOW_SECONDS <= 60:
    raise ImproperlyConfigured("ROSTER_RATE_LIMIT_WINDOW_SECONDS must be between 1 and 60")
# A task whose rate limiter is unreachable (Redis down) goes back to the queue and asks
# again after about this many seconds; calls never go out unlimited.
ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY = env.float("ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY", default=5.0)
if not 0 < ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY <= 600:
    raise ImproperlyConfigured("ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY must be in (0, 600] seconds")

# The bundled OpenRouter catalog snapshot, used by the demo seed and offline syncs.
ROSTER_CATALOG_SNAPSHOT = BASE_DIR / "billing" / "data" / "openrouter-models-2026-06.json"
ROSTER_OPENROUTER_MODELS_URL = env.str(
    "ROSTER_OPENROUTER_MODELS_URL", default="https://openrouter.ai/api/v1/models"
)
# OpenRouter's optional attribution header (HTTP-Referer): your office's public URL, if
# you want OpenRouter to show it. Blank sends none.
ROSTER_OPENROUTER_REFERER = env.str("ROSTER_OPENROUTER_REFERER", default="")
# Where the demo's sandbox provider listens.
ROSTER_SANDBOX_URL = env.str("ROSTER_SANDBOX_URL", default="http://127.0.0.1:8765")

# Billing. A provider-reported cost that differs from ours by more than this fraction
# (and more than the absolute floor) raises a drift alert.
ROSTER_COST_DRIFT_TOLERANCE = _decimal_setting("ROSTER_COST_DRIFT_TOLERANCE", "0.01")
ROSTER_COST_DRIFT_FLOOR = _decimal_setting("ROSTER_COST_DRIFT_FLOOR", "0.000001")
# Where budget and drift alerts go: email recipients (comma-separated) and a webhook that
# receives a Slack-compatible JSON body {"text": ...}. Either may be empty.
ROSTER_ALERT_EMAILS = env.list("ROSTER_ALERT_EMAILS", default=[])
ROSTER_ALERT_WEBHOOK_URL = env.str("ROSTER_ALERT_WEBHOOK_URL", default="")
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="roster@localhost")
# Email transport, e.g. smtp://user:password@mail.example.com:587/?tls=True; the default
# prints mail to the console. https://django-environ.readthedocs.io/en/latest/types.html
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))

# The local helper: title, summary, history compression, page text, complexity, done for
# free. `builtin` runs in-process (no model download); `openai_compatible` calls a local
# model server (Ollama, llama.cpp, LM Studio, vLLM) and falls back to builtin when it fails.
# See docs/helper.md.
_helper_backends = ("builtin", "openai_compatible")
ROSTER_HELPER_BACKEND = env.str("ROSTER_HELPER_BACKEND", default="builtin")
if ROSTER_HELPER_BACKEND not in _helper_backends:
    raise ImproperlyConfigured(
        f"ROSTER_HELPER_BACKEND must be one of {', '.join(_helper_backends)}, "
        f"got {ROSTER_HELPER_BACKEND!r}"
    )
# Base URL of the OpenAI-compatible server, up to /v1 (Ollama: http://127.0.0.1:11434/v1).
ROSTER_HELPER_URL = env.str("ROSTER_HELPER_URL", default="")
ROSTER_HELPER_MODEL = env.str("ROSTER_HELPER_MODEL", default="")
# Local servers usually need no key; sent as a bearer token when set.
ROSTER_HELPER_API_KEY = env.str("ROSTER_HELPER_API_KEY", default="")
# A local model that is slower than this is not saving anyone time: builtin answers instead.
ROSTER_HELPER_TIMEOUT = _positive_float_setting("ROSTER_HELPER_TIMEOUT", 20.0)
# Longer inputs are cut down extractively before they reach the local model, whose context
# window is small (Ollama's default is a few thousand tokens) and would silently truncate.
ROSTER_HELPER_MAX_INPUT_TOKENS = _positive_int_setting("ROSTER_HELPER_MAX_INPUT_TOKENS", 3000)
if ROSTER_HELPER_BACKEND == "openai_compatible":
    if not ROSTER_HELPER_URL.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            "ROSTER_HELPER_BACKEND=openai_compatible needs ROSTER_HELPER_URL, the server's "
            f"http(s) base URL such as http://127.0.0.1:11434/v1 (got {ROSTER_HELPER_URL!r})"
        )
    if not ROSTER_HELPER_MODEL:
        raise ImproperlyConfigured(
            "ROSTER_HELPER_BACKEND=openai_compatible needs ROSTER_HELPER_MODEL, the model "
            "name your server knows (for example llama3.2:3b)"
        )

# Fetching pages for tasks that name URLs. Private, loopback, link-local and other
# non-public addresses are refused unless listed here: comma-separated CIDRs
# (10.0.0.0/8, 127.0.0.1) and host names (intranet.example.com, or .example.com for a
# domain and its subdomains).
ROSTER_FETCH_ALLOW = _fetch_allow_setting("ROSTER_FETCH_ALLOW")
# Seconds for one whole fetch: every redirect and the body (name lookups are bounded by the
# system resolver's own timeout).
ROSTER_FETCH_TIMEOUT = _positive_float_setting("ROSTER_FETCH_TIMEOUT", 10.0)
# Bytes read from one page (after decompression); a longer page is refused, not truncated.
ROSTER_FETCH_MAX_BYTES = _positive_int_setting("ROSTER_FETCH_MAX_BYTES", 2 * 1024 * 1024)

# URLs a task may name; each page's text is sent to the role, longer texts are first
# summarised by the helper down to ROSTER_PAGE_MAX_TOKENS (estimated tokens).
ROSTER_TASK_MAX_URLS = _positive_int_setting("ROSTER_TASK_MAX_URLS", 5)
ROSTER_PAGE_MAX_TOKENS = _positive_int_setting("ROSTER_PAGE_MAX_TOKENS", 4000)

# Threads (follow-ups): the earlier turns are sent with each new task. When they come to
# more than ROSTER_THREAD_HISTORY_TOKENS (estimated), older turns are replaced by a helper
# summary so that the history sent is at most ROSTER_THREAD_COMPRESSION_RATIO of the
# budget; the summary is kept and reused by later turns until the history outgrows the
# budget again. See docs/architecture.md.
ROSTER_THREAD_HISTORY_TOKENS = _positive_int_setting("ROSTER_THREAD_HISTORY_TOKENS", 4000)
ROSTER_THREAD_COMPRESSION_RATIO = _fraction_setting("ROSTER_THREAD_COMPRESSION_RATIO", 0.5)

# Checks run before a task is accepted, so that a task for a role that cannot run is
# refused at the door. Pluggable (like AUTH_PASSWORD_VALIDATORS) so that `office` does not
# import the apps that know how a role runs.
ROSTER_TASK_SUBMIT_CHECKS = ["agents.selectors.role_check_runnable"]

# --- People and permissions (docs/people.md) ---
# Staff (the `staff` group) read their own tasks; true lets anyone who may read tasks
# read everyone's. Managers and admins (office.view_all_tasks) always read all.
ROSTER_STAFF_SEE_ALL_TASKS = env.bool("ROSTER_STAFF_SEE_ALL_TASKS", default=False)

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["office.api.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "office.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- Agent API: throttling, schema, shared cache (docs/api.md) ---------------------------
# Requests one API token may make, per second, minute, hour or day ("120/min"); each
# token is counted on its own (office.api.throttling). Counted in the cache below, so
# every web process shares the count.
ROSTER_API_THROTTLE_RATE = env.str("ROSTER_API_THROTTLE_RATE", default="120/min")
if not re.fullmatch(
    r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", ROSTER_API_THROTTLE_RATE
):
    raise ImproperlyConfigured(
        "ROSTER_API_THROTTLE_RATE must be <number>/<second|minute|hour|day>, e.g. 120/min; "
        f"got {ROSTER_API_THROTTLE_RATE!r}"
    )
# The cache must be shared by the web processes (the throttle's counts live in it).
# ROSTER_CACHE_URL names one (redis://host:6379/1, filecache:///path, dbcache://table,
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-cache-url);
# by default it is the Redis of a Redis CELERY_BROKER_URL (keys prefixed "roster"), else
# files under ROSTER_VAR_DIR/cache, which every process on this machine shares.
_cache_url = env.str("ROSTER_CACHE_URL", default="")
if not _cache_url:
    _cache_url = (
        CELERY_BROKER_URL
        if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
        else f"filecache://{VAR_DIR / 'cache'}"
    )
try:
    CACHES = {"default": {**env.cache_url_config(_cache_url), "KEY_PREFIX": "roster"}}
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured(f"ROSTER_CACHE_URL: {exc}") from None

# The OpenAPI schema of the agent API (/api/schema/, pages at /api/docs/ and /api/redoc/).
SPECTACULAR_SETTINGS = {
    "TITLE": "Roster agent API",
    "DESCRIPTION": (
        "Give the office's roles tasks, follow them up, cancel and retry them, and read "
        "roles, prices, usage and budgets. Authenticate with `Authorization: Bearer rst_...`. "
        'Every error is `{"error": {"code", "message", "field"}}`. See docs/api.md.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Only the agent API: the OpenAI-compatible /v1/ endpoints document themselves.
    "PREPROCESSING_HOOKS": ["office.api.schema.only_agent_api"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "office.api.schema.request_bodies_are_closed",
        "office.api.schema.throttled_answers_say_when",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env.str("ROSTER_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "agents.redaction.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httpx logs every request line at INFO; that is noise at our volumes.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Health and metrics (docs/operations.md) ----------------------------------------------
# Seconds each /healthz check may take to connect and answer (broker connect and reads).
ROSTER_HEALTH_TIMEOUT = _positive_float_setting("ROSTER_HEALTH_TIMEOUT", 2.0)
# Bearer token Prometheus must send to read /metrics (`authorization: credentials:` in the
# scrape config). Empty: /metrics is served only when DJANGO_DEBUG is true.
ROSTER_METRICS_TOKEN = env.str("ROSTER_METRICS_TOKEN", default="")
