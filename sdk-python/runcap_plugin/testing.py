"""A recording host for native unit tests of plugin logic: no WebAssembly, no runcap.

    from runcap_plugin.testing import MockHost
    from runcap_plugin import HttpError, Response

    host = MockHost().answer_json({"status": "up"}).answer_http(HttpError("timeout"))
    outcome = host.run(app.run, {"url": "http://svc/health"})
    assert outcome.status == "ok"
    assert host.requests[0].url == "http://svc/health"
    assert host.logs[0].message == "answer"
    assert "GET" in host.stdout

`run` goes through exactly what the component does with the params JSON (parsing,
validation, the mapping of exceptions to errors), so it returns an Outcome or raises
InvalidParams, Denied or Failed (whose message is the traceback) as runcap would see
them. HTTP requests are answered from a queue of canned answers; an empty queue
answers HttpError("connection", "no canned response").
"""

import collections
import contextlib
import dataclasses
import io
import json
import time

from . import host as _host
from .http import HttpError, Response
from .plugin import Context


@dataclasses.dataclass
class LogLine:
    level: str
    message: str
    fields: dict


class MockHost:
    def __init__(self, *, environment="test", runbook="test", step="test", deadline_s=60.0):
        self._answers = collections.deque()
        # Requests the plugin sent, in order (runcap_plugin.http.Request).
        self.requests = []
        # Log lines the plugin wrote, in order.
        self.logs = []
        # What the plugin printed to stdout and stderr, over every run.
        self.stdout = ""
        self.stderr = ""
        self.environment = environment
        self.runbook = runbook
        self.step = step
        self.deadline_s = deadline_s
        self._entered = []

    # --- canned answers ----------------------------------------------------------------

    def answer_http(self, answer):
        """Queues the answer to the next request: a Response or an HttpError."""
        if not isinstance(answer, (Response, HttpError)):
            raise TypeError("answer_http takes a Response or an HttpError")
        self._answers.append(answer)
        return self

    def answer_json(self, value, status=200, headers=None):
        """Queues a JSON response."""
        hs = [("content-type", "application/json")] + list(headers or [])
        body = json.dumps(value).encode("utf-8")
        return self.answer_http(Response(status=status, headers=hs, body=body))

    def answer_text(self, text, status=200, headers=None):
        """Queues a text response."""
        hs = [("content-type", "text/plain")] + list(headers or [])
        return self.answer_http(Response(status=status, headers=hs, body=text.encode("utf-8")))

    # --- driving a plugin --------------------------------------------------------------

    def context(self, *, dry_run=False):
        """A context like the one runcap passes, with a deadline `deadline_s` from now."""
        return Context(
            run_id="test-run",
            environment=self.environment,
            runbook=self.runbook,
            step=self.step,
            dry_run=dry_run,
            deadline_ms=int((time.time() + self.deadline_s) * 1000),
        )

    def run(self, plugin, params=None, *, dry_run=False):
        """Runs the plugin's action as runcap would: `params` is a dict (sent as JSON) or
        JSON text. Returns the Outcome or raises InvalidParams, Denied or Failed."""
        with self._capture():
            return plugin.run(self.context(dry_run=dry_run), _json_text(params))

    def validate(self, plugin, params=None):
        """What `runcap check` gets: None when the params are fine, else the message."""
        with self._capture():
            return plugin.validate(_json_text(params))

    def describe(self, plugin):
        """The descriptor, with the params schema parsed."""
        d = plugin.descriptor()
        return dict(d, params_schema=json.loads(d["params_schema"]))

    def __enter__(self):
        """`with host:` makes this the host (and captures what is printed) for direct
        calls such as `run(host.context(), Params(...))`."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._capture())
        self._entered.append(stack)
        return self

    def __exit__(self, *exc):
        self._entered.pop().close()
        return False

    @contextlib.contextmanager
    def _capture(self):
        out, err = io.StringIO(), io.StringIO()
        try:
            with _host.using(self), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
        finally:
            self.stdout += out.getvalue()
            self.stderr += err.getvalue()

    # --- the host interface ------------------------------------------------------------

    def log(self, level, message, fields):
        self.logs.append(LogLine(level, message, dict(fields)))

    def http(self, request):
        self.requests.append(request)
        if not self._answers:
            raise HttpError("connection", "no canned response")
        answer = self._answers.popleft()
        if isinstance(answer, HttpError):
            raise answer
        return dataclasses.replace(answer, final_url=answer.final_url or request.url)


def _json_text(params):
    if params is None:
        return "{}"
    if isinstance(params, str):
        return params
    return json.dumps(params)
