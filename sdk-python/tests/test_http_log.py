import unittest

from runcap_plugin import HttpError, Response, http, log
from runcap_plugin.testing import MockHost


class HttpTest(unittest.TestCase):
    def test_get_sends_a_request_and_returns_the_answer(self):
        host = MockHost().answer_json({"status": "up"}, headers=[("X-Version", "2")])
        with host:
            resp = http.get("http://svc/health")
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.ok)
        self.assertEqual(resp.json(), {"status": "up"})
        self.assertEqual(resp.header("x-version"), "2")
        self.assertIsNone(resp.header("missing"))
        self.assertEqual(resp.final_url, "http://svc/health")
        [req] = host.requests
        self.assertEqual((req.method, req.url, req.headers, req.body), ("GET", "http://svc/health", [], b""))
        self.assertEqual((req.timeout_ms, req.max_redirects), (None, 0))

    def test_request_options(self):
        host = MockHost().answer_http(Response(status=201))
        with host:
            http.request(
                "post",
                "http://svc/items",
                headers={"Authorization": "Bearer t"},
                json={"name": "é"},
                timeout=2.5,
                follow_redirects=True,
            )
        [req] = host.requests
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.header("content-type"), "application/json")
        self.assertEqual(req.header("authorization"), "Bearer t")
        self.assertEqual(req.body, '{"name": "é"}'.encode())
        self.assertEqual((req.timeout_ms, req.max_redirects), (2500, 10))

    def test_bodies_and_methods(self):
        host = MockHost()
        for _ in range(4):
            host.answer_http(Response())
        with host:
            http.put("http://a", body="text")
            http.patch("http://a", body=b"\x00\x01", headers=[("content-type", "application/octet-stream")])
            http.delete("http://a", timeout=0.0001)
            http.head("http://a")
        self.assertEqual([r.method for r in host.requests], ["PUT", "PATCH", "DELETE", "HEAD"])
        self.assertEqual(host.requests[0].body, b"text")
        self.assertEqual(host.requests[1].body, b"\x00\x01")
        self.assertEqual(host.requests[2].timeout_ms, 1)

    def test_mistakes_are_caught_before_sending(self):
        with MockHost() as host:
            with self.assertRaises(ValueError):
                http.request("FETCH", "http://a")
            with self.assertRaises(ValueError):
                http.post("http://a", body="x", json={})
            with self.assertRaises(TypeError):
                http.post("http://a", body=3)
            with self.assertRaises(ValueError):
                http.get("http://a", follow_redirects=300)
        self.assertEqual(host.requests, [])

    def test_errors_come_back_as_http_error(self):
        host = MockHost().answer_http(HttpError("tls", "expired"))
        with host, self.assertRaises(HttpError) as e:
            http.get("https://a")
        self.assertEqual(e.exception.kind, "tls")
        self.assertTrue(e.exception.no_answer)
        with host, self.assertRaises(HttpError) as e:
            http.get("https://a")
        self.assertEqual(str(e.exception), "connection failed: no canned response")

    def test_http_error_text(self):
        self.assertEqual(str(HttpError("denied", "x")), "denied: x")
        self.assertEqual(str(HttpError("invalid-request", "x")), "invalid request: x")
        self.assertEqual(str(HttpError("timeout")), "timed out")
        self.assertEqual(str(HttpError("tls", "x")), "TLS failed: x")
        self.assertFalse(HttpError("denied", "x").no_answer)
        with self.assertRaises(ValueError):
            HttpError("teapot")

    def test_a_body_that_is_not_json_says_so(self):
        resp = Response(body=b"<html>", final_url="http://a/", body_truncated=True)
        with self.assertRaisesRegex(ValueError, r"the body of http://a/ \(6 bytes, cut at the grant's max_body\) is not JSON"):
            resp.json()
        self.assertEqual(Response(body=b"caf\xc3\xa9 \xff").text, "café \ufffd")
        self.assertFalse(Response(status=302).ok)

    def test_no_host_is_a_clear_error(self):
        with self.assertRaisesRegex(RuntimeError, "MockHost"):
            http.get("http://a")


class LogTest(unittest.TestCase):
    def test_lines_and_fields(self):
        with MockHost() as host:
            log.debug("d")
            log.info("answer", status=200, ok=True, name="api", extra={"a": 1})
            log.warn("w")
            log.warning("w2")
            log.error("e", n=None)
        self.assertEqual([line.level for line in host.logs], ["debug", "info", "warn", "warn", "error"])
        self.assertEqual(
            host.logs[1].fields, {"status": "200", "ok": "true", "name": "api", "extra": '{"a": 1}'}
        )
        self.assertEqual(host.logs[4].fields, {"n": "null"})

    def test_unknown_level(self):
        with MockHost(), self.assertRaises(ValueError):
            log.write("loud", "x")


if __name__ == "__main__":
    unittest.main()
