"""docker-compose.yml and the Dockerfile against the app they deploy.

Nothing here runs Docker: the files are parsed (YAML anchors resolved by the loader, ${VAR}
interpolated the way Compose does it) and compared with what the code reads, routes and serves,
so a renamed setting, queue, command or path fails here instead of on a server.
"""

import importlib
import inspect
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import dj_database_url
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "housekeeping", "worker-cpu")
WORKERS = ("worker", "worker-cpu")
# Variables read by libraries rather than imagegen/settings.py.
EXTERNAL_VARIABLES = {"HF_HOME"}
# The Dockerfile's ENV paths, each of which must be a volume (state that outlives the image).
STATE_PATHS = ("MEDIA_ROOT", "IMAGEGEN_MODEL_CACHE", "IMAGEGEN_VAR_DIR", "HF_HOME")
ESSENTIAL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "IMAGEGEN_MODEL", "ALLOWED_HOSTS", "DEBUG")
# What `docker compose up` needs in .env (README "Deploy"); nothing else has to be set.
DOT_ENV = {"SECRET_KEY": "a-secret-from-dot-env", "POSTGRES_PASSWORD": "db0secret", "REDIS_PASSWORD": "redis0secret"}


# --- reading the files ---


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group("name"), match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if operator in (":-", "-"):
            unset = value is None or (operator == ":-" and value == "")
            return argument if unset else value
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                raise LookupError(f"{name}: {argument}")
            return value
        return value or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)"
    return re.sub(pattern, lambda m: env.get(m.group("bare"), "") if m.group("bare") else replace(m), value)


def environment(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    """The service's container environment as Compose would pass it, with `env` as the shell's."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = DOT_ENV if env is None else env
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def argv(command) -> list[str]:
    return list(command) if isinstance(command, list) else shlex.split(command)


def options(args: list[str]) -> dict[str, str]:
    """`--name=value`, `--name value` and `-x value` options of a command line."""
    found: dict[str, str] = {}
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            name, equals, value = arg.partition("=")
            if not equals and index + 1 < len(args) and not args[index + 1].startswith("-"):
                value = args[index + 1]
            found[name] = value
    return found


def healthcheck_command(service: dict) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test should start with CMD or CMD-SHELL: {test}"
    return " ".join(test[1:])


def mounts(service: dict) -> dict[str, str]:
    """Container path -> source of each of the service's volumes."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [rest for name, rest in dockerfile_instructions() if name == keyword]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for rest in dockerfile("ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile("CMD")
    return yaml.safe_load(cmd) if cmd.startswith("[") else shlex.split(cmd)


def settings_variables() -> set[str]:
    """Environment variables imagegen/settings.py reads."""
    source = inspect.getsource(importlib.import_module("imagegen.settings"))
    pattern = (
        r"""(?:os\.environ\.get|os\.getenv|env_bool|env_list)\(\s*["'](\w+)["']|os\.environ\[\s*["'](\w+)["']\s*\]"""
    )
    return {a or b for a, b in re.findall(pattern, source)}


def web_port(args: list[str]) -> str:
    assert "uvicorn" in args[:3], f"not a uvicorn command: {args}"
    assert args[-1] == "imagegen.asgi:application", f"uvicorn should serve imagegen.asgi:application: {args}"
    found = options(args)
    assert found.get("--host") == "0.0.0.0", f"uvicorn must listen on all interfaces: {args}"
    assert found.get("--lifespan") == "off", f"Django has no lifespan events: {args}"
    return found.get("--port")


def gpu_queue() -> str:
    return settings.CELERY_TASK_ROUTES["imagegen.tasks.run_job"]["queue"]


# --- services ---


def test_every_service_is_there(services):
    assert {"redis", "db", "migrate", "web", "worker", "housekeeping", "worker-cpu"} <= set(services)
    # `docker compose up` starts these; only the CPU worker waits for `--profile cpu`.
    for name in ("redis", "db", "migrate", "web", "worker", "housekeeping"):
        assert not services[name].get("profiles"), f"{name} would not start with a plain `docker compose up`"
    assert services["worker-cpu"].get("profiles") == ["cpu"]


def test_app_services_run_the_app_image(services):
    web = services["web"]
    assert web["build"]["context"] == ".", "the app image is built from this repository"
    for name in ("migrate", "housekeeping", "worker-cpu"):
        assert services[name]["image"] == web["image"], f"{name} runs another image than web"
        assert services[name]["build"] == web["build"], f"{name} is built differently from web"
    # The GPU worker: the same Dockerfile with CUDA torch, under its own tag (the same tag for
    # two different builds would have each overwrite the other).
    worker = services["worker"]
    assert worker["build"]["context"] == web["build"]["context"]
    assert worker["build"].get("dockerfile", "Dockerfile") == web["build"].get("dockerfile", "Dockerfile")
    assert worker["image"] != web["image"]


def test_migrations_run_once_before_the_app_starts(services):
    migrate = services["migrate"]
    assert argv(migrate["command"])[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in argv(migrate["command"]), "a migration prompt would hang the deployment"
    # A restart policy on a one-shot command would run it again and again.
    assert migrate.get("restart", "no") in ("no", "on-failure"), migrate.get("restart")
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker", "housekeeping", "worker-cpu"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["db"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


# --- settings ---


def test_settings_scan_finds_what_settings_read():
    # Guards the regular expression: if it stopped matching, the next test would prove nothing.
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "MEDIA_ROOT"} <= settings_variables()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_is_what_settings_read(services, name):
    env = environment(services[name])
    unknown = set(env) - settings_variables() - EXTERNAL_VARIABLES
    assert not unknown, f"{name} sets variables imagegen/settings.py never reads (a typo?): {sorted(unknown)}"
    missing = set(ESSENTIAL_VARIABLES) - set(env)
    assert not missing, f"{name} falls back to local defaults (SQLite, a local Redis, ...) for {sorted(missing)}"
    assert env["DEBUG"].lower() in ("false", "0", "no", "off"), "DEBUG must be off on a server"


def test_all_app_services_share_settings(services):
    reference = services["web"].get("environment")
    for name in APP_SERVICES:
        assert services[name].get("environment") == reference, f"{name} has other settings than web"


def test_secret_key_must_be_given(services):
    # No default: a key written in this file would be the same on every installation.
    with pytest.raises(LookupError):
        environment(services["web"], env={})
    assert environment(services["web"], env={**DOT_ENV, "SECRET_KEY": "from-env"})["SECRET_KEY"] == "from-env"


def test_web_healthcheck_host_is_always_allowed(services):
    # The healthcheck calls 127.0.0.1; a deployer setting ALLOWED_HOSTS to the site's name must
    # not turn it into a 400 (and the web service into "unhealthy").
    for shell in (DOT_ENV, {**DOT_ENV, "ALLOWED_HOSTS": "images.example.com"}):
        allowed = environment(services["web"], env=shell)["ALLOWED_HOSTS"].split(",")
        assert "127.0.0.1" in allowed, allowed
    allowed = environment(services["web"], env={**DOT_ENV, "ALLOWED_HOSTS": "images.example.com"})
    assert "images.example.com" in allowed["ALLOWED_HOSTS"].split(",")
    assert "localhost" in environment(services["web"])["ALLOWED_HOSTS"].split(",")


def test_model_defaults_to_the_built_in_one(services):
    assert environment(services["worker"])["IMAGEGEN_MODEL"] == "tiny"
    chosen = environment(services["worker"], env={**DOT_ENV, "IMAGEGEN_MODEL": "some/model"})
    assert chosen["IMAGEGEN_MODEL"] == "some/model"


def test_database_is_the_db_service_with_its_password(services):
    env = environment(services["web"])
    database = dj_database_url.parse(env["DATABASE_URL"])
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] == "db" and "db" in services
    assert int(database["PORT"] or 5432) == 5432
    db = services["db"]
    db_env = environment(db)
    assert db["image"].startswith("postgres:")
    assert database["NAME"] == db_env.get("POSTGRES_DB", db_env.get("POSTGRES_USER", "postgres"))
    assert database["USER"] == db_env.get("POSTGRES_USER", "postgres")
    # The app logs in with the password the server was given, and the server trusts nobody.
    assert database["PASSWORD"] == db_env["POSTGRES_PASSWORD"] == DOT_ENV["POSTGRES_PASSWORD"]
    assert db_env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256") not in ("trust", "password", "md5")
    assert "/var/lib/postgresql/data" in mounts(db), "the database must live in a volume"


@pytest.mark.parametrize("name, server", [("POSTGRES_PASSWORD", "db"), ("REDIS_PASSWORD", "redis")])
def test_passwords_must_be_given(services, name, server):
    # No default: a password written in this file would be the same on every installation.
    without = {key: value for key, value in DOT_ENV.items() if key != name}
    for service in ("web", server):
        with pytest.raises(LookupError, match=name):
            environment(services[service], env=without)


def container_settings(service: dict, shell: dict[str, str]) -> dict:
    """imagegen.settings loaded in a fresh process with only the container's environment."""
    env = {"PATH": os.environ["PATH"], **dockerfile_env(), **environment(service, shell)}
    names = [
        "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASES", "CELERY_BROKER_URL", "STORAGES",
        "VAR_DIR", "MEDIA_ROOT", "STATIC_ROOT", "IMAGEGEN_MODEL", "IMAGEGEN_MODEL_CACHE",
    ]  # fmt: skip
    code = f"import json, imagegen.settings as s; print(json.dumps({{n: getattr(s, n) for n in {names}}}, default=str))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"settings do not load with the compose environment:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_settings_load_with_the_compose_environment(services):
    # What a container gets from `docker compose up` with only the required variables in .env.
    loaded = container_settings(services["web"], DOT_ENV)
    assert loaded["DEBUG"] is False
    assert {"localhost", "127.0.0.1"} <= set(loaded["ALLOWED_HOSTS"])
    assert loaded["CSRF_TRUSTED_ORIGINS"] == []
    assert loaded["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert loaded["DATABASES"]["default"]["HOST"] == "db"
    assert loaded["CELERY_BROKER_URL"] == f"redis://:{DOT_ENV['REDIS_PASSWORD']}@redis:6379/0"
    assert loaded["STORAGES"]["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert loaded["IMAGEGEN_MODEL"] == "tiny"
    env = dockerfile_env()
    assert loaded["MEDIA_ROOT"] == env["MEDIA_ROOT"]
    assert loaded["IMAGEGEN_MODEL_CACHE"] == env["IMAGEGEN_MODEL_CACHE"]
    assert loaded["VAR_DIR"] == env["IMAGEGEN_VAR_DIR"]
    assert loaded["STATIC_ROOT"] == env["STATIC_ROOT"]


def readme_dot_env() -> dict[str, str]:
    """The `.env` of README "Deploy", each `<random>` filled in as its comment says."""
    block = re.search(r"```sh\n# \.env\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, 'README "Deploy" has no `# .env` block'
    env = {}
    for line in block[1].splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name:
            env[name] = secrets.token_hex(32) if value == "<random>" else value
    return env


def deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_documented_production_environment_passes_the_deploy_check(services):
    dot_env = readme_dot_env()
    assert set(DOT_ENV) | {"FORWARDED_ALLOW_IPS", "IMAGEGEN_HTTPS"} <= set(dot_env)
    env = {"PATH": os.environ["PATH"], **dockerfile_env(), **environment(services["web"], dot_env)}
    result = deploy_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_development_defaults_fail_the_deploy_check_but_not_for_debug(tmp_path):
    # `make run` without any setting: plain HTTP, so the check has something to say...
    result = deploy_check({"PATH": os.environ["PATH"], "IMAGEGEN_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr, result.stderr
    # ...but DEBUG is off by default, everywhere.
    assert "security.W018" not in result.stderr


def test_s3_storage_through_the_compose_environment(services):
    shell = {**DOT_ENV, "IMAGEGEN_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "studio-media"}
    loaded = container_settings(services["worker"], shell)
    assert loaded["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    assert loaded["STORAGES"]["default"]["OPTIONS"]["bucket_name"] == "studio-media"
    # Variables left empty in .env mean "not set", not an empty endpoint or key.
    assert loaded["STORAGES"]["default"]["OPTIONS"]["endpoint_url"] is None
    assert loaded["STORAGES"]["default"]["OPTIONS"]["access_key"] is None


def test_redis_is_the_redis_service_with_its_password(services):
    url = environment(services["web"])["REDIS_URL"]
    match = re.fullmatch(r"redis://:(?P<password>\w+)@(?P<host>[\w.-]+)(?::(?P<port>\d+))?(?:/\d+)?", url)
    assert match, url
    assert match["host"] == "redis" and "redis" in services
    assert int(match["port"] or 6379) == 6379
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    # The server wants the password the app sends, and its healthcheck logs in with it too.
    server = options([interpolate(arg, DOT_ENV) for arg in argv(redis["command"])])
    assert server.get("--requirepass") == match["password"] == DOT_ENV["REDIS_PASSWORD"]
    assert environment(redis).get("REDISCLI_AUTH") == DOT_ENV["REDIS_PASSWORD"]
    check = healthcheck_command(redis)
    assert "redis-cli" in check and "PONG" in check, f"a refused ping (NOAUTH) must not count as healthy: {check}"


# --- commands ---


def test_web_serves_the_asgi_application(services):
    args = argv(services["web"]["command"])
    port = web_port(args)
    assert importlib.import_module("imagegen.asgi").application is not None
    published = [str(mapping).rsplit(":", 1) for mapping in services["web"]["ports"]]
    assert [port] == [container for _, container in published], f"uvicorn listens on {port}, web publishes {published}"
    assert [host for host, _ in published] == ["8000"], published


def test_dockerfile_cmd_is_the_web_command(services):
    cmd = dockerfile_cmd()
    assert web_port(cmd) == web_port(argv(services["web"]["command"])) == "8000"
    assert dockerfile("EXPOSE") == ["8000"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_runs_one_job_at_a_time_from_the_routed_queues(services, name):
    args = argv(services[name]["command"])
    assert args[:4] == ["celery", "-A", "imagegen", "worker"], args
    found = options(args)
    queues = set(found.get("-Q", found.get("--queues", "")).split(","))
    # Jobs go to the gpu queue; tasks without a route go to the default queue.
    assert gpu_queue() in queues, f"{name} does not consume {gpu_queue()!r}, where run_job is routed"
    assert settings.CELERY_TASK_DEFAULT_QUEUE in queues, f"nothing would consume {settings.CELERY_TASK_DEFAULT_QUEUE!r}"
    pool = found.get("--pool", found.get("-P"))
    concurrency = found.get("--concurrency", found.get("-c"))
    # One job per GPU: two models on one card run out of memory.
    assert pool == "solo" or (pool == "threads" and concurrency == "1"), f"pool={pool} concurrency={concurrency}"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_healthcheck_pings_this_worker(services, name):
    found = options(argv(services[name]["command"]))
    node = found.get("-n", found.get("--hostname", "celery@%h"))
    check = healthcheck_command(services[name])
    assert re.search(r"celery -A imagegen inspect ping", check), check
    # The node name the worker gives itself, with %h as the container's $HOSTNAME ($$ in Compose).
    expected = interpolate(node.replace("%h", "$$HOSTNAME"), {})
    assert re.search(rf"(?:-d|--destination)[ =]{re.escape(expected)}(?:\s|$)", interpolate(check, {})), check


def test_housekeeping_runs_once_per_installation(services):
    housekeeping = services["housekeeping"]
    assert argv(housekeeping["command"]) == ["python", "manage.py", "housekeeping"]
    assert "housekeeping" in get_commands()
    assert housekeeping.get("deploy", {}).get("replicas", 1) == 1


# --- GPU ---


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_worker_reserves_one_nvidia_gpu(services):
    devices = gpu_devices(services["worker"])
    assert len(devices) == 1, devices
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    # One worker per GPU, and it runs one job at a time.
    assert device.get("count") == 1 or len(device.get("device_ids", [])) == 1, device


def test_cpu_worker_and_the_rest_reserve_no_gpu(services):
    for name, service in services.items():
        if name != "worker":
            assert not gpu_devices(service), f"{name} would not start on a machine without a GPU"


# --- Dockerfile ---


def test_dockerfile_state_paths_are_volumes(services, compose):
    env = dockerfile_env()
    named_volumes = set(compose.get("volumes") or {})
    for variable in STATE_PATHS:
        assert variable in env, f"the Dockerfile does not set {variable}"
        assert variable in settings_variables() | EXTERNAL_VARIABLES, f"{variable} is read by nothing"
        for name in APP_SERVICES:
            source = mounts(services[name]).get(env[variable])
            assert source, f"{variable}={env[variable]} is not a volume in {name}: it is lost with the container"
            assert source in named_volumes, f"{name} mounts {source} on {env[variable]}, not a named volume"
    # And every /data path the image uses is one of those.
    for variable, value in env.items():
        if value.startswith("/data"):
            assert variable in STATE_PATHS, f"{variable}={value} is not checked"


def test_static_files_are_in_the_image_not_a_volume(services):
    env = dockerfile_env()
    static_root = env.get("STATIC_ROOT") or str(Path(env["IMAGEGEN_VAR_DIR"]) / "static")
    for name in APP_SERVICES:
        for target in mounts(services[name]):
            # A volume over collectstatic's output would keep serving the first image's files.
            assert not (static_root + "/").startswith(target.rstrip("/") + "/"), f"{static_root} is under {target}"


def test_dockerfile_base_user_and_secret():
    (base,) = dockerfile("FROM")
    assert base.startswith("python:3.11-slim"), base
    users = dockerfile("USER")
    assert users and users[-1] not in ("root", "0"), "the processes must not run as root"
    # A SECRET_KEY in ENV or ARG is baked into the image for everyone who pulls it.
    assert not any("SECRET_KEY" in rest for rest in dockerfile("ENV") + dockerfile("ARG"))
    (collectstatic,) = [rest for rest in dockerfile("RUN") if "collectstatic" in rest]
    assert re.search(r"SECRET_KEY=\S+ python manage.py collectstatic --noinput", collectstatic), collectstatic


def test_dockerfile_copies_every_local_app():
    sources = [[arg for arg in rest.split() if not arg.startswith("--")][:-1] for rest in dockerfile("COPY")]
    copied = {Path(source).as_posix() for group in sources for source in group}
    base = Path(settings.BASE_DIR)
    local_apps = {app.split(".")[0] for app in settings.INSTALLED_APPS if (base / app.split(".")[0]).is_dir()}
    # A static folder may carry a prefix ("swagger-ui", its folder); one inside an installed package
    # (Swagger UI's) comes with requirements.txt, wherever the packages are installed.
    entries = [entry[1] if isinstance(entry, tuple) else entry for entry in settings.STATICFILES_DIRS]
    installed = Path(sysconfig.get_paths()["purelib"])
    folders = {
        Path(folder).relative_to(base).as_posix()
        for folder in [*entries, *settings.TEMPLATES[0]["DIRS"]]
        if not Path(folder).is_relative_to(installed)
    }
    missing = (local_apps | folders | {"manage.py", "requirements.txt"}) - copied
    assert not missing, f"the image lacks {sorted(missing)}"


def requirements_pin(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(rf"{package}==(\S+)", line.split("#")[0].strip())
        if match:
            return match[1]
    raise AssertionError(f"requirements.txt does not pin {package}")


def test_torch_comes_from_the_build_arg_index(services):
    assert requirements_pin("torch") == "2.13.0"
    index_args = [rest for rest in dockerfile("ARG") if rest.startswith("TORCH_INDEX")]
    assert index_args == ["TORCH_INDEX=https://download.pytorch.org/whl/cpu"], "the default build is the CPU one"
    runs = dockerfile("RUN")
    (torch_run,) = [rest for rest in runs if re.search(r"pip install[^&]*torch==", rest)]
    assert f"torch=={requirements_pin('torch')}" in torch_run, "the Dockerfile installs another torch than pinned"
    assert re.search(r"--index-url[ =]\"?\$\{?TORCH_INDEX\}?\"?", torch_run), torch_run
    # torch first: requirements.txt alone would fetch it from PyPI, i.e. the CUDA build.
    requirements_at = next(i for i, rest in enumerate(runs) if "-r requirements.txt" in rest)
    torch_at = runs.index(torch_run)
    assert torch_at < requirements_at or torch_run.index("torch==") < torch_run.index("-r requirements.txt")
    # The compose builds: CPU for everything but the GPU worker, CUDA for that one.
    assert services["web"]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert services["worker-cpu"]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", services["worker"]["build"]["args"]["TORCH_INDEX"])


# --- healthchecks ---


def test_healthchecks(services):
    for name in ("redis", "db", "web", "worker"):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable") and check["test"] not in (["NONE"], "NONE"), name
    assert "redis-cli ping" in healthcheck_command(services["redis"])
    assert "pg_isready" in healthcheck_command(services["db"])
    web_check = healthcheck_command(services["web"])
    match = re.search(r"urlopen\('http://127\.0\.0\.1:(\d+)(/[^']*)'", web_check)
    assert match, web_check
    assert match[1] == web_port(argv(services["web"]["command"])), "the healthcheck asks another port"
    # The health endpoint, which fails on a broken database, Redis, storage or worker (not only
    # when the web server is down); resolve() raises Resolver404 if it moved.
    assert resolve(match[2]).url_name == "healthz", match[2]
