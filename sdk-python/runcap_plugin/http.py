"""Outbound HTTP(S) through runcap (`grants.http` in the manifest).

    from runcap_plugin import http
    resp = http.get("https://api.example.com/health", timeout=5)
    if resp.status == 200 and resp.json()["status"] == "up": ...

The host checks every request and every redirect hop against the grant before it
connects. A request that gets no response raises HttpError; its `kind` says why:
"denied" (not granted), "invalid-request" (bad URL or header), "timeout",
"connection" (DNS, connect, protocol) or "tls". Left uncaught in `run`, a denial
becomes the action's `denied` error, an invalid request its `invalid-params` error,
and any other its `failed` error with the traceback.
"""

import dataclasses
import json as _json

from . import host as _host

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
ERROR_KINDS = ("denied", "invalid-request", "timeout", "connection", "tls")

# The largest values the WIT record carries (timeout-ms: u32, max-redirects: u8).
_MAX_TIMEOUT_MS = 2**32 - 1
_MAX_REDIRECTS = 255


class HttpError(Exception):
    """A request that produced no response."""

    def __init__(self, kind, detail=""):
        if kind not in ERROR_KINDS:
            raise ValueError(f"HttpError kind must be one of {', '.join(ERROR_KINDS)}, not {kind!r}")
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = str(detail)

    def __str__(self):
        if self.kind == "timeout":
            return "timed out" + (f": {self.detail}" if self.detail else "")
        prefix = {
            "denied": "denied",
            "invalid-request": "invalid request",
            "connection": "connection failed",
            "tls": "TLS failed",
        }[self.kind]
        return f"{prefix}: {self.detail}"

    @property
    def no_answer(self):
        """True when the request was allowed but nothing answered (timeout, connection, TLS)."""
        return self.kind in ("timeout", "connection", "tls")


@dataclasses.dataclass
class Request:
    """One request, as the host receives it."""

    method: str
    url: str
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    timeout_ms: object = None
    max_redirects: int = 0

    def header(self, name):
        """The first header with this name (case-insensitive), or None."""
        return _find_header(self.headers, name)


@dataclasses.dataclass
class Response:
    """What came back. Build one by hand to answer a request in a unit test."""

    status: int = 200
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    body_truncated: bool = False
    elapsed_ms: float = 0.0
    final_url: str = ""
    remote_address: object = None
    cert_not_after: object = None

    def header(self, name):
        """The first header with this name (case-insensitive), or None."""
        return _find_header(self.headers, name)

    @property
    def ok(self):
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def text(self):
        """The body as text (UTF-8, invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON; raises ValueError saying where it is not JSON."""
        try:
            return _json.loads(self.body.decode("utf-8", "replace"))
        except ValueError as e:
            what = f"the body of {self.final_url}" if self.final_url else "the body"
            cut = ", cut at the grant's max_body" if self.body_truncated else ""
            raise ValueError(f"{what} ({len(self.body)} bytes{cut}) is not JSON: {e}") from None


def _find_header(headers, name):
    wanted = name.lower()
    for k, v in headers:
        if k.lower() == wanted:
            return v
    return None


def request(method, url, *, headers=None, body=None, json=None, timeout=None, follow_redirects=0):
    """Sends one request and returns its Response; raises HttpError when none came back.

    headers: a dict or a list of (name, value) pairs.
    body: bytes or str (sent as UTF-8); json: a value sent as JSON (sets content-type).
    timeout: seconds for the whole request; the host caps it at the action's deadline.
    follow_redirects: how many redirects to follow (True means 10); 0 returns the 3xx.
    """
    method = str(method).upper()
    if method not in METHODS:
        raise ValueError(f"HTTP method must be one of {', '.join(METHODS)}, not {method!r}")
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    pairs = [(str(k), str(v)) for k, v in pairs]
    if json is not None:
        if body is not None:
            raise ValueError("give either body or json, not both")
        body = _json.dumps(json, ensure_ascii=False)
        if _find_header(pairs, "content-type") is None:
            pairs.append(("content-type", "application/json"))
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
    if timeout is None:
        timeout_ms = None
    else:
        timeout_ms = min(max(1, round(float(timeout) * 1000)), _MAX_TIMEOUT_MS)
    if follow_redirects is True:
        follow_redirects = 10
    redirects = int(follow_redirects)
    if not 0 <= redirects <= _MAX_REDIRECTS:
        raise ValueError(f"follow_redirects must be between 0 and {_MAX_REDIRECTS}, not {redirects}")
    req = Request(method, str(url), pairs, bytes(body), timeout_ms, redirects)
    return _host.current().http(req)


def get(url, **kwargs):
    return request("GET", url, **kwargs)


def head(url, **kwargs):
    return request("HEAD", url, **kwargs)


def post(url, **kwargs):
    return request("POST", url, **kwargs)


def put(url, **kwargs):
    return request("PUT", url, **kwargs)


def patch(url, **kwargs):
    return request("PATCH", url, **kwargs)


def delete(url, **kwargs):
    return request("DELETE", url, **kwargs)
