"""The component's entry module: the only module that touches the bindings
componentize-py generates (`wit_world`, `componentize_py_types`).

`sdk-python/dev.sh build` names it as the app componentize-py pre-initialises. Importing
it imports the plugin's `app` module, installs runcap's imports as the host, and
defines `WitWorld`, the class whose methods are the component's exports.

componentize-py snapshots the interpreter after this import, and a component has no
file system at run time: everything an export uses must be imported here.
"""

import ast  # noqa: F401  traceback imports these lazily; at run time it could not
import linecache
import sys
import traceback
import unicodedata  # noqa: F401

try:
    import _suggestions  # noqa: F401  ("Did you mean ...?" in tracebacks)
except ImportError:
    pass

from componentize_py_types import Err
from wit_world.imports import invocation as _invocation
from wit_world.imports import types as _types

try:
    from wit_world.imports import log as _wit_log
except ImportError:  # a world without the log import (`plugin`)
    _wit_log = None
try:
    from wit_world.imports import http as _wit_http
except ImportError:  # a world without the http import (`notifier`, `redactor`, ...)
    _wit_http = None

from . import host as _host
from .http import HttpError, Response
from .outcome import ActionError, Status
from .plugin import Context, Plugin, format_exception


class WitHost:
    """runcap's imports, behind the SDK's host interface."""

    def log(self, level, message, fields):
        if _wit_log is None:
            print(f"[{level}] {message} {dict(fields)}", file=sys.stderr)
            return
        _wit_log.write(_LOG_LEVELS[level], message, list(fields))

    def http(self, request):
        if _wit_http is None:
            raise HttpError(
                "denied",
                "this component has no runcap:plugin/http import: build it for a world "
                "that has one (check, service-control, chaos-drill)",
            )
        req = _wit_http.Request(
            method=_wit_http.Method[request.method],
            url=request.url,
            headers=list(request.headers),
            body=bytes(request.body),
            timeout_ms=request.timeout_ms,
            max_redirects=request.max_redirects,
        )
        try:
            r = _wit_http.send(req)
        except Err as e:
            raise _http_error(e.value) from None
        return Response(
            status=r.status,
            headers=list(r.headers),
            body=bytes(r.body),
            body_truncated=r.body_truncated,
            elapsed_ms=r.elapsed_us / 1000,
            final_url=r.final_url,
            remote_address=r.remote_address,
            cert_not_after=r.cert_not_after,
        )


if _wit_log is not None:
    _LOG_LEVELS = {
        "debug": _wit_log.Level.DEBUG,
        "info": _wit_log.Level.INFO,
        "warn": _wit_log.Level.WARN,
        "error": _wit_log.Level.ERROR,
    }


def _http_error(e):
    kinds = {
        "Error_Denied": "denied",
        "Error_InvalidRequest": "invalid-request",
        "Error_Timeout": "timeout",
        "Error_Connection": "connection",
        "Error_Tls": "tls",
    }
    kind = kinds.get(type(e).__name__, "connection")
    return HttpError(kind, getattr(e, "value", "") or "")


_STATUS = {
    Status.OK: _types.Status.OK,
    Status.WARN: _types.Status.WARN,
    Status.FAIL: _types.Status.FAIL,
}
_ERRORS = {
    "invalid-params": _types.ActionError_InvalidParams,
    "denied": _types.ActionError_Denied,
    "failed": _types.ActionError_Failed,
}


def _find_plugin(module):
    found = [v for v in vars(module).values() if isinstance(v, Plugin)]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise RuntimeError(
            f"{module.__name__}.py must define exactly one @runcap_plugin.plugin function "
            f"(found: {names})"
        )
    return found[0]


def _keep_source_lines():
    """Reads the plugin's and the SDK's sources into linecache now, so tracebacks at run
    time (when no file can be read) still show the lines that raised."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if not path.endswith(".py") or path.startswith(sys.prefix):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except (OSError, UnicodeDecodeError):
            continue
        # An entry without an mtime is one linecache.checkcache never discards.
        linecache.cache[path] = (sum(len(line) for line in lines), None, lines, path)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


import app  # noqa: E402  the plugin

_PLUGIN = _find_plugin(app)
HOST = WitHost()
_host.install(HOST)
_keep_source_lines()
# Format one exception now, so whatever traceback needs is loaded before the snapshot.
try:
    raise ValueError("warm-up")
except ValueError as _e:
    traceback.format_exception(type(_e), _e, _e.__traceback__)
    del _e


class WitWorld:
    """The component's exports: `describe`, `validate` and `run`."""

    def describe(self):
        d = _PLUGIN.descriptor()
        return _types.Descriptor(
            name=d["name"],
            version=d["version"],
            description=d["description"],
            params_schema=d["params_schema"],
        )

    def validate(self, params):
        try:
            problem = _PLUGIN.validate(params)
        except BaseException as e:
            problem = format_exception(e)
        finally:
            _flush()
        if problem is not None:
            raise Err(problem)

    def run(self, ctx, params):
        try:
            names = _invocation.current()
            context = Context(
                run_id=names.run_id,
                environment=names.environment,
                runbook=names.runbook,
                step=names.step,
                dry_run=ctx.dry_run,
                deadline_ms=ctx.deadline_ms,
            )
            outcome = _PLUGIN.run(context, params)
            result = _types.Outcome(
                status=_STATUS[outcome.status],
                summary=outcome.summary,
                details=outcome.details_json(),
                metrics=[_types.Metric(name=n, value=v) for n, v in outcome.metrics],
            )
        except ActionError as e:
            error = _ERRORS.get(e.kind, _types.ActionError_Failed)(e.message)
        except BaseException as e:  # never let an exception trap the component
            error = _types.ActionError_Failed(format_exception(e))
        else:
            error = None
        finally:
            _flush()
        if error is not None:
            raise Err(error)
        return result

