"""A plugin is one function, turned into runcap's `describe`, `validate` and `run`.

    @plugin(name="my-check", version="0.1.0", description="Is it up?")
    def run(ctx: Context, params: Params) -> Outcome:
        ...

This module holds the logic of the three exports in plain Python, so unit tests drive
exactly what the component runs; `runcap_plugin._component` only converts to and from
the generated bindings.
"""

import dataclasses
import inspect
import json
import time
import traceback
import typing

from . import params as _params
from .http import HttpError
from .outcome import ActionError, Denied, Failed, InvalidParams, Outcome


@dataclasses.dataclass(frozen=True)
class Context:
    """Where and how this action runs; the host fills it."""

    run_id: str = "test-run"
    environment: str = "test"
    runbook: str = "test"
    step: str = "test"
    # When true the plugin must not change anything: report what it would do instead.
    dry_run: bool = False
    # Wall-clock deadline, milliseconds since the Unix epoch; 0 means none known.
    deadline_ms: int = 0

    def remaining(self):
        """Seconds left before the host stops this action (None when no deadline is known)."""
        if not self.deadline_ms:
            return None
        return max(0.0, self.deadline_ms / 1000 - time.time())


class Plugin:
    """A plugin function with its name, version, description and params type.

    Calling it calls the function itself: `run(ctx, Params(...))`.
    """

    def __init__(self, func, *, name, version, description="", params=None):
        self.func = func
        self.name = str(name)
        self.version = str(version)
        if not description:
            description = " ".join((inspect.getdoc(func) or "").split("\n\n")[0].split())
        self.description = str(description)
        self.params = params
        if params is None or isinstance(params, dict):
            self.schema = params if params is not None else {"type": "object"}
        else:
            self.schema = _params.schema_of(params)
        # Fails now, at import (so at build time), rather than in the first `describe`.
        self.schema_json = json.dumps(self.schema, ensure_ascii=False)
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", self.name)
        self.__wrapped__ = func

    def __call__(self, ctx, params):
        return self.func(ctx, params)

    def __repr__(self):
        return f"<runcap plugin {self.name} {self.version}>"

    def descriptor(self):
        """What `describe` returns: name, version, description and the params JSON Schema."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "params_schema": self.schema_json,
        }

    def parse(self, text):
        """The params from their JSON text; raises InvalidParams."""
        return _params.parse(text, self.params)

    def validate(self, text):
        """What `validate` answers: None when the params are fine, else why not."""
        try:
            self.parse(text)
        except InvalidParams as e:
            return e.message
        except BaseException as e:  # a bug in a params class must not trap the component
            return format_exception(e)
        return None

    def run(self, ctx, text):
        """What `run` does: parse the params, call the function, check what it returned.

        Returns an Outcome or raises ActionError: InvalidParams for params that do not
        parse, Denied for an uncaught HttpError denial, InvalidParams for an uncaught
        invalid request, and Failed, with the traceback, for any other exception.
        """
        try:
            params = self.parse(text)
        except InvalidParams:
            raise
        except BaseException as e:  # a bug in a params class
            raise Failed(format_exception(e)) from None
        try:
            result = self.func(ctx, params)
        except ActionError:
            raise
        except HttpError as e:
            if e.kind == "denied":
                raise Denied(e.detail) from None
            if e.kind == "invalid-request":
                raise InvalidParams(e.detail) from None
            raise Failed(format_exception(e, skip=1)) from None
        except BaseException as e:
            raise Failed(format_exception(e, skip=1)) from None
        if not isinstance(result, Outcome):
            raise Failed(
                f"{self.name}: run returned {type(result).__name__}, not an Outcome "
                "(return Outcome.ok/warn/fail(...))"
            )
        try:
            result.details_json()
        except ValueError as e:
            raise Failed(f"{self.name}: {e}") from None
        return result


def format_exception(exc, skip=0):
    """The exception's traceback as text, without its first `skip` frames (the SDK's)."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n")
    if isinstance(exc, ImportError):
        text += (
            "\n(a component can import only what was imported when it was built: "
            "import modules at the top of app.py or of a module it imports)"
        )
    return text


def plugin(*, name, version, description="", params=None):
    """Turns a function `run(ctx, params) -> Outcome` into a runcap plugin.

    `params`: a dataclass, a JSON Schema dict, or None to take the type from the
    annotation of the function's second parameter (no annotation: any JSON object,
    passed as a dict). `description` defaults to the first paragraph of the docstring.
    """

    def wrap(func):
        spec = params
        if spec is None:
            spec = _annotated_params(func)
        return Plugin(func, name=name, version=version, description=description, params=spec)

    return wrap


def _annotated_params(func):
    sig = inspect.signature(func)
    names = list(sig.parameters)
    if len(names) != 2:
        raise TypeError(f"{func.__name__} must take (ctx, params), not ({', '.join(names)})")
    hints = typing.get_type_hints(func)
    tp = hints.get(names[1])
    if tp is None or tp is dict or typing.get_origin(tp) is dict:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    raise TypeError(
        f"{func.__name__}: params annotation {tp!r} is not a dataclass; pass params= a "
        "dataclass or a JSON Schema dict"
    )
