"""Django settings. Every value comes from the environment through ``env``.

With nothing set, the platform runs on a bare machine: an SQLite file and a
filesystem Celery broker, both under ``var/``.
"""

import datetime as dt
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from oo_ml.env import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("OO_ML_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env("DJANGO_DEBUG", False)
# For a development machine only (DJANGO_DEBUG=true): never accepted with DEBUG off.
DEVELOPMENT_SECRET_KEY = "insecure-dev-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = env("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY in (DEVELOPMENT_SECRET_KEY, ""):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set: with DEBUG off the built-in development key "
        "is refused. Set DJANGO_SECRET_KEY to a long random value (`make run` keeps "
        "one in var/secret-key), or DJANGO_DEBUG=true on a development machine."
    )
ALLOWED_HOSTS = env("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"], list)
CSRF_TRUSTED_ORIGINS = env("DJANGO_CSRF_TRUSTED_ORIGINS", [], list)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "oo_ml",
    "policies",
    "profiles",
    "simulations",
    "generation",
]

MIDDLEWARE = [
    "oo_ml.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # A call with a token goes to its view from here: what follows serves the
    # admin's pages (oo_ml/middleware.py).
    "oo_ml.middleware.TokenApiMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "oo_ml.urls"
WSGI_APPLICATION = "oo_ml.wsgi.application"
APPEND_SLASH = False

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
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'oo_ml.sqlite3'}"),
        conn_max_age=env("DATABASE_CONN_MAX_AGE", 600),
        # Off by default: the check is a SELECT 1 before every request (5% of
        # /score's cost). Without it, a worker whose connection broke (say, the
        # database restarted) fails one request, then reconnects.
        conn_health_checks=env("DATABASE_CONN_HEALTH_CHECKS", False),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters travel apart from the SQL, and a statement a connection has sent
    # five times is prepared, so PostgreSQL stops parsing and planning the hot
    # statements (+10-20% requests/s, docs/performance.md). Turn preparing off
    # behind a pooler that cannot keep prepared statements (PgBouncer before 1.21
    # in transaction mode).
    DATABASES["default"]["OPTIONS"] = {
        "server_side_binding": True,
        "prepare_threshold": 5 if env("DATABASE_PREPARED_STATEMENTS", True) else None,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers
    # wait for each other instead of failing on a lock upgrade.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _cache(url: str) -> dict:
    """The shared cache (failed-login and failed-token counters): every web
    process, on every machine, must see the same counts. The database by
    default, so it needs no server; Redis when OO_ML_CACHE_URL names one."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
        }
    if url == "locmem://":  # one process only: tests, a single development server
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if url in ("", "db://"):
        return {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "oo_ml_cache",  # created by oo_ml's migrations
        }
    raise ImproperlyConfigured(
        f"OO_ML_CACHE_URL={url!r}: expected db://, redis://host:port/db or locmem://"
    )


CACHES = {"default": _cache(env("OO_ML_CACHE_URL", ""))}

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before its password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# The admin's dates and times: 24-hour, with seconds (oo_ml/formats/en).
FORMAT_MODULE_PATH = ["oo_ml.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Behind TLS (README, "Production"): each is off by default, so plain HTTP on
# 127.0.0.1 (tests, benchmarks, make run) keeps working.
SECURE_SSL_REDIRECT = env("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # load balancers probe it over plain HTTP
_PROXY_SSL_HEADER = env("DJANGO_SECURE_PROXY_SSL_HEADER", "")  # e.g. X-Forwarded-Proto
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
    if _PROXY_SSL_HEADER
    else None
)
SECURE_HSTS_SECONDS = env("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env("DJANGO_CSRF_COOKIE_SECURE", False)

# Request bodies over this answer 413 before any view runs (docs/api.md).
MAX_BODY_BYTES = env("OO_ML_MAX_BODY_BYTES", 64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES
MAX_CANDIDATES = env("OO_ML_MAX_CANDIDATES", 100)
# A service token is re-checked against the database at most this often per process.
TOKEN_CACHE_SECONDS = env("OO_ML_TOKEN_CACHE_SECONDS", 30.0)
# Proxies in front of the app that append the client's address to
# X-Forwarded-For; 0 means clients connect directly (REMOTE_ADDR is theirs).
TRUSTED_PROXIES = env("OO_ML_TRUSTED_PROXIES", 0)
# Brute force: an address with this many failed token authentications within
# the window is answered 429 for the rest of it (counted in the shared cache).
TOKEN_FAILURE_LIMIT = env("OO_ML_TOKEN_FAILURE_LIMIT", 20)
TOKEN_FAILURE_WINDOW_SECONDS = env("OO_ML_TOKEN_FAILURE_WINDOW_SECONDS", 600)
# Admin logins (django-axes): a username is locked out from an address after this
# many failures, until that many seconds pass without another failure.
AXES_FAILURE_LIMIT = env("OO_ML_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = dt.timedelta(seconds=env("OO_ML_LOGIN_LOCKOUT_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "oo_ml.auth.client_ip"
HISTORY_LIMIT = 100
# A stored profile not recounted from the events for this long is recounted when
# read: events add to its counts as they arrive, the recount takes out those that
# left the 30-day window (docs/features.md).
PROFILE_TTL_SECONDS = env("OO_ML_PROFILE_TTL_SECONDS", 900)
# Rewards: the range /reward accepts, and what a second reward for one decision
# does: "first" refuses it (409 already_rewarded), "sum" applies every one.
REWARD_MIN = env("OO_ML_REWARD_MIN", -1.0)
REWARD_MAX = env("OO_ML_REWARD_MAX", 1.0)
REWARD_AGGREGATION = env("OO_ML_REWARD_AGGREGATION", "first")
# Days the logs (decisions, rewards, events) are kept; beat's logs.retain drops
# older days (docs/logs.md).
LOG_RETENTION_DAYS = env("OO_ML_LOG_RETENTION_DAYS", 90)
if REWARD_AGGREGATION not in ("first", "sum"):
    raise ImproperlyConfigured(
        f"OO_ML_REWARD_AGGREGATION must be first or sum, not {REWARD_AGGREGATION!r}"
    )
if LOG_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("OO_ML_LOG_RETENTION_DAYS must be at least 1")
if not REWARD_MIN < REWARD_MAX:
    raise ImproperlyConfigured("OO_ML_REWARD_MIN must be below OO_ML_REWARD_MAX")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oo_ml.auth.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["oo_ml.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "oo_ml.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "oo_ml decision API",
    "DESCRIPTION": "Per-user contextual bandits that pick which task to tip.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its page need a token or an admin login, like the API.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "oo_ml.schema.tag_staff_routes",
    ],
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "broker"),
        "data_folder_out": str(VAR_DIR / "broker"),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        # Broadcasts (worker control) keep their exchange table here, not in
        # the working directory.
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
# Where tasks are sent, workers' own sends included (a run's fan-out).
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env("CELERY_TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = env("CELERY_TASK_SOFT_TIME_LIMIT", 1700)
# A run has at most this many chunks: its start sends one task, which a worker
# fans out into one task per chunk.
SIMULATION_MAX_CHUNKS = env("OO_ML_SIMULATION_MAX_CHUNKS", 1000)
# One simulation chunk's hard limit (seconds); its soft limit is 30 s less. A run
# that has completed no chunk for this long has its pending chunks sent again.
SIMULATION_CHUNK_TIME_LIMIT = env("OO_ML_SIMULATION_CHUNK_TIME_LIMIT", 600)
# How often a hybrid policy's shared model is refit from the reward log.
SHARED_MODEL_REFIT_SECONDS = env("OO_ML_SHARED_MODEL_REFIT_SECONDS", 600.0)
# How often the shadows' off-policy values (the control room's "value if
# active") are computed and stored: the page shows the stored ones.
SHADOW_VALUE_SECONDS = env("OO_ML_SHADOW_VALUE_SECONDS", 300.0)
# The promotion gate: a shadow passes when the 95% interval of its paired
# difference from the active policy (mean reward per decision) starts at
# -GATE_MARGIN or above. 0: it must not be worse.
GATE_MARGIN = env("OO_ML_GATE_MARGIN", 0.0)
if not 0 <= GATE_MARGIN < float("inf"):
    raise ImproperlyConfigured(
        f"OO_ML_GATE_MARGIN={GATE_MARGIN!r}: a margin is a number >= 0"
    )
# The LLM (docs/llm.md): any server speaking the OpenAI-compatible chat
# completions API (LiteLLM's proxy, vLLM, Ollama). Off while the base URL is unset:
# the `llm` judge and /generate then say so.
LLM_BASE_URL = env("OO_ML_LLM_BASE_URL", "").strip().rstrip("/")
LLM_MODEL = env("OO_ML_LLM_MODEL", "").strip()
LLM_API_KEY = env("OO_ML_LLM_API_KEY", "")
LLM_TIMEOUT_SECONDS = env("OO_ML_LLM_TIMEOUT_SECONDS", 30.0)
LLM_RETRIES = env("OO_ML_LLM_RETRIES", 2)
LLM_CONCURRENCY = env("OO_ML_LLM_CONCURRENCY", 4)
if LLM_BASE_URL and not LLM_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        f"OO_ML_LLM_BASE_URL={LLM_BASE_URL!r} must start with http:// or https://"
    )
if LLM_BASE_URL and not LLM_MODEL:
    raise ImproperlyConfigured("OO_ML_LLM_MODEL must be set with OO_ML_LLM_BASE_URL")
if not 0 < LLM_TIMEOUT_SECONDS <= 600:
    raise ImproperlyConfigured("OO_ML_LLM_TIMEOUT_SECONDS must be in (0, 600]")
if not 0 <= LLM_RETRIES <= 10:
    raise ImproperlyConfigured("OO_ML_LLM_RETRIES must be 0 to 10")
if not 1 <= LLM_CONCURRENCY <= 64:
    raise ImproperlyConfigured("OO_ML_LLM_CONCURRENCY must be 1 to 64")
# The prompt version /generate uses when a request names none (generation/prompts.py).
PROMPT_VERSION = env("OO_ML_PROMPT_VERSION", "v1").strip()
# Run by `celery -A oo_ml beat` (`make run` starts its worker with --beat). Every
# half TTL it recounts the profiles over half a TTL old, so a profile is
# recounted before it goes stale and /score seldom recounts one itself. Every
# minute it looks for simulation runs whose chunks a worker lost (an embedded
# broker does not deliver a killed worker's message again).
CELERY_BEAT_SCHEDULE = {
    # Hourly, both idempotent: partitions a week ahead, and retention (which
    # drops a day's partitions once the day is past it).
    "log-partitions-ahead": {"task": "logs.partitions_ensure", "schedule": 3600},
    "log-retention": {"task": "logs.retain", "schedule": 3600},
    "refresh-stale-profiles": {
        "task": "profiles.refresh_stale",
        "schedule": PROFILE_TTL_SECONDS / 2,
    },
    "resume-stalled-simulations": {
        "task": "simulations.resume_stalled",
        "schedule": 60,
    },
    "refit-shared-models": {
        "task": "policies.refit_shared_models",
        "schedule": SHARED_MODEL_REFIT_SECONDS,
    },
    "refresh-shadow-values": {
        "task": "policies.refresh_shadow_values",
        "schedule": SHADOW_VALUE_SECONDS,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO: one line per LLM call is noise; the
    # client logs its failures itself.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
