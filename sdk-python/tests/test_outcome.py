import math
import unittest

from runcap_plugin import Outcome, Status


class OutcomeTest(unittest.TestCase):
    def test_builders_set_status_summary_details_and_metrics(self):
        o = Outcome.warn("slow", details={"ms": 120}, metrics={"latency_ms": 120})
        self.assertEqual(o.status, Status.WARN)
        self.assertEqual(o.status, "warn")
        self.assertEqual(str(o.status), "warn")
        self.assertEqual(o.summary, "slow")
        self.assertEqual(o.details, {"ms": 120})
        self.assertEqual(o.metrics, [("latency_ms", 120.0)])
        self.assertEqual(Outcome.ok("x").status, "ok")
        self.assertEqual(Outcome.fail("x").status, "fail")

    def test_detail_and_metric_chain(self):
        o = Outcome.ok("up").detail("status", 200).metric("a", 1).metric("a", 2.5)
        self.assertEqual(o.details, {"status": 200})
        self.assertEqual(o.metrics, [("a", 1.0), ("a", 2.5)])

    def test_metrics_as_pairs(self):
        self.assertEqual(Outcome.ok("x", metrics=[("a", 1), ("b", 2)]).metrics, [("a", 1.0), ("b", 2.0)])

    def test_bad_values_are_refused_where_they_are_made(self):
        with self.assertRaises(ValueError):
            Outcome("great", "x")
        with self.assertRaises(TypeError):
            Outcome.ok("x", details=[1, 2])
        with self.assertRaises(TypeError):
            Outcome.ok("x").metric("m", "fast")
        with self.assertRaises(TypeError):
            Outcome.ok("x").metric("m", True)
        with self.assertRaises(ValueError):
            Outcome.ok("x").metric("m", math.inf)

    def test_details_must_be_json(self):
        self.assertEqual(Outcome.ok("x", {"a": [1, "é"]}).details_json(), '{"a": [1, "é"]}')
        with self.assertRaisesRegex(ValueError, "not JSON"):
            Outcome.ok("x", {"a": object()}).details_json()
        with self.assertRaisesRegex(ValueError, "not JSON"):
            Outcome.ok("x", {"a": float("nan")}).details_json()

    def test_equality_and_repr(self):
        self.assertEqual(Outcome.ok("x", {"a": 1}), Outcome.ok("x", {"a": 1}))
        self.assertNotEqual(Outcome.ok("x"), Outcome.fail("x"))
        self.assertIn("'ok'", repr(Outcome.ok("x")))


if __name__ == "__main__":
    unittest.main()
