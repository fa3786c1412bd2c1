"""runcap_plugin._component, the glue between the SDK and the generated bindings, driven
through stand-ins for those bindings (tests/fake_bindings.py). The end-to-end test
(tests/tests/python_plugin.rs) runs the real thing in runcap."""

import contextlib
import dataclasses
import importlib
import io
import json
import types
import unittest

import fake_bindings
from fake_bindings import Err
from runcap_plugin import Outcome, http, log, plugin


@dataclasses.dataclass
class Params:
    url: str
    mode: str = "ok"


@plugin(name="glue", version="0.3.0", description="Exercises the glue.")
def glue(ctx, params: Params):
    if params.mode == "boom":
        raise RuntimeError("boom")
    if params.mode == "warn":
        return Outcome.warn("meh", metrics={"n": 2})
    resp = http.post(params.url, json={"step": ctx.step}, timeout=1.5, follow_redirects=2)
    log.error("answer", status=resp.status)
    print("printed")
    return Outcome.ok(f"{resp.status} from {resp.final_url}", details={"ms": resp.elapsed_ms})


class ComponentTest(unittest.TestCase):
    def setUp(self):
        app = types.ModuleType("app")
        app.glue = glue
        self.types, self.log, self.http = fake_bindings.install(app)
        self.component = importlib.import_module("runcap_plugin._component")
        self.world = self.component.WitWorld()
        self.addCleanup(fake_bindings.remove)

    def ctx(self):
        return self.types.Context(False, 1)

    def test_describe(self):
        d = self.world.describe()
        self.assertEqual((d.name, d.version, d.description), ("glue", "0.3.0", "Exercises the glue."))
        self.assertEqual(json.loads(d.params_schema)["required"], ["url"])

    def test_validate(self):
        self.assertIsNone(self.world.validate('{"url": "http://a"}'))
        with self.assertRaises(Err) as e:
            self.world.validate('{"url": 1}')
        self.assertEqual(e.exception.value, "url: expected a string, got number 1")

    def test_run_converts_requests_answers_and_outcomes(self):
        fake_bindings.http_answers.append(
            self.http.Response(201, [("a", "b")], b"{}", False, 2500, "http://a/final", "127.0.0.1:80", None)
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = self.world.run(self.ctx(), '{"url": "http://a"}')
        self.assertEqual(result.status, self.types.Status.OK)
        self.assertEqual(result.summary, "201 from http://a/final")
        self.assertEqual(json.loads(result.details), {"ms": 2.5})
        self.assertEqual(result.metrics, [])
        (_, req), (_, level, message, fields) = fake_bindings.calls
        self.assertEqual(req.method, self.http.Method.POST)
        self.assertEqual(req.url, "http://a")
        self.assertEqual(req.headers, [("content-type", "application/json")])
        self.assertEqual(json.loads(req.body), {"step": "api"})
        self.assertEqual((req.timeout_ms, req.max_redirects), (1500, 2))
        self.assertEqual((level, message, fields), (self.log.Level.ERROR, "answer", [("status", "201")]))
        self.assertEqual(out.getvalue(), "printed\n")

    def test_metrics_and_status(self):
        result = self.world.run(self.ctx(), '{"url": "http://a", "mode": "warn"}')
        self.assertEqual(result.status, self.types.Status.WARN)
        self.assertEqual(result.metrics, [self.types.Metric("n", 2.0)])

    def test_errors_become_action_errors(self):
        with self.assertRaises(Err) as e:
            self.world.run(self.ctx(), '{"url": 3}')
        self.assertEqual(e.exception.value, self.types.ActionError_InvalidParams("url: expected a string, got number 3"))

        with self.assertRaises(Err) as e:
            self.world.run(self.ctx(), '{"url": "http://a", "mode": "boom"}')
        self.assertIsInstance(e.exception.value, self.types.ActionError_Failed)
        self.assertTrue(e.exception.value.value.startswith("Traceback (most recent call last):"))
        self.assertTrue(e.exception.value.value.endswith("RuntimeError: boom"))

        for answer, kind, text in [
            (self.http.Error_Denied("not granted"), self.types.ActionError_Denied, "not granted"),
            (self.http.Error_InvalidRequest("bad"), self.types.ActionError_InvalidParams, "bad"),
            (self.http.Error_Timeout(), self.types.ActionError_Failed, "HttpError: timed out"),
            (self.http.Error_Tls("expired"), self.types.ActionError_Failed, "HttpError: TLS failed: expired"),
        ]:
            fake_bindings.http_answers.append(Err(answer))
            with self.subTest(answer=answer), self.assertRaises(Err) as e:
                self.world.run(self.ctx(), '{"url": "http://a"}')
            self.assertIsInstance(e.exception.value, kind)
            self.assertIn(text, e.exception.value.value)

    def test_an_app_without_exactly_one_plugin_is_refused(self):
        fake_bindings.remove()
        fake_bindings.install(types.ModuleType("app"))
        with self.assertRaisesRegex(RuntimeError, "exactly one @runcap_plugin.plugin"):
            importlib.import_module("runcap_plugin._component")


if __name__ == "__main__":
    unittest.main()
