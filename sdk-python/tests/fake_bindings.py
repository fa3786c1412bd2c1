"""Stand-ins for the modules componentize-py generates for the world `check`
(`componentize-py -d wit -w check bindings DIR` writes their interface), so that
runcap_plugin._component can be imported and driven natively.

`install(app)` puts them, and `app` as the plugin module, into sys.modules; `remove()`
takes them out again. Calls to the imports are recorded in `calls`; `http_answers`
holds what `send` returns (an Err to raise, or a Response); `names`, what
`invocation.current` answers.
"""

import dataclasses
import enum
import sys
import types
from typing import Generic, Optional, TypeVar

E = TypeVar("E")


@dataclasses.dataclass(frozen=True)
class Err(Generic[E], Exception):
    value: E


calls = []
http_answers = []
# What `invocation.current()` answers: run id, environment, runbook, step.
names = ["r1", "prod", "health", "api"]


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def _types():
    @dataclasses.dataclass
    class Context:
        dry_run: bool
        deadline_ms: int

    class Status(enum.Enum):
        OK = 0
        WARN = 1
        FAIL = 2

    @dataclasses.dataclass
    class Metric:
        name: str
        value: float

    @dataclasses.dataclass
    class Outcome:
        status: Status
        summary: str
        details: str
        metrics: list

    @dataclasses.dataclass
    class ActionError_InvalidParams:
        value: str

    @dataclasses.dataclass
    class ActionError_Denied:
        value: str

    @dataclasses.dataclass
    class ActionError_Failed:
        value: str

    @dataclasses.dataclass
    class Descriptor:
        name: str
        version: str
        description: str
        params_schema: str

    return _module("wit_world.imports.types", **{k: v for k, v in locals().items()})


def _invocation():
    @dataclasses.dataclass
    class Names:
        run_id: str
        environment: str
        runbook: str
        step: str

    def current():
        return Names(*names)

    return _module("wit_world.imports.invocation", Names=Names, current=current)


def _log():
    class Level(enum.Enum):
        DEBUG = 0
        INFO = 1
        WARN = 2
        ERROR = 3

    def write(level, message, fields):
        calls.append(("log", level, message, fields))

    return _module("wit_world.imports.log", Level=Level, write=write)


def _http():
    class Method(enum.Enum):
        GET = 0
        HEAD = 1
        POST = 2
        PUT = 3
        DELETE = 4
        PATCH = 5

    @dataclasses.dataclass
    class Request:
        method: Method
        url: str
        headers: list
        body: bytes
        timeout_ms: Optional[int]
        max_redirects: int

    @dataclasses.dataclass
    class Response:
        status: int
        headers: list
        body: bytes
        body_truncated: bool
        elapsed_us: int
        final_url: str
        remote_address: Optional[str]
        cert_not_after: Optional[int]

    @dataclasses.dataclass
    class Error_Denied:
        value: str

    @dataclasses.dataclass
    class Error_InvalidRequest:
        value: str

    @dataclasses.dataclass
    class Error_Timeout:
        pass

    @dataclasses.dataclass
    class Error_Connection:
        value: str

    @dataclasses.dataclass
    class Error_Tls:
        value: str

    def send(req):
        calls.append(("http", req))
        answer = http_answers.pop(0)
        if isinstance(answer, Err):
            raise answer
        return answer

    return _module("wit_world.imports.http", **{k: v for k, v in locals().items()})


NAMES = [
    "componentize_py_types",
    "wit_world",
    "wit_world.imports",
    "wit_world.imports.types",
    "wit_world.imports.invocation",
    "wit_world.imports.log",
    "wit_world.imports.http",
    "app",
    "runcap_plugin._component",
]


def install(app):
    remove()
    calls.clear()
    http_answers.clear()
    tys, invocation, log, http = _types(), _invocation(), _log(), _http()
    imports = _module("wit_world.imports", types=tys, invocation=invocation, log=log, http=http)
    imports.__path__ = []
    world = _module("wit_world", imports=imports)
    world.__path__ = []
    sys.modules.update(
        {
            "componentize_py_types": _module("componentize_py_types", Err=Err),
            "wit_world": world,
            "wit_world.imports": imports,
            "wit_world.imports.types": tys,
            "wit_world.imports.invocation": invocation,
            "wit_world.imports.log": log,
            "wit_world.imports.http": http,
            "app": app,
        }
    )
    return tys, log, http


def remove():
    component = sys.modules.get("runcap_plugin._component")
    if component is not None:
        from runcap_plugin import host

        host.uninstall(component.HOST)
    for name in NAMES:
        sys.modules.pop(name, None)
    import runcap_plugin

    if hasattr(runcap_plugin, "_component"):
        del runcap_plugin._component
