"""Body limits on the wire: declared, chunked and lying Content-Length, over a raw socket."""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlparse

from tests.conftest import LiveServer


def raw_request(url: str, head: bytes, body: bytes, timeout: float = 10.0) -> bytes:
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as s:
        s.sendall(head)
        # The server may answer and close before reading it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(body)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(
    demo_server: LiveServer,
) -> None:
    head = (
        b"POST /v1/events?key=pk_demo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    # Only the head is sent: the answer must not wait for the megabyte that never comes.
    answer = raw_request(demo_server.url, head, b"", timeout=5.0)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_chunked_body_over_the_limit_is_413(demo_server: LiveServer) -> None:
    head = (
        b"POST /v1/events?key=pk_demo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    answer = raw_request(demo_server.url, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_lying_content_length_reads_no_more_than_it_declared(demo_server: LiveServer) -> None:
    # Declares 20 bytes and sends 100 KiB: only the declared bytes can be this request's body;
    # the rest is parsed as a next request, refused as garbage, and the connection closed.
    head = (
        b"POST /v1/events?key=pk_demo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 20\r\n\r\n"
    )
    answer = raw_request(demo_server.url, head, b"{" + b"x" * 100_000)
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 422"), answer[:200]
    with demo_server.client() as c:
        assert c.get("/healthz").status_code == 200
