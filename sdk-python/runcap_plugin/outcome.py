"""What an action returns, and why it may return nothing."""

import enum
import json
import math


class Status(str, enum.Enum):
    """How an action judged what it looked at. Compares equal to its name: `Status.OK == "ok"`."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    def __str__(self):
        return self.value


class Outcome:
    """The result of an action that ran to completion: a status, one line for humans, a
    JSON object of details for later steps and operators, and named numbers (metrics).

        Outcome.ok("up", details={"status": 200}, metrics={"latency_ms": 3.2})
        Outcome.fail("down").detail("status", 503)
    """

    __slots__ = ("status", "summary", "details", "metrics")

    def __init__(self, status, summary, details=None, metrics=None):
        try:
            self.status = Status(status)
        except ValueError:
            raise ValueError(f"outcome status must be ok, warn or fail, not {status!r}") from None
        self.summary = str(summary)
        if details is None:
            details = {}
        if not isinstance(details, dict):
            raise TypeError(f"outcome details must be a dict, not {type(details).__name__}")
        self.details = dict(details)
        self.metrics = []
        if metrics is None:
            metrics = {}
        pairs = metrics.items() if isinstance(metrics, dict) else metrics
        for name, value in pairs:
            self.metric(name, value)

    @classmethod
    def ok(cls, summary, details=None, metrics=None):
        return cls(Status.OK, summary, details, metrics)

    @classmethod
    def warn(cls, summary, details=None, metrics=None):
        return cls(Status.WARN, summary, details, metrics)

    @classmethod
    def fail(cls, summary, details=None, metrics=None):
        return cls(Status.FAIL, summary, details, metrics)

    def detail(self, key, value):
        """Adds one field to the details; returns the outcome."""
        self.details[str(key)] = value
        return self

    def metric(self, name, value):
        """Adds one metric (a finite number); returns the outcome."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} must be finite, not {value}")
        self.metrics.append((str(name), value))
        return self

    def details_json(self):
        """The details as the JSON text runcap records; raises ValueError naming what is not JSON."""
        try:
            return json.dumps(self.details, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"outcome details are not JSON: {e}") from None

    def __eq__(self, other):
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.status, self.summary, self.details, self.metrics) == (
            other.status,
            other.summary,
            other.details,
            other.metrics,
        )

    def __repr__(self):
        return (
            f"Outcome({self.status.value!r}, {self.summary!r}, details={self.details!r}, "
            f"metrics={dict(self.metrics)!r})"
        )


class ActionError(Exception):
    """Why an action produced no outcome. Raise one of the subclasses from `run`."""

    kind = "failed"

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)

    def __str__(self):
        return self.message


class InvalidParams(ActionError):
    """The params are not what the plugin expects (WIT `action-error.invalid-params`)."""

    kind = "invalid-params"


class Denied(ActionError):
    """A capability the action needs was not granted (WIT `action-error.denied`)."""

    kind = "denied"


class Failed(ActionError):
    """Anything else (WIT `action-error.failed`); an uncaught exception becomes one whose
    message is its traceback."""

    kind = "failed"
