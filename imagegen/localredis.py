"""A private redis-server for a single-machine run and for the tests, when none is reachable."""

import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse


def redis_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True when something answers PING at the URL's address."""
    try:
        with socket.create_connection(redis_address(url), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_command(port: int, data_dir: Path) -> list[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: run `make setup` (or `apt-get install redis-server`).")
    # Nothing is persisted: the database is the record of every job, Redis only carries messages.
    return [
        executable,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
        "--dir",
        str(data_dir),
    ]


def start_redis(port: int, data_dir: Path, log_path: Path, timeout: float = 10.0) -> subprocess.Popen:
    """Start redis-server on 127.0.0.1:port and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(redis_server_command(port, data_dir), stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout
    while not redis_reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start on port {port}; see {log_path}")
        time.sleep(0.05)
    return process
