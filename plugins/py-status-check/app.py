"""py-status-check: GET a URL and judge the answer's status and, optionally, one field
of its JSON body.

    with = { url = "https://api.example.com/health", expect_status = 200,
             json = { pointer = "/status", equals = "up" } }

ok when every condition holds, fail otherwise (or when the request gets no answer).
A body that is not JSON while `json` is set is an error of the step, reported with the
parse error and where it was raised.

Build: sdk-python/dev.sh build (into target/wasm32-wasip2/release/py_status_check.wasm).
"""

import dataclasses
import json
from typing import Any, Optional

from runcap_plugin import Context, HttpError, Outcome, http, log, param, plugin
from runcap_plugin.params import json_equal


@dataclasses.dataclass
class JsonCheck:
    """One field of the JSON body that must have a given value."""

    pointer: str = param(doc="Where the field is (RFC 6901), e.g. /status.", pattern="^(/.*)?$")
    equals: Any = param(doc="The JSON value it must have.")


@dataclasses.dataclass
class Params:
    url: str = param(doc="The URL to GET.", pattern="^https?://")
    expect_status: int = param(200, doc="The status the answer must have.", minimum=100, maximum=599)
    json: Optional[JsonCheck] = param(None, doc="One field of the JSON body to check.")
    timeout_ms: Optional[int] = param(
        None, doc="Give up after this long (default: the step's time limit).", minimum=1
    )


_MISSING = object()


def lookup(document, pointer):
    """The value at an RFC 6901 JSON pointer, or _MISSING."""
    if pointer == "":
        return document
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return _MISSING
    return value


@plugin(
    name="py-status-check",
    version="0.1.0",
    description="GET a URL; ok when the status (and optionally one JSON field) is as expected",
)
def run(ctx: Context, params: Params) -> Outcome:
    url = params.url
    timeout = params.timeout_ms / 1000 if params.timeout_ms else None
    try:
        resp = http.get(url, timeout=timeout)
    except HttpError as e:
        # No answer is a failed check; a denial (or a malformed URL) is an error of the step.
        if not e.no_answer:
            raise
        log.warn("no answer", url=url, error=str(e))
        return Outcome.fail(f"GET {url}: {e}", details={"url": url, "error": e.kind, "message": e.detail})

    ms = round(resp.elapsed_ms, 1)
    print(f"GET {url} -> {resp.status} in {ms} ms")
    log.info("answer", url=url, status=resp.status, elapsed_ms=ms)

    problems = []
    details = {
        "url": url,
        "final_url": resp.final_url,
        "status": resp.status,
        "expect_status": params.expect_status,
        "response_time_ms": ms,
    }
    if resp.status != params.expect_status:
        problems.append(f"status {resp.status}, expected {params.expect_status}")

    if params.json is not None:
        pointer, expected = params.json.pointer, params.json.equals
        actual = lookup(resp.json(), pointer)
        passed = actual is not _MISSING and json_equal(actual, expected)
        details["json"] = {
            "pointer": pointer,
            "expected": expected,
            "actual": None if actual is _MISSING else actual,
            "passed": passed,
        }
        if actual is _MISSING:
            problems.append(f"json {pointer} is missing")
        elif not passed:
            problems.append(f"json {pointer} is {json.dumps(actual)}, expected {json.dumps(expected)}")

    summary = f"GET {url} -> {resp.status} in {ms} ms"
    metrics = {"response_time_ms": ms, "status": resp.status}
    if problems:
        return Outcome.fail(f"{summary}: {'; '.join(problems)}", details, metrics)
    return Outcome.ok(summary, details, metrics)
