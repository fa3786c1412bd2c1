import dataclasses
import json
import unittest
from typing import Any, Dict, List, Literal, Optional

from runcap_plugin import InvalidParams, param
from runcap_plugin.params import json_equal, parse, schema_of


@dataclasses.dataclass
class Window:
    """A time window."""

    start: int = param(doc="First hour.", minimum=0, maximum=23)
    end: int = param(23, minimum=0, maximum=23)

    def __post_init__(self):
        if self.end < self.start:
            raise ValueError(f"window: end {self.end} is before start {self.start}")


@dataclasses.dataclass
class Params:
    url: str = param(doc="Where.", pattern="^https?://")
    retries: int = 3
    ratio: float = param(0.5, minimum=0, maximum=1)
    verbose: bool = False
    mode: Literal["fast", "slow"] = "fast"
    tags: List[str] = param(default_factory=list, max_length=3)
    headers: Dict[str, str] = param(default_factory=dict)
    window: Optional[Window] = None
    windows: List[Window] = dataclasses.field(default_factory=list)
    extra: Any = None
    label: Optional[str] = param(None, min_length=1)


def problems(text, spec=Params):
    with self_raises() as ctx:
        parse(text, spec)
    return ctx.exception.message


class self_raises:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            raise AssertionError("no InvalidParams raised")
        if not issubclass(kind, InvalidParams):
            return False
        self.exception = value
        return True


class DataclassParams(unittest.TestCase):
    def test_parses_into_the_dataclass_with_defaults(self):
        p = parse('{"url": "http://a"}', Params)
        self.assertEqual(p, Params(url="http://a"))
        self.assertEqual(p.tags, [])

    def test_nested_and_converted_values(self):
        p = parse(
            json.dumps(
                {
                    "url": "https://a",
                    "retries": 5.0,
                    "ratio": 1,
                    "window": {"start": 2},
                    "windows": [{"start": 1, "end": 4}],
                    "headers": {"x": "y"},
                    "extra": {"anything": [1, None]},
                }
            ),
            Params,
        )
        self.assertEqual(p.retries, 5)
        self.assertIsInstance(p.retries, int)
        self.assertIsInstance(p.ratio, float)
        self.assertEqual(p.window, Window(2, 23))
        self.assertEqual(p.windows, [Window(1, 4)])
        self.assertEqual(p.extra, {"anything": [1, None]})

    def test_every_problem_is_named_with_its_path(self):
        msg = problems(
            json.dumps(
                {
                    "url": "ftp://a",
                    "retries": 1.5,
                    "ratio": 2,
                    "verbose": 1,
                    "mode": "medium",
                    "tags": ["a", "b", "c", "d"],
                    "headers": {"x": 1},
                    "window": {"start": 24, "stop": 1},
                    "windows": [{"end": 1}],
                    "label": "",
                    "unknown": True,
                }
            )
        )
        for words in [
            'url: string "ftp://a" does not match ^https?://',
            "retries: expected an integer, got number 1.5",
            "ratio: 2 is above the maximum 1",
            "verbose: expected true or false, got number 1",
            'mode: must be one of "fast", "slow", got string "medium"',
            "tags: has 4 items, at most 3 allowed",
            "headers.x: expected a string, got number 1",
            "window.start: 24 is above the maximum 23",
            "window.stop: unknown key (known: start, end)",
            "windows[0].start: missing (required)",
            "label: has 0 characters, at least 1 needed",
            "unknown: unknown key",
        ]:
            self.assertIn(words, msg)

    def test_required_and_types(self):
        self.assertIn("url: missing (required)", problems("{}"))
        self.assertIn("params: expected an object, got an array", problems("[]"))
        self.assertIn("url: expected a string, got null", problems('{"url": null}'))
        self.assertIn("expected an integer, got boolean true", problems('{"url": "http://a", "retries": true}'))

    def test_post_init_errors_are_invalid_params(self):
        msg = problems('{"url": "http://a", "window": {"start": 5, "end": 1}}')
        self.assertEqual(msg, "window: end 1 is before start 5")

    def test_text_that_is_not_json(self):
        self.assertTrue(problems("{url:").startswith("params are not JSON: "))

    def test_empty_text_is_an_empty_object(self):
        @dataclasses.dataclass
        class Nothing:
            flag: bool = False

        self.assertEqual(parse("", Nothing), Nothing())
        self.assertEqual(parse(None, None), {})

    def test_schema(self):
        s = schema_of(Params)
        self.assertEqual(s["type"], "object")
        self.assertIs(s["additionalProperties"], False)
        self.assertEqual(s["required"], ["url"])
        props = s["properties"]
        self.assertEqual(props["url"], {"type": "string", "description": "Where.", "pattern": "^https?://"})
        self.assertEqual(props["retries"], {"type": "integer", "default": 3})
        self.assertEqual(props["mode"], {"enum": ["fast", "slow"], "default": "fast"})
        self.assertEqual(props["tags"], {"type": "array", "items": {"type": "string"}, "maxItems": 3})
        self.assertEqual(props["headers"]["additionalProperties"], {"type": "string"})
        window = props["window"]["anyOf"][0]
        self.assertEqual(window["description"], "A time window.")
        self.assertEqual(window["required"], ["start"])
        self.assertEqual(props["extra"], {"default": None})
        json.dumps(s)

    def test_pep604_and_builtin_generics(self):
        @dataclasses.dataclass
        class Modern:
            names: list[str]
            limits: dict[str, float]
            note: str | None = None

        self.assertEqual(parse('{"names": ["a"], "limits": {"x": 1}}', Modern), Modern(["a"], {"x": 1.0}))
        self.assertEqual(
            schema_of(Modern)["properties"]["note"]["anyOf"], [{"type": "string"}, {"type": "null"}]
        )

    def test_unsupported_types_fail_at_declaration(self):
        @dataclasses.dataclass
        class Bad:
            either: int | str

        with self.assertRaises(TypeError):
            schema_of(Bad)


class SchemaParams(unittest.TestCase):
    SCHEMA = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "count": {"type": "integer", "default": 2, "exclusiveMinimum": 0},
            "level": {"const": "high"},
            "targets": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "limit": {"anyOf": [{"type": "number"}, {"type": "string", "pattern": "^[0-9]+ms$"}]},
        },
    }

    def test_returns_the_checked_dict_with_defaults(self):
        self.assertEqual(parse('{"name": "a"}', self.SCHEMA), {"name": "a", "count": 2})

    def test_problems(self):
        msg = problems(
            '{"name": "", "count": 0, "level": "low", "targets": [], "limit": "5s", "x": 1}', self.SCHEMA
        )
        for words in [
            "name: has 0 characters, at least 1 needed",
            "count: 0 must be above 0",
            'level: must be "high", got string "low"',
            "targets: has 0 items, at least 1 needed",
            'limit: string "5s" does not match ^[0-9]+ms$',
            "x: unknown key",
        ]:
            self.assertIn(words, msg)

    def test_any_of_names_the_form_of_the_values_type_or_none(self):
        msg = problems('{"name": "a", "limit": true}', self.SCHEMA)
        self.assertEqual(msg, "limit: boolean true matches none of the allowed forms")
        msg = problems('{"url": "http://a", "window": {"start": 30}}', Params)
        self.assertEqual(msg, "window.start: 30 is above the maximum 23")

    def test_any_of_accepts_either(self):
        self.assertEqual(parse('{"name": "a", "limit": "5ms"}', self.SCHEMA)["limit"], "5ms")
        self.assertEqual(parse('{"name": "a", "limit": 5}', self.SCHEMA)["limit"], 5)

    def test_no_schema_takes_any_object(self):
        self.assertEqual(parse('{"a": [1]}', None), {"a": [1]})
        self.assertIn("expected an object", problems("3", None))


class JsonEqual(unittest.TestCase):
    def test_json_semantics(self):
        self.assertTrue(json_equal(1, 1.0))
        self.assertFalse(json_equal(True, 1))
        self.assertFalse(json_equal(0, False))
        self.assertTrue(json_equal({"a": [1, None]}, {"a": [1.0, None]}))
        self.assertFalse(json_equal({"a": 1}, {"a": 1, "b": 2}))
        self.assertFalse(json_equal("1", 1))
        self.assertFalse(json_equal([1], [1, 2]))


if __name__ == "__main__":
    unittest.main()
