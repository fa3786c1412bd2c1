"""py-status-check's logic, against canned HTTP answers (no WebAssembly, no runcap).

Run: sdk-python/dev.sh test
"""

import unittest

import app
from runcap_plugin import Failed, HttpError, InvalidParams, Response
from runcap_plugin.testing import MockHost

URL = "http://svc.test/health"


class StatusCheck(unittest.TestCase):
    def test_expected_status_is_ok_and_says_so(self):
        host = MockHost().answer_http(Response(status=200, elapsed_ms=12.34))
        outcome = host.run(app.run, {"url": URL})
        self.assertEqual(outcome.status, "ok")
        self.assertEqual(outcome.summary, f"GET {URL} -> 200 in 12.3 ms")
        self.assertEqual(outcome.details["status"], 200)
        self.assertEqual(outcome.details["expect_status"], 200)
        self.assertEqual(dict(outcome.metrics), {"response_time_ms": 12.3, "status": 200.0})
        self.assertEqual([(r.method, r.url, r.timeout_ms) for r in host.requests], [("GET", URL, None)])
        self.assertIn(f"GET {URL} -> 200", host.stdout)
        self.assertEqual(host.logs[0].message, "answer")
        self.assertEqual(host.logs[0].fields["status"], "200")

    def test_another_status_fails_naming_both(self):
        host = MockHost().answer_http(Response(status=503))
        outcome = host.run(app.run, {"url": URL})
        self.assertEqual(outcome.status, "fail")
        self.assertTrue(outcome.summary.endswith("status 503, expected 200"), outcome.summary)

    def test_a_chosen_status_is_expected_instead(self):
        host = MockHost().answer_http(Response(status=204))
        self.assertEqual(host.run(app.run, {"url": URL, "expect_status": 204}).status, "ok")

    def test_a_json_field_is_compared_as_json(self):
        host = MockHost().answer_json({"status": "up", "checks": {"db": True}, "n": 3})
        check = {"url": URL, "json": {"pointer": "/checks/db", "equals": True}}
        outcome = host.run(app.run, check)
        self.assertEqual(outcome.status, "ok", outcome)
        self.assertEqual(
            outcome.details["json"], {"pointer": "/checks/db", "expected": True, "actual": True, "passed": True}
        )
        # 3 equals 3.0, but true is not 1.
        host.answer_json({"n": 3}).answer_json({"flag": True})
        self.assertEqual(host.run(app.run, {"url": URL, "json": {"pointer": "/n", "equals": 3.0}}).status, "ok")
        wrong = host.run(app.run, {"url": URL, "json": {"pointer": "/flag", "equals": 1}})
        self.assertEqual(wrong.status, "fail")
        self.assertIn("json /flag is true, expected 1", wrong.summary)

    def test_a_missing_json_field_fails(self):
        host = MockHost().answer_json({"status": "up"})
        outcome = host.run(app.run, {"url": URL, "json": {"pointer": "/version", "equals": "2"}})
        self.assertEqual(outcome.status, "fail")
        self.assertIn("json /version is missing", outcome.summary)
        self.assertIsNone(outcome.details["json"]["actual"])

    def test_a_body_that_is_not_json_is_an_error_with_its_traceback(self):
        host = MockHost().answer_text("<html>hi</html>")
        with self.assertRaises(Failed) as e:
            host.run(app.run, {"url": URL, "json": {"pointer": "/status", "equals": "up"}})
        self.assertIn("Traceback (most recent call last)", e.exception.message)
        self.assertIn("is not JSON", e.exception.message)
        self.assertIn("app.py", e.exception.message)

    def test_no_answer_is_a_failed_check(self):
        host = MockHost().answer_http(HttpError("timeout"))
        outcome = host.run(app.run, {"url": URL, "timeout_ms": 1500})
        self.assertEqual(outcome.status, "fail")
        self.assertEqual(outcome.details["error"], "timeout")
        self.assertEqual(host.requests[0].timeout_ms, 1500)
        self.assertEqual(host.logs[0].level, "warn")

    def test_a_denial_is_the_steps_error(self):
        host = MockHost().answer_http(HttpError("denied", "not granted"))
        with self.assertRaises(Exception) as e:
            host.run(app.run, {"url": URL})
        self.assertEqual(e.exception.kind, "denied")

    def test_params_are_checked(self):
        host = MockHost()
        for params, words in [
            ({}, "url: missing"),
            ({"url": "ftp://x"}, "does not match"),
            ({"url": URL, "expect_status": "200"}, "expect_status: expected an integer"),
            ({"url": URL, "expect_status": 700}, "above the maximum 599"),
            ({"url": URL, "json": {"pointer": "status", "equals": 1}}, "json.pointer"),
            ({"url": URL, "json": {"pointer": "/status"}}, "json.equals: missing"),
            ({"url": URL, "expect": 200}, "expect: unknown key"),
        ]:
            with self.subTest(params=params):
                self.assertIn(words, host.validate(app.run, params))
                with self.assertRaises(InvalidParams):
                    host.run(app.run, params)
        self.assertEqual(host.requests, [], "invalid params send nothing")
        self.assertIsNone(host.validate(app.run, {"url": URL, "json": {"pointer": "/a", "equals": None}}))

    def test_describe_has_the_schema(self):
        d = MockHost().describe(app.run)
        self.assertEqual((d["name"], d["version"]), ("py-status-check", "0.1.0"))
        schema = d["params_schema"]
        self.assertEqual(schema["required"], ["url"])
        self.assertEqual(schema["properties"]["expect_status"]["default"], 200)

    def test_pointer_lookup(self):
        doc = {"a": [{"b/c": 1, "m~n": 2}], "": 3}
        self.assertEqual(app.lookup(doc, ""), doc)
        self.assertEqual(app.lookup(doc, "/a/0/b~1c"), 1)
        self.assertEqual(app.lookup(doc, "/a/0/m~0n"), 2)
        self.assertEqual(app.lookup(doc, "/"), 3)
        self.assertIs(app.lookup(doc, "/a/1"), app._MISSING)
        self.assertIs(app.lookup(doc, "/a/x"), app._MISSING)


if __name__ == "__main__":
    unittest.main()
