"""Write a runcap plugin in Python: one function, typed params, plain unit tests.

    import dataclasses
    from runcap_plugin import Context, Outcome, http, log, param, plugin

    @dataclasses.dataclass
    class Params:
        url: str = param(doc="The endpoint to check.")

    @plugin(name="my-check", version="0.1.0", description="Is it up?")
    def run(ctx: Context, params: Params) -> Outcome:
        resp = http.get(params.url)
        log.info("answer", status=resp.status)
        if resp.status == 200:
            return Outcome.ok("up", details={"status": resp.status})
        return Outcome.fail(f"down: {resp.status}", details={"status": resp.status})

The module holding the plugin is `app.py`; `sdk-python/dev.sh build DIR OUT.wasm` makes
it a component for the WIT world `check` (log + http). Capability calls go to the host
in `runcap_plugin.host`: runcap's imports in a component, `runcap_plugin.testing.MockHost`
in unit tests, which need no WebAssembly at all.
"""

from . import http, log
from .http import HttpError, Response
from .outcome import ActionError, Denied, Failed, InvalidParams, Outcome, Status
from .params import param
from .plugin import Context, Plugin, plugin

__all__ = [
    "ActionError",
    "Context",
    "Denied",
    "Failed",
    "HttpError",
    "InvalidParams",
    "Outcome",
    "Plugin",
    "Response",
    "Status",
    "http",
    "log",
    "param",
    "plugin",
]
