"""Run everything on one machine: the web server, a worker, housekeeping, and a local Redis if needed.

`make run` calls this. Ctrl-C stops every process it started.
"""

import os
import shlex
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from honcho.manager import Manager

from imagegen import services
from imagegen.localredis import redis_address, redis_reachable, redis_server_command
from imagegen.localstack import collect_static_files, web_processes_default, web_server_command

LOGIN_FILE = settings.VAR_DIR / "local-login.txt"


class Command(BaseCommand):
    help = (
        "Migrate, collect static files, create a local login on first run, "
        "then start web, worker and (if needed) Redis."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        collect_static_files()
        username, password = self.local_login()
        python = sys.executable
        manager = Manager()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if not redis_reachable(settings.REDIS_URL):
            redis_host, redis_port = redis_address(settings.REDIS_URL)
            if redis_host not in {"127.0.0.1", "localhost"}:
                self.stderr.write(f"Redis at {settings.REDIS_URL} is unreachable; start it or fix REDIS_URL.")
                sys.exit(1)
            (settings.VAR_DIR / "redis").mkdir(parents=True, exist_ok=True)
            manager.add_process(
                "redis", shlex.join(redis_server_command(redis_port, settings.VAR_DIR / "redis")), env=env
            )
        web = web_server_command(
            host, port, processes=web_processes_default(), forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS
        )
        manager.add_process("web", shlex.join(web), env=env)
        manager.add_process(
            "worker",
            f"{python} -m celery -A imagegen worker --pool=threads --concurrency=1 -Q gpu,light -l INFO",
            env=env,
        )
        manager.add_process("housekeeping", f"{python} manage.py housekeeping", env=env)
        shown_host = "localhost" if host in {"127.0.0.1", "0.0.0.0"} else host
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  Image studio: http://{shown_host}:{port}/\n"
                f"  Log in as {username} / {password}\n"
                f"  Model: {settings.IMAGEGEN_MODEL}  ·  Ctrl-C stops everything.\n"
            )
        )
        manager.loop()
        sys.exit(manager.returncode)

    def local_login(self) -> tuple[str, str]:
        """The login made on the first run (kept in var/), or a new one when there is none yet."""
        if LOGIN_FILE.exists():
            username, password = LOGIN_FILE.read_text().split("\n", 1)
            return username, password.strip()
        username = "admin"
        password = services.local_admin_create(username=username)
        LOGIN_FILE.parent.mkdir(parents=True, exist_ok=True)
        LOGIN_FILE.write_text(f"{username}\n{password}\n")
        LOGIN_FILE.chmod(0o600)
        return username, password
