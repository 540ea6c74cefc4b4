"""Connections on a real `offer-service serve`: silent, half-sent and idle ones are closed after
their timeouts, and beyond the concurrency limit a request is answered 503 at once while the
server stays up (short timeouts here; the defaults are in settings.py); each answer leaves in
one TCP segment, head and body together, whatever its kind."""

from __future__ import annotations

import re
import selectors
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ServeProcess, prepare_demo_store

pytestmark = pytest.mark.timeout(120)

HEADER_TIMEOUT_S = 0.5
KEEP_ALIVE_TIMEOUT_S = 1
LIMIT = 20
# How long a test waits for the server to close a connection: well past its timeouts, well
# short of uvicorn's own keep-alive default (5 s) and of forever.
CLOSED_WITHIN_S = 4.0


def request(method: str, path: str, extra: str = "") -> bytes:
    """A request's line and headers (`extra`: more header lines, each ending in CRLF)."""
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


REQUEST = request("GET", "/healthz")
OFFERS = "/v1/offers?key=pk_demo&surface=product_page&product_id=cam-x100&visitor_id=v_one"
# Linux's struct tcp_info: tcpi_data_segs_in, the segments carrying data this socket received.
DATA_SEGS_IN_AT = 152


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServeProcess]:
    url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(url)
    env = {
        "OFFER_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
        "OFFER_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT_S),
        "OFFER_CONCURRENCY_LIMIT": str(LIMIT),
    }
    process = ServeProcess(url, tmp_path / "serve.log", env=env)
    try:
        yield process
    finally:
        process.stop()


def connect(service: ServeProcess, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=CLOSED_WITHIN_S)
    if send:
        sock.sendall(send)
    return sock


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (whatever it answered first) within
    CLOSED_WITHIN_S; all of them are closed on this side afterwards."""
    deadline = time.monotonic() + CLOSED_WITHIN_S
    pending = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    selector.unregister(ready)
                    pending.discard(ready)
    for sock in socks:
        sock.close()
    return len(pending)


def read_answer(sock: socket.socket, *, head_only: bool = False) -> bytes:
    """The answer to the request just sent on `sock`, read to its end (`head_only`: the answer
    to a HEAD, whose Content-Length names a body it does not send)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _answer_length(data, head_only):
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer's end: {data!r}"
        data += chunk
    return data


def answered(sock: socket.socket) -> int:
    """The status of the answer to the request just sent on `sock`, read to its end."""
    return int(read_answer(sock).split(b" ", 2)[1])


def _answer_length(data: bytes, head_only: bool = False) -> int:
    """The length of the answer whose head `data` starts with: head and body."""
    head = data.split(b"\r\n\r\n", 1)[0]
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return len(head) + 4 + (int(length[1]) if length and not head_only else 0)


def test_silent_and_half_sent_connections_are_closed_after_the_header_timeout(
    service: ServeProcess,
) -> None:
    silent = [connect(service) for _ in range(LIMIT // 2)]
    # The request line and part of the headers, never the blank line that ends them.
    half = [connect(service, b"GET /healthz HTTP/1.1\r\nHost: 127.0.") for _ in range(3)]
    # A request answered, then the start of another that never ends: its deadline runs from
    # its first byte.
    late = connect(service, REQUEST)
    assert answered(late) == 200
    late.sendall(b"GET /healthz HTTP/1.1\r\n")
    assert still_open([*silent, *half, late]) == 0


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(service: ServeProcess) -> None:
    sock = connect(service, REQUEST)
    assert answered(sock) == 200
    assert still_open([sock]) == 0


def test_a_connection_in_use_is_not_cut_off(service: ServeProcess) -> None:
    """Requests one after another on one connection, each within the timeouts, for longer than
    both: every one is answered on that connection."""
    sock = connect(service)
    statuses = []
    for _ in range(8):
        sock.sendall(REQUEST)
        statuses.append(answered(sock))
        time.sleep(HEADER_TIMEOUT_S / 2)
    sock.close()
    assert statuses == [200] * 8


def test_beyond_the_concurrency_limit_a_request_gets_a_503_and_the_server_recovers(
    service: ServeProcess,
) -> None:
    silent = [connect(service) for _ in range(LIMIT)]
    with httpx.Client(base_url=service.url, timeout=2) as client:
        assert client.get("/healthz").status_code == 503
        # The silent connections are closed at their deadline; then clients are answered again.
        assert still_open(silent) == 0
        assert client.get("/healthz").status_code == 200


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    count: int = struct.unpack_from("I", info, DATA_SEGS_IN_AT)[0]
    return count


@pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's TCP_INFO")
@pytest.mark.parametrize(
    ("sent", "status", "body"),
    [
        (request("GET", OFFERS), 200, b'"offers":['),
        (request("GET", "/healthz"), 200, b"ok"),
        (request("GET", "/no/such/route"), 404, b"not_found"),
        (request("GET", "/v1/offers?key=pk_demo&surface=nowhere"), 422, b"surface"),
        (request("HEAD", "/healthz"), 200, b""),
    ],
    ids=["offers", "healthz", "404", "422", "head"],
)
def test_each_answer_leaves_in_one_segment(
    service: ServeProcess, sent: bytes, status: int, body: bytes
) -> None:
    sock = connect(service)
    try:
        # The connection's first answer, then one measured on a connection already in use.
        for _ in range(2):
            before = data_segments_in(sock)
            sock.sendall(sent)
            # Read to its end: every segment it came in has arrived and been counted.
            data = read_answer(sock, head_only=sent.startswith(b"HEAD "))
            head, _, rest = data.partition(b"\r\n\r\n")
            assert int(head.split(b" ", 2)[1]) == status, data
            # A HEAD's answer has no body at all.
            assert body in rest if body else rest == b""
            assert data_segments_in(sock) - before == 1
    finally:
        sock.close()


def test_an_answer_on_a_closing_connection_and_a_continue_are_not_held(
    service: ServeProcess,
) -> None:
    """An answer that closes its connection arrives whole before the close; a 100 Continue
    arrives while the server waits for the body it asks for."""
    sock = connect(service, request("GET", "/healthz", "Connection: close\r\n"))
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"status":"ok"}')

    body = b'{"key": "pk_demo", "events": []}'
    head = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock = connect(service, request("POST", "/v1/events", head + "Expect: 100-continue\r\n"))
    try:
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert answered(sock) == 202
    finally:
        sock.close()
