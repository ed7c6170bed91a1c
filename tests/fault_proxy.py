"""A fault-injecting HTTP reverse proxy on 127.0.0.1 in front of a moto S3 server, for tests.

Each request is forwarded to moto unless the proxy, drawing from `random.Random(seed)` at
`rate`, injects one of the faults an object store shows under load:

    slow_down       503 SlowDown with S3's XML error body (the request never reaches moto)
    internal_error  500 InternalError, on PUT and POST only (never reaches moto)
    reset           forwarded; then the response's headers and part of its body are sent and the
                    connection is reset (SO_LINGER 0: the client sees ECONNRESET)
    truncated       GET only, forwarded; the full Content-Length is announced, fewer bytes sent,
                    then the connection is closed

A reset of a write is the "answer lost" case: moto stored the write, the client sees only an
error, and its retry meets its own write. At most `max_faults_per_request` faults are injected
into one request (the same method on the same path and query), however often it is sent: a real
store's faults are independent, but the bound makes sure a bounded retry policy gets through, so
a test's outcome does not hang on luck.

`delete_bucket` deletes a bucket for real. `deny(bucket, prefix)` answers 403 AccessDenied for every request on that bucket and key prefix
(listings included) until `allow()`: a permanent fault switched at run time. `injected` counts
what was injected, by kind, and `faults_on(method, key)` per request; `requests` counts every
request the proxy answered.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from moto.server import ThreadedMotoServer

from tests.ray_cluster import free_port

FAULTS = ("slow_down", "internal_error", "reset", "truncated")
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_DEFAULT_REGION": "us-east-1"}
"""The environment a client of moto needs (moto accepts any credentials)."""
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "expect", "te", "upgrade"}


def s3_error_xml(code: str, message: str, resource: str) -> bytes:
    """An S3 error response body, as S3 sends it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


class FaultProxy:
    """A moto server and the proxy in front of it; `endpoint` is the proxy's URL, `moto_endpoint`
    moto's own (for setting up and checking without faults). A context manager: stops both."""

    def __init__(
        self,
        rate: float = 0.0,
        seed: int = 0,
        faults: tuple[str, ...] = FAULTS,
        max_faults_per_request: int = 2,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.rate, self.faults, self.max_faults_per_request = rate, faults, max_faults_per_request
        self.injected: Counter[str] = Counter()
        self._faulted: Counter[tuple[str, str]] = Counter()
        self.requests = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._denied: tuple[str, str] | None = None
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self._moto.start()
        self.moto_port = self._moto._port
        self._moto_reset()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def moto_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def deny(self, bucket: str, prefix: str = "") -> None:
        """403 AccessDenied for `bucket` keys (and listings) under `prefix` from now on."""
        with self._lock:
            self._denied = (bucket, prefix)

    def allow(self) -> None:
        with self._lock:
            self._denied = None

    def _moto_reset(self) -> None:
        """Empty moto: its state is shared by every moto server in this process, and each proxy
        starts from nothing."""
        connection = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        try:
            connection.request("POST", "/moto-api/reset")
            connection.getresponse().read()
        finally:
            connection.close()

    def delete_bucket(self, bucket: str) -> None:
        """Delete `bucket` and everything in it, for real (straight to moto, no faults)."""
        import boto3

        s3 = boto3.resource("s3", endpoint_url=self.moto_endpoint, region_name="us-east-1")
        s3.Bucket(bucket).objects.all().delete()
        s3.Bucket(bucket).delete()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._moto.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def draw(self, method: str, target: str) -> str | None:
        """The fault for the request `method` `target` (path and query): "denied", one of
        `faults`, or None (forward it untouched)."""
        bucket, _, key = _key_of(target).partition("/")
        with self._lock:
            self.requests += 1
            if self._denied and _covers(self._denied, bucket, key, parse_qs(urlsplit(target).query)):
                self.injected["denied"] += 1
                return "denied"
            applicable = [f for f in self.faults if _applies(f, method)]
            if self._random.random() >= self.rate or not applicable:
                return None
            if self._faulted[method, target] >= self.max_faults_per_request:
                return None
            fault = self._random.choice(applicable)
            self._faulted[method, target] += 1
            self.injected[fault] += 1
            return fault

    def faults_on(self, method: str, key: str) -> int:
        """How many faults were injected into requests `method` on `key` ("bucket/key"), any query."""
        with self._lock:
            return sum(n for (m, target), n in self._faulted.items() if m == method and _key_of(target) == key)

    def split_of(self, length: int) -> int:
        """A random count in [0, length): how many of `length` bytes a cut response sends."""
        with self._lock:
            return self._random.randrange(0, max(length, 1))


def _key_of(target: str) -> str:
    """ "bucket/key" (or "bucket" alone) of a request's path and query."""
    return unquote(urlsplit(target).path).lstrip("/")


def _applies(fault: str, method: str) -> bool:
    if fault == "internal_error":
        return method in ("PUT", "POST")
    if fault == "truncated":
        return method == "GET"
    return True


def _covers(denied: tuple[str, str], bucket: str, key: str, query: dict[str, list[str]]) -> bool:
    """Whether a request on `bucket`/`key` (a listing when `key` is empty) touches the denied prefix."""
    denied_bucket, prefix = denied
    if bucket != denied_bucket:
        return False
    if key:
        return key.startswith(prefix)
    listed = query.get("prefix", [""])[0]
    return listed.startswith(prefix) or prefix.startswith(listed)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for clients that expect it
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # quiet: the tests need no access log
        pass

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        body = self._request_body()
        fault = self.owner.draw(self.command, self.path)
        if fault == "denied":
            self._send_error(403, "AccessDenied", "Access Denied")
        elif fault == "slow_down":
            self._send_error(503, "SlowDown", "Please reduce your request rate.")
        elif fault == "internal_error":
            self._send_error(500, "InternalError", "We encountered an internal error. Please try again.")
        else:
            status, reason, headers, payload = self._forward(body)
            if fault == "reset":
                self._send_cut(status, reason, headers, payload, reset=True)
            elif fault == "truncated" and payload:
                self._send_cut(status, reason, headers, payload, reset=False)
            else:
                self._send(status, reason, headers, payload)

    def _request_body(self) -> bytes:
        """The request's body, whether sized by Content-Length or sent chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """moto's answer to this request: (status, reason, headers, whole body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.owner.moto_port, timeout=60)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, response.reason, headers, payload
        finally:
            connection.close()

    def _send_error(self, status: int, code: str, message: str) -> None:
        body = s3_error_xml(code, message, self.path)
        self._send(status, "", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], body)

    def _response(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> bytes:
        """The response as it goes on the wire (no body for HEAD)."""
        lines = [f"HTTP/1.1 {status} {reason or http.client.responses.get(status, '')}"]
        lines += [f"{name}: {value}" for name, value in headers]
        return "\r\n".join([*lines, "", ""]).encode("latin-1") + (b"" if self.command == "HEAD" else payload)

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.wfile.write(self._response(status, reason, headers, payload))
        self.wfile.flush()

    def _send_cut(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes, reset: bool) -> None:
        """A part of the response, then the connection closed. reset: any cut of the whole
        response, then RST (SO_LINGER 0); else the headers with the full Content-Length and a
        part of the body, then FIN."""
        whole = self._response(status, reason, headers, payload)
        head = len(self._response(status, reason, headers, b""))
        cut = 1 + self.owner.split_of(len(whole) - 1) if reset else head + self.owner.split_of(len(payload))
        self.wfile.write(whole[:cut])
        self.wfile.flush()
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        os.close(self.connection.detach())  # RST or FIN now, whatever still refers to the socket
