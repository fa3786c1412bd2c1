import dataclasses
import json
import unittest

from runcap_plugin import (
    Context,
    Denied,
    Failed,
    HttpError,
    InvalidParams,
    Outcome,
    http,
    log,
    param,
    plugin,
)
from runcap_plugin.testing import MockHost


@dataclasses.dataclass
class Params:
    url: str = param(doc="The endpoint.")
    mode: str = "normal"


@plugin(name="demo", version="1.2.3")
def demo(ctx: Context, params: Params) -> Outcome:
    """Checks an endpoint.

    More words that are not the description."""
    print(f"mode {params.mode} in {ctx.environment}")
    if params.mode == "crash":
        return {}["nothing"]
    if params.mode == "exit":
        raise SystemExit(2)
    if params.mode == "give-up":
        raise InvalidParams("mode give-up is not allowed here")
    if params.mode == "wrong-return":
        return "ok"
    if params.mode == "bad-details":
        return Outcome.ok("x", details={"when": object()})
    resp = http.get(params.url)
    log.info("answer", status=resp.status)
    return Outcome.ok(f"{resp.status}", details={"dry_run": ctx.dry_run})


class RunTest(unittest.TestCase):
    def test_a_run_returns_the_outcome(self):
        host = MockHost(environment="prod").answer_http(HttpError("timeout")).answer_json({})
        with self.assertRaises(Failed):
            host.run(demo, {"url": "http://a"})
        outcome = host.run(demo, json.dumps({"url": "http://a"}), dry_run=True)
        self.assertEqual(outcome, Outcome.ok("200", details={"dry_run": True}))
        self.assertEqual(host.stdout, "mode normal in prod\n" * 2)
        self.assertEqual([line.fields for line in host.logs], [{"status": "200"}])

    def test_any_uncaught_exception_is_failed_with_its_traceback(self):
        with self.assertRaises(Failed) as e:
            MockHost().run(demo, {"url": "http://a", "mode": "crash"})
        text = e.exception.message
        self.assertTrue(text.startswith("Traceback (most recent call last):\n"), text)
        self.assertTrue(text.endswith("KeyError: 'nothing'"), text)
        self.assertIn('test_plugin.py", line', text)
        self.assertIn("return {}[\"nothing\"]", text)
        self.assertNotIn("runcap_plugin", text, "the SDK's own frames are left out")
        with self.assertRaises(Failed) as e:
            MockHost().run(demo, {"url": "http://a", "mode": "exit"})
        self.assertIn("SystemExit: 2", e.exception.message)

    def test_http_errors_left_uncaught(self):
        for error, kind in [
            (HttpError("denied", "not granted"), Denied),
            (HttpError("invalid-request", "bad url"), InvalidParams),
            (HttpError("connection", "refused"), Failed),
        ]:
            with self.subTest(kind=error.kind), self.assertRaises(kind) as e:
                MockHost().answer_http(error).run(demo, {"url": "http://a"})
            if kind is Failed:
                self.assertIn("HttpError: connection failed: refused", e.exception.message)
            else:
                self.assertEqual(e.exception.message, error.detail)

    def test_action_errors_pass_through(self):
        with self.assertRaises(InvalidParams) as e:
            MockHost().run(demo, {"url": "http://a", "mode": "give-up"})
        self.assertEqual(e.exception.message, "mode give-up is not allowed here")
        self.assertEqual(e.exception.kind, "invalid-params")

    def test_what_run_returns_is_checked(self):
        with self.assertRaisesRegex(Failed, "demo: run returned str, not an Outcome"):
            MockHost().run(demo, {"url": "http://a", "mode": "wrong-return"})
        with self.assertRaisesRegex(Failed, "outcome details are not JSON"):
            MockHost().run(demo, {"url": "http://a", "mode": "bad-details"})

    def test_params_errors_are_invalid_params_and_nothing_runs(self):
        host = MockHost()
        with self.assertRaises(InvalidParams) as e:
            host.run(demo, {"mode": 3})
        self.assertEqual(e.exception.message, "url: missing (required); mode: expected a string, got number 3")
        self.assertEqual(host.stdout, "")
        self.assertEqual(host.validate(demo, "{"), "params are not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")
        self.assertIsNone(host.validate(demo, {"url": "x"}))

    def test_describe(self):
        d = MockHost().describe(demo)
        self.assertEqual(d["name"], "demo")
        self.assertEqual(d["version"], "1.2.3")
        self.assertEqual(d["description"], "Checks an endpoint.")
        self.assertEqual(d["params_schema"]["required"], ["url"])

    def test_calling_the_plugin_calls_the_function(self):
        with MockHost().answer_json({}) as host:
            outcome = demo(host.context(), Params(url="http://a"))
        self.assertEqual(outcome.summary, "200")
        self.assertGreater(host.context().remaining(), 59)
        self.assertIsNone(Context().remaining())
        self.assertEqual(host.stdout, "mode normal in test\n")


class BrokenParamsTest(unittest.TestCase):
    def test_a_bug_in_a_params_class_is_failed_not_a_crash(self):
        @dataclasses.dataclass
        class Buggy:
            n: int = 1

            def __post_init__(self):
                raise KeyError("oops")

        @plugin(name="b", version="1")
        def buggy(ctx, params: Buggy):
            return Outcome.ok("never")

        with self.assertRaises(Failed) as e:
            MockHost().run(buggy)
        self.assertIn("KeyError: 'oops'", e.exception.message)
        self.assertIn("KeyError: 'oops'", MockHost().validate(buggy))


class DeclarationTest(unittest.TestCase):
    def test_params_as_a_schema_dict_or_a_plain_dict(self):
        schema = {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}}

        @plugin(name="s", version="1", params=schema)
        def with_schema(ctx, params):
            return Outcome.ok(str(params))

        @plugin(name="d", version="1", description="Plain.")
        def with_dict(ctx, params: dict):
            return Outcome.ok(str(params))

        self.assertEqual(MockHost().run(with_schema).summary, "{'n': 1}")
        self.assertEqual(MockHost().run(with_dict, {"x": [1]}).summary, "{'x': [1]}")
        self.assertEqual(MockHost().describe(with_dict)["params_schema"], {"type": "object"})
        with self.assertRaises(InvalidParams):
            MockHost().run(with_schema, {"n": "one"})

    def test_declaration_mistakes_fail_at_import(self):
        with self.assertRaisesRegex(TypeError, r"must take \(ctx, params\)"):

            @plugin(name="x", version="1")
            def one_arg(ctx):
                pass

        with self.assertRaisesRegex(TypeError, "not a dataclass"):

            @plugin(name="x", version="1")
            def wrong(ctx, params: int):
                pass


if __name__ == "__main__":
    unittest.main()
