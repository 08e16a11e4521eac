"""Settings for every process (web, worker, tests), read from environment variables.

The defaults serve a local run on one machine: SQLite, Redis on localhost, the built-in
`tiny` model, media under ./media. Production sets the same variables to other values.
"""

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
import drf_spectacular_sidecar
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from servestatic.compress import Compressor

from imagegen.engine.catalog import parse_models
from imagegen.limits import DEFAULT_MAX_REQUEST_BYTES, MAX_UPLOAD_BYTES

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state that is neither code nor media: the local secret key, SQLite files, model cache.
VAR_DIR = Path(os.environ.get("IMAGEGEN_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def parse_sizes(name: str, value: str) -> list[tuple[int, int]]:
    """Sizes written "512x512,768x512" (width x height, each a multiple of 8) as (width, height) pairs."""
    sizes = []
    for size in value.replace(" ", "").split(","):
        width, _, height = size.lower().partition("x")
        if not (
            width.isdigit()
            and height.isdigit()
            and int(width) % 8 == 0 == int(height) % 8
            and int(width) > 0 < int(height)
        ):
            raise ImproperlyConfigured(f"{name} must list sizes such as 512x512 (multiples of 8), not {value!r}.")
        sizes.append((int(width), int(height)))
    return sizes


def local_secret_key() -> str:
    """A key generated on first use and kept in var/, so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or local_secret_key()
# Off unless DEBUG=1: no page, static file or error page depends on it (`make run` included).
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# Behind a reverse proxy: the addresses it connects from ("*" when nothing else can reach the web
# port). uvicorn reads the same variable: it takes the client's address and scheme from
# X-Forwarded-For and X-Forwarded-Proto only on connections from there (the log-in lockout counts
# per address), and Django trusts X-Forwarded-Proto, so that request.is_secure() holds and the API
# hands out https:// and wss:// URLs. Empty (the default): nobody is trusted with those headers.
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
if FORWARDED_ALLOW_IPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over HTTPS (by the proxy or otherwise): cookies only over HTTPS, plain HTTP redirected,
# and browsers told to use HTTPS only (HSTS) for IMAGEGEN_HSTS_SECONDS (a year; 0 while trying
# HTTPS out, since browsers remember it). The health check asks over plain HTTP from inside.
IMAGEGEN_HTTPS = env_bool("IMAGEGEN_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = IMAGEGEN_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
SECURE_HSTS_SECONDS = int(os.environ.get("IMAGEGEN_HSTS_SECONDS", "31536000")) if IMAGEGEN_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = bool(SECURE_HSTS_SECONDS)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "servestatic",
    "channels",
    "django_htmx",
    "template_partials",
    "axes",
    "imagegen",
    "img2img",
    "refinement",
    # Last, as its docs ask: deleting an Image (a run, a user…) deletes its files after the commit.
    "django_cleanup.apps.CleanupConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Turns a locked-out log-in into the lockout page (imagegen.auth.login_locked_out_response).
    # Outside BearerTokenMiddleware, so that it runs synchronously with the rest (see below).
    "axes.middleware.AxesMiddleware",
    # Innermost, because it is synchronous only: under ASGI, Django runs every middleware outside
    # the innermost synchronous one in synchronous mode on one thread, where each async-capable
    # middleware inside it would cost thread switches per request. CSRF still sees what it sets,
    # since CsrfViewMiddleware checks in process_view, after every middleware has been entered.
    # A request carrying a valid API token is not cookie-authenticated, so it skips the CSRF check.
    "imagegen.auth.BearerTokenMiddleware",
]

ROOT_URLCONF = "imagegen.urls"
ASGI_APPLICATION = "imagegen.asgi.application"

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
                "imagegen.context_processors.engine_info",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        # Kept open between requests, SQLite included: the web server's request threads are kept
        # too (imagegen.handlers), so a page does not open the file and run the PRAGMAs below again
        # (a tenth of the web processes' time under load, bench/web_load.py).
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Web and worker write the same file: WAL lets readers run beside the writer, and
        # IMMEDIATE transactions queue writers instead of failing with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not :memory:, so the test suite's worker and web processes share the test database;
    # one per test run, so two runs on one machine never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"imagegen-test-{os.getpid()}.sqlite3")}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Rendered parts of pages that never change once written (a finished run's card), per process.
    "fragments": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "fragments",
        "OPTIONS": {"MAX_ENTRIES": 5000},
    },
    # Rendered parts of pages (a gallery grid, a run's card and versions), per process, keyed by a
    # digest of the rows they show (imagegen.selectors.jobs_state), so any change by any process
    # is a new key. They expire after IMAGEGEN_PAGE_CACHE_SECONDS (0: no caching) to keep the
    # cards' ages ("3 minutes ago") current.
    "pages": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "pages",
        "TIMEOUT": float(os.environ.get("IMAGEGEN_PAGE_CACHE_SECONDS", "10")),
        "OPTIONS": {"MAX_ENTRIES": 1000},
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's database sessions, read with plain SQL on each request (imagegen/sessions.py).
SESSION_ENGINE = "imagegen.sessions"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "imagegen:generate"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Swagger UI for the API docs page (/api/docs), from its PyPI distribution: served with the rest,
# so no asset comes from a CDN. Only its own folder (the package also carries Redoc).
SWAGGER_UI_DIR = (
    Path(drf_spectacular_sidecar.__file__).parent / "static" / "drf_spectacular_sidecar" / "swagger-ui-dist"
)
STATICFILES_DIRS = [BASE_DIR / "static", ("swagger-ui", SWAGGER_UI_DIR)]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
# Media is never served as plain static files: every image goes through a view that checks
# its owner (imagegen.views.image_file).
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Names with a hash of the content (css/app.3f2a…css), so browsers may keep them for a year,
    # and a gzip and a Brotli copy of each beside it; `collectstatic` writes them.
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
}
# IMAGEGEN_STORAGE=s3 keeps media in an S3-compatible bucket (AWS, MinIO, R2…) instead. Objects
# stay private and no bucket URL is ever handed out: downloads still go through the owner-checked
# view, which reads the object server-side. Unset keys fall back to boto3's own credential chain.
IMAGEGEN_STORAGE = os.environ.get("IMAGEGEN_STORAGE", "local")
if IMAGEGEN_STORAGE == "s3":
    if not os.environ.get("AWS_STORAGE_BUCKET_NAME"):
        raise ImproperlyConfigured("IMAGEGEN_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME (the bucket for media).")
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"],
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
elif IMAGEGEN_STORAGE != "local":
    raise ImproperlyConfigured(f"IMAGEGEN_STORAGE must be 'local' or 's3', not {IMAGEGEN_STORAGE!r}.")

# Redis is both the Celery broker and the Channels layer.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    # After a Redis restart the pooled connections are dead: check idle ones before
                    # use and retry once on a new connection, so no WebSocket handshake fails for it.
                    "health_check_interval": 10,
                    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
                    "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                }
            ],
            "prefix": "imagegen",
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# A job is acknowledged only when it ends, so a worker that dies mid-job leaves it to another.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "light"
# Every kind of job that needs the model goes to the GPU workers.
CELERY_TASK_ROUTES = {
    "imagegen.tasks.run_job": {"queue": "gpu"},
    "refinement.tasks.refine_job": {"queue": "gpu"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the longest job, or Redis hands an unacknowledged job to a second worker.
    "visibility_timeout": int(os.environ.get("IMAGEGEN_VISIBILITY_TIMEOUT", 6 * 3600)),
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The diffusion engine.
IMAGEGEN_MODEL = os.environ.get("IMAGEGEN_MODEL", "tiny")
# The models users choose from, "source=label; source=label" (a folder or a repo id each; the first
# is the default). Empty: IMAGEGEN_MODEL alone.
IMAGEGEN_MODELS = os.environ.get("IMAGEGEN_MODELS", "")
try:
    parse_models(IMAGEGEN_MODELS or IMAGEGEN_MODEL)
except ValueError as error:
    raise ImproperlyConfigured(f"IMAGEGEN_MODELS: {error}") from None
# How much memory (GB) a worker's loaded models may take together before it unloads the one used
# longest ago; empty: half of the GPU's memory (or, without one, of the machine's).
IMAGEGEN_MODEL_MEMORY_GB = float(os.environ.get("IMAGEGEN_MODEL_MEMORY_GB") or 0) or None
IMAGEGEN_DEVICE = os.environ.get("IMAGEGEN_DEVICE", "auto")
IMAGEGEN_DTYPE = os.environ.get("IMAGEGEN_DTYPE", "auto")
IMAGEGEN_MODEL_CACHE = Path(os.environ.get("IMAGEGEN_MODEL_CACHE", VAR_DIR / "models"))
# An inpainting checkpoint (a folder or a repo id, e.g. stable-diffusion-v1-5/stable-diffusion-inpainting)
# for regional refinement; empty: the model's own UNet inpaints, through a pipeline sharing its weights.
IMAGEGEN_INPAINT_MODEL = os.environ.get("IMAGEGEN_INPAINT_MODEL", "")
# Local IP-Adapter weights for subject repair's reference image, in the h94/IP-Adapter layout: the
# weights file (e.g. /models/IP-Adapter/models/ip-adapter_sd15.safetensors) with its image encoder in
# image_encoder/ beside it. Empty: reference-only attention, which needs no extra weights.
IMAGEGEN_IP_ADAPTER = os.environ.get("IMAGEGEN_IP_ADAPTER", "")
# LoRAs (<name>.safetensors, applied with <lora:name:weight> in a prompt) and, in its embeddings/
# sub-folder, textual-inversion embeddings (called by name), as AUTOMATIC1111 keeps them. Web
# processes read it to check prompts, workers to apply them: all must see the same folder.
# Empty: none offered.
IMAGEGEN_LORA_DIR = os.environ.get("IMAGEGEN_LORA_DIR", "")
# How strongly results follow the reference through the IP-Adapter: 0 not at all, 1 as trained.
IMAGEGEN_IP_ADAPTER_SCALE = float(os.environ.get("IMAGEGEN_IP_ADAPTER_SCALE") or "0.6")
if IMAGEGEN_IP_ADAPTER_SCALE < 0:
    raise ImproperlyConfigured(f"IMAGEGEN_IP_ADAPTER_SCALE must be 0 or more, not {IMAGEGEN_IP_ADAPTER_SCALE}.")
# Workers lower their CPU priority by this much (0: not at all), so pages stay quick on a
# machine where a worker computes on the CPU beside the web server.
IMAGEGEN_WORKER_NICE = int(os.environ.get("IMAGEGEN_WORKER_NICE", "10"))
# Compiled mode: at start each worker compiles its UNet (torch.compile, channels_last, fused QKV)
# and warms it up at each of IMAGEGEN_WARM_SIZES, so no job pays the compile. "auto": on with a
# CUDA GPU (about 5× the steps a second of eager on an H100), off elsewhere; "on" or "off" to choose.
IMAGEGEN_COMPILE = os.environ.get("IMAGEGEN_COMPILE", "auto")
if IMAGEGEN_COMPILE not in ("auto", "on", "off"):
    raise ImproperlyConfigured(f"IMAGEGEN_COMPILE must be auto, on or off, not {IMAGEGEN_COMPILE!r}.")
# Empty: the default model's own square (512x512 for SD 1.x, 1024x1024 for SDXL).
_warm_sizes = os.environ.get("IMAGEGEN_WARM_SIZES", "")
IMAGEGEN_WARM_SIZES = parse_sizes("IMAGEGEN_WARM_SIZES", _warm_sizes) if _warm_sizes else []
# Images of compatible queued jobs (same model, pipeline and strength, size, steps, sampler and
# guidance) a worker makes in one pipeline call; 0 or unset: 8 on a CUDA GPU, 1 (no batching) elsewhere.
IMAGEGEN_MAX_BATCH = int(os.environ.get("IMAGEGEN_MAX_BATCH") or "0")
# Every Nth step the worker sends a small preview image with its progress event (0: never), at
# most as often as progress is pushed.
IMAGEGEN_PREVIEW_EVERY = int(os.environ.get("IMAGEGEN_PREVIEW_EVERY", "5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "imagegen": {"level": os.environ.get("IMAGEGEN_LOG_LEVEL", "INFO")},
    },
}

# The web server serves static files itself (through ServeStatic, compressed, cached for ten years
# under hashed names, in front of Django: imagegen.staticfiles) unless a reverse proxy in front of it
# does, so a static file costs no middleware, session or database lookup.
SERVE_STATIC = env_bool("IMAGEGEN_SERVE_STATIC", True)
# Swagger UI's source maps (2 MB) are for browser developer tools only: left uncompressed, which
# keeps collectstatic's Brotli pass about 20 s shorter.
SERVESTATIC_SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")

# The largest request body the web server reads (imagegen.bodylimit answers 413 beyond it).
IMAGEGEN_MAX_REQUEST_BYTES = int(os.environ.get("IMAGEGEN_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES))
if IMAGEGEN_MAX_REQUEST_BYTES < MAX_UPLOAD_BYTES:
    raise ImproperlyConfigured(
        f"IMAGEGEN_MAX_REQUEST_BYTES must be at least the upload limit ({MAX_UPLOAD_BYTES} bytes), "
        f"not {IMAGEGEN_MAX_REQUEST_BYTES}."
    )
# A failed CSRF check on the API answers JSON like every other API error; pages keep Django's page.
CSRF_FAILURE_VIEW = "imagegen.errors.csrf_failure"

# Generations each user may start a day (runs of every kind); the admin can set it per user.
IMAGEGEN_DAILY_QUOTA = int(os.environ.get("IMAGEGEN_DAILY_QUOTA", "500"))
# Fair use, per user (imagegen.services.quota): jobs of every kind queued or running at once, and
# jobs submitted within any minute. 0: no limit.
IMAGEGEN_MAX_ACTIVE_JOBS = int(os.environ.get("IMAGEGEN_MAX_ACTIVE_JOBS", "4"))
IMAGEGEN_SUBMISSIONS_PER_MINUTE = int(os.environ.get("IMAGEGEN_SUBMISSIONS_PER_MINUTE", "10"))

# Recovery: a running job whose worker stopped sending heartbeats is given to another worker,
# at most IMAGEGEN_MAX_ATTEMPTS times in all; queued jobs whose message never reached the broker
# are sent again. `manage.py housekeeping` (started by `make run`) does this every few seconds.
IMAGEGEN_MAX_ATTEMPTS = int(os.environ.get("IMAGEGEN_MAX_ATTEMPTS", "3"))
IMAGEGEN_HEARTBEAT_INTERVAL = float(os.environ.get("IMAGEGEN_HEARTBEAT_INTERVAL", "5"))
IMAGEGEN_HEARTBEAT_TIMEOUT = float(os.environ.get("IMAGEGEN_HEARTBEAT_TIMEOUT", "60"))
IMAGEGEN_RESEND_QUEUED_AFTER = float(os.environ.get("IMAGEGEN_RESEND_QUEUED_AFTER", "300"))
IMAGEGEN_HOUSEKEEPING_INTERVAL = float(os.environ.get("IMAGEGEN_HOUSEKEEPING_INTERVAL", "5"))
# A request should not hang while Redis is down: fail fast, keep the job queued, send it later.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

# Log-in lockout (django-axes, which hooks authenticate() itself, so /login/ and /admin/login/
# alike): IMAGEGEN_LOGIN_MAX_FAILURES failures of one username from one address within
# IMAGEGEN_LOGIN_LOCKOUT_SECONDS lock out that pair, and only that pair, until the window has
# passed since its last failure. Locking the username everywhere would let any stranger keep the
# administrator out by guessing wrong on purpose; locking the address alone would let one shared
# address (an office, a proxy that is not configured) lock everyone out. The client address is
# REMOTE_ADDR, which uvicorn takes from X-Forwarded-For only for a trusted proxy (FORWARDED_ALLOW_IPS).
# `manage.py axes_reset` (or axes_reset_username, axes_reset_ip) lifts lockouts at once.
# imagegen.auth.UserBackend is Django's ModelBackend with a cheaper read of each request's user.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "imagegen.auth.UserBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("IMAGEGEN_LOGIN_MAX_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(seconds=int(os.environ.get("IMAGEGEN_LOGIN_LOCKOUT_SECONDS", "900")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "imagegen.auth.login_locked_out_response"
# No header is read here: behind a proxy, uvicorn has put the client's address in REMOTE_ADDR.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
