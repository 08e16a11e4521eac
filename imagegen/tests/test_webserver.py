"""Through the real uvicorn, what happens in front of the views: request bodies over the cap are
refused before Django reads them; static files come compressed with long cache headers; and what a
raw HTTP or WebSocket client sends that Django's test client cannot (see test_hostile.py)."""

import gzip
import io
import json
import re
import select
import socket
import urllib.request

import pytest
from django.conf import settings
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from imagegen import services
from imagegen.consumers import CLOSE_BAD_MESSAGE
from imagegen.localstack import start_web
from imagegen.models import JobStatus

from .factories import RunFactory, UserFactory
from .test_reliability import record

pytestmark = pytest.mark.integration

GIGABYTE = 1024**3
CHUNK = 64 * 1024
# Loopback socket buffers hold a few megabytes: a client that gets its 413 after the cap has
# sent the cap and what the buffers took, far from the gigabyte it meant to send.
SENT_AT_MOST = settings.IMAGEGEN_MAX_REQUEST_BYTES + 32 * 1024 * 1024


@pytest.fixture(scope="module")
def web(django_db_setup, redis_server, tmp_path_factory):
    """uvicorn alone, with its temporary files (Django's spooled bodies and uploads) in a folder of its own."""
    folder = tmp_path_factory.mktemp("web")
    temp = folder / "server-tmp"
    temp.mkdir()
    server = start_web(folder, redis_server.url(1), TMPDIR=str(temp))
    server.temp = temp
    yield server
    server.stop()


@pytest.fixture
def token(transactional_db) -> str:
    return services.api_token_create(username="uploader")


def open_request(web, method: str, path: str, headers: dict) -> socket.socket:
    host, port = web.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    connection.sendall((head + "\r\n").encode())
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict, bytes]:
    """The status, headers and body of the response (read until the server closes or Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"the server closed without answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += connection.recv(65536)
    return int(status_line.split()[1]), headers, body


def upload_headers(token: str, **extra: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=xyz", **extra}


def test_a_declared_gigabyte_is_refused_before_any_of_it_is_sent(web, token):
    for path, headers in (
        ("/api/v1/imports", upload_headers(token)),
        ("/api/generate_img2img", upload_headers(token)),
        ("/", {"Content-Type": "multipart/form-data; boundary=xyz"}),  # the page's form, even before the login check
    ):
        connection = open_request(web, "POST", path, {**headers, "Content-Length": str(GIGABYTE)})
        with connection:
            status, response_headers, body = read_response(connection)
        assert status == 413, body
        assert response_headers["connection"] == "close"
        assert b"larger than the limit of 12 MB" in body
        if path.startswith("/api/"):
            assert json.loads(body)["error"] == "The request is larger than the limit of 12 MB."
    assert list(web.temp.iterdir()) == []
    # The refusal closed only those connections.
    with urllib.request.urlopen(f"{web.base_url}/login/", timeout=10) as page:
        assert page.status == 200
    record(bodies_refused_without_touching_the_disk=3)


def test_a_chunked_gigabyte_is_refused_once_past_the_cap_and_leaves_no_file(web, token):
    """The client streams a gigabyte without a length and stops as soon as the server answers."""
    connection = open_request(web, "POST", "/api/v1/imports", upload_headers(token, **{"Transfer-Encoding": "chunked"}))
    frame = f"{CHUNK:x}\r\n".encode() + b"\0" * CHUNK + b"\r\n"
    sent = 0
    with connection:
        while sent < GIGABYTE:
            readable, writable, _ = select.select([connection], [connection], [], 10)
            if readable:
                break  # the answer came: a real client (curl, browsers) stops sending here
            assert writable, "the server neither read nor answered for 10 s"
            try:
                connection.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
            assert sent <= SENT_AT_MOST, f"the server read {sent / 2**20:.0f} MB without refusing"
        status, _, body = read_response(connection)
    assert status == 413, body
    assert json.loads(body)["error"] == "The request is larger than the limit of 12 MB."
    print(f"sent {sent / 2**20:.1f} MB of a chunked gigabyte before the 413")
    assert sent <= SENT_AT_MOST
    assert list(web.temp.iterdir()) == []
    # Up to the cap went into Django's spooled body (an unnamed temporary file), freed at the refusal.
    record(chunked_bodies_refused_past_the_cap=1, temp_files_left_by_refused_bodies=0)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(field: str, filename: str, content: bytes) -> bytes:
    return (
        (
            f'--xyz\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + content
        + b"\r\n--xyz--\r\n"
    )


def test_bodies_under_the_cap_still_go_through_with_or_without_a_length(web, token):
    body = multipart("image", "red.png", png_bytes())
    declared = open_request(web, "POST", "/api/v1/imports", upload_headers(token, **{"Content-Length": str(len(body))}))
    with declared:
        declared.sendall(body)
        status, _, answer = read_response(declared)
    assert status == 201, answer
    # Django parses multipart only with a length; a chunked JSON body reaches the view whole.
    body = json.dumps({"prompt": "a lighthouse", "width": 500}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    chunked = open_request(web, "POST", "/api/generate", headers)
    with chunked:
        for start in range(0, len(body), 10):
            piece = body[start : start + 10]
            chunked.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        chunked.sendall(b"0\r\n\r\n")
        status, _, answer = read_response(chunked)
    assert (status, json.loads(answer)["field"]) == (400, "width"), answer


def test_the_real_server_answers_hostile_paths_with_4xx_and_api_errors_in_json(web, token):
    """What a raw client can send that Django's test client normalises away: bytes that are not UTF-8,
    NUL and encoded traversal in the path itself."""
    for path in ("/api/v1/runs/not-a-uuid", "/api/v1/runs/%ff%00", "/api/v1/refinements/..%2f..%2fetc%2fpasswd"):
        connection = open_request(web, "GET", path, {"Authorization": f"Bearer {token}"})
        with connection:
            status, headers, body = read_response(connection)
        assert status == 404, (path, body)
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "Not found."
    for path in ("/runs/%ff%fe/", "/images/%00", "/static/..%2f..%2fimagegen%2fsettings.py"):
        connection = open_request(web, "GET", path, {})
        with connection:
            status, _, body = read_response(connection)
        assert 400 <= status < 500, (path, status)
    record(hostile_requests_tried=6)


def test_the_api_socket_closes_on_a_message_that_is_not_json_with_the_reason(web, token):
    user = UserFactory(username="uploader")
    run = RunFactory(owner=user, status=JobStatus.RUNNING, total_steps=20)
    ws_url = f"{web.ws_url}/api/v1/ws/{run.pk}"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as socket_:
        assert json.loads(socket_.recv(timeout=10))["status"] == "running"
        socket_.send('{"hello": "ignored"}')  # JSON: ignored, the socket stays open
        socket_.send("[" * 100_000 + "]" * 100_000)  # too deep to parse: the same as not JSON
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert closed.value.rcvd.code == CLOSE_BAD_MESSAGE
    assert "Not JSON" in closed.value.rcvd.reason


def test_static_files_from_a_page_are_hashed_compressed_and_cached_for_a_year(web):
    with urllib.request.urlopen(f"{web.base_url}/login/", timeout=10) as page:
        html = page.read().decode()
    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    stylesheet = next(url for url in urls if url.startswith("/static/css/app."))
    assert re.fullmatch(r"/static/css/app\.[0-9a-f]{12}\.css", stylesheet), "not a hashed name"
    assert any(re.fullmatch(r"/static/django_htmx/htmx-2\.min\.[0-9a-f]{12}\.js", url) for url in urls), urls
    for url in urls:
        plain = urllib.request.Request(f"{web.base_url}{url}", headers={"Accept-Encoding": "identity"})
        gzipped = urllib.request.Request(f"{web.base_url}{url}", headers={"Accept-Encoding": "gzip, deflate"})
        with urllib.request.urlopen(plain, timeout=10) as response:
            original = response.read()
            assert response.headers.get("Content-Encoding") is None
        with urllib.request.urlopen(gzipped, timeout=10) as response:
            compressed = response.read()
            headers = response.headers
        assert headers["Content-Encoding"] == "gzip", url
        assert gzip.decompress(compressed) == original
        assert "Accept-Encoding" in headers["Vary"]
        max_age = int(re.search(r"max-age=(\d+)", headers["Cache-Control"])[1])
        assert max_age >= 365 * 24 * 3600 and "immutable" in headers["Cache-Control"], headers["Cache-Control"]
        print(f"{url}: {len(original)} bytes, {len(compressed)} gzipped")
