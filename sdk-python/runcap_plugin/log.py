"""Structured log lines in the step's record (`runcap show RUN`). Always available.

    from runcap_plugin import log
    log.info("answer", url=url, status=200)

Field values that are not strings are written as JSON (`200`, `true`, `{"a": 1}`).
`print()` works too: what a plugin prints lands in the step's stdout.
"""

import json

from . import host as _host

LEVELS = ("debug", "info", "warn", "error")


def _text(value):
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return str(value)


def write(level, message, **fields):
    """Appends one line at `level` ("debug", "info", "warn" or "error")."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    pairs = [(str(k), _text(v)) for k, v in fields.items()]
    _host.current().log(level, str(message), pairs)


def debug(message, **fields):
    write("debug", message, **fields)


def info(message, **fields):
    write("info", message, **fields)


def warn(message, **fields):
    write("warn", message, **fields)


warning = warn


def error(message, **fields):
    write("error", message, **fields)
