"""Params: the JSON text runcap passes to `validate` and `run`, checked against the JSON
Schema the plugin declares (the one `runcap plugin describe` prints).

A plugin declares its params as a dataclass, whose fields give the schema:

    @dataclasses.dataclass
    class Params:
        url: str = param(doc="The URL to GET.", pattern="^https?://")
        expect_status: int = param(200, minimum=100, maximum=599)
        headers: dict[str, str] = param(default_factory=dict)
        json: Optional[JsonCheck] = None        # a nested dataclass, or null

or as a JSON Schema dict, and then `run` gets the checked dict with defaults filled in.
Field types: str, int, float, bool, Any, Optional[T], list[T], dict[str, T],
Literal[...], and nested dataclasses. A dataclass rejects keys it does not declare.
Cross-field rules go in the dataclass's `__post_init__`: a ValueError or TypeError
raised there is reported as invalid params.

The checker knows the keywords params need: type, properties, required,
additionalProperties, default, enum, const, minimum, maximum, exclusiveMinimum,
exclusiveMaximum, minLength, maxLength, pattern, items, minItems, maxItems, anyOf.
Others (description, title, format, examples...) are documentation.
"""

import dataclasses
import json
import re
import types
import typing

from .outcome import InvalidParams

_MISSING = dataclasses.MISSING
_PATTERNS = {}


def param(
    default=_MISSING,
    *,
    default_factory=_MISSING,
    doc=None,
    minimum=None,
    maximum=None,
    pattern=None,
    min_length=None,
    max_length=None,
):
    """A dataclass field with what the schema says about it: `doc` (its description),
    bounds for numbers, a regular expression (searched, as JSON Schema does) for strings,
    and length bounds for strings and lists."""
    keywords = {
        "description": doc,
        "minimum": minimum,
        "maximum": maximum,
        "pattern": pattern,
        "minLength": min_length,
        "maxLength": max_length,
    }
    keywords = {k: v for k, v in keywords.items() if v is not None}
    if pattern is not None:
        _compile(pattern)
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"runcap": keywords}
    )


def _compile(pattern):
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


# --- dataclass -> schema ------------------------------------------------------------


def schema_of(cls):
    """The JSON Schema of a params dataclass."""
    return _Spec.of(cls).schema


class _Spec:
    """A params type: its JSON Schema and how to build Python values from checked JSON."""

    _cache = {}

    def __init__(self, schema, build):
        self.schema = schema
        self.build = build

    @classmethod
    def of(cls, tp):
        try:
            spec = cls._cache.get(tp)
        except TypeError:  # an unhashable annotation: build it every time
            return cls._make(tp)
        if spec is None:
            spec = cls._cache[tp] = cls._make(tp)
        return spec

    @classmethod
    def _make(cls, tp):
        if tp is typing.Any or tp is object:
            return cls({}, _same)
        if tp is type(None) or tp is None:
            return cls({"type": "null"}, _same)
        if tp is bool:
            return cls({"type": "boolean"}, _same)
        if tp is int:
            return cls({"type": "integer"}, int)
        if tp is float:
            return cls({"type": "number"}, float)
        if tp is str:
            return cls({"type": "string"}, _same)
        if tp is dict:
            return cls({"type": "object"}, _same)
        if tp is list:
            return cls({"type": "array"}, _same)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return cls._dataclass(tp)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Union or origin is getattr(types, "UnionType", None):
            options = [a for a in args if a is not type(None)]
            nullable = len(options) < len(args)
            if len(options) != 1:
                raise TypeError(f"params type {tp!r}: only Optional[T] unions are supported")
            inner = cls.of(options[0])
            if not nullable:
                return inner
            schema = {"anyOf": [inner.schema, {"type": "null"}]}
            return cls(schema, lambda v: None if v is None else inner.build(v))
        if origin is typing.Literal:
            return cls({"enum": list(args)}, _same)
        if origin in (list, typing.List):
            item = cls.of(args[0]) if args else cls.of(typing.Any)
            return cls(
                {"type": "array", "items": item.schema}, lambda v: [item.build(x) for x in v]
            )
        if origin in (dict, typing.Dict):
            if args and args[0] is not str:
                raise TypeError(f"params type {tp!r}: object keys are strings")
            value = cls.of(args[1]) if args else cls.of(typing.Any)
            schema = {"type": "object", "additionalProperties": value.schema}
            return cls(schema, lambda v: {k: value.build(x) for k, x in v.items()})
        raise TypeError(f"params type {tp!r} is not supported")

    @classmethod
    def _dataclass(cls, dc):
        hints = typing.get_type_hints(dc)
        properties = {}
        required = []
        builders = {}
        for f in dataclasses.fields(dc):
            if not f.init:
                continue
            spec = cls.of(hints[f.name])
            schema = dict(spec.schema)
            keywords = dict(f.metadata.get("runcap", {}))
            if schema.get("type") == "array":
                for a, b in (("minLength", "minItems"), ("maxLength", "maxItems")):
                    if a in keywords:
                        keywords[b] = keywords.pop(a)
            schema.update(keywords)
            if f.default is not _MISSING:
                if _is_json(f.default):
                    schema["default"] = f.default
            elif f.default_factory is _MISSING:
                required.append(f.name)
            properties[f.name] = schema
            builders[f.name] = spec.build
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        doc = (dc.__doc__ or "").strip()
        if doc and not doc.startswith(dc.__name__ + "("):
            schema["description"] = doc

        def build(value):
            kwargs = {k: builders[k](v) for k, v in value.items() if k in builders}
            try:
                return dc(**kwargs)
            except (ValueError, TypeError) as e:
                raise _Rejected(str(e)) from None

        return cls(schema, build)


def _same(value):
    return value


def _is_json(value):
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


class _Rejected(Exception):
    """A params class refused its values in __post_init__."""


# --- checking -------------------------------------------------------------------------


def parse(text, spec):
    """Parses params JSON text (empty means `{}`) and checks it.

    `spec` is a dataclass (returns an instance of it), a JSON Schema dict (returns the
    checked value with defaults filled in) or None (any JSON object). Raises
    InvalidParams with every problem found, each prefixed with where it is.
    """
    if text is None or not str(text).strip():
        value = {}
    else:
        try:
            value = json.loads(text)
        except ValueError as e:
            raise InvalidParams(f"params are not JSON: {e}") from None
    if spec is None:
        schema, build = {"type": "object"}, _same
    elif isinstance(spec, dict):
        schema, build = spec, _same
    else:
        s = _Spec.of(spec)
        schema, build = s.schema, s.build
    problems = []
    value = check(value, schema, "", problems)
    if problems:
        raise InvalidParams("; ".join(problems))
    try:
        return build(value)
    except _Rejected as e:
        raise InvalidParams(str(e)) from None


def check(value, schema, path, problems):
    """Checks `value` against `schema`, appending "PATH: problem" lines to `problems`;
    returns the value with defaults filled in for absent properties."""
    where = path or "params"
    if not isinstance(schema, dict) or not schema:
        return value
    if "anyOf" in schema:
        options = schema["anyOf"]
        for option in options:
            attempt = []
            result = check(value, option, path, attempt)
            if not attempt:
                value = result
                break
        else:
            # When one form has the value's type (Optional[T] given a wrong T), its
            # problems say more than "none matches".
            typed = [o for o in options if isinstance(o, dict) and _form_matches(o, value)]
            if len(typed) == 1:
                check(value, typed[0], path, problems)
            else:
                problems.append(f"{where}: {_describe(value)} matches none of the allowed forms")
            return value
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_matches(t, value) for t in allowed):
            problems.append(f"{where}: expected {_type_names(allowed)}, got {_describe(value)}")
            return value
    if "const" in schema and not _json_equal(value, schema["const"]):
        problems.append(f"{where}: must be {json.dumps(schema['const'])}, got {_describe(value)}")
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        choices = ", ".join(json.dumps(e) for e in schema["enum"])
        problems.append(f"{where}: must be one of {choices}, got {_describe(value)}")
    if _is_number(value):
        _check_bounds(value, schema, where, problems)
    if isinstance(value, str):
        _check_length(len(value), schema, "minLength", "maxLength", "characters", where, problems)
        pattern = schema.get("pattern")
        if pattern is not None and not _compile(pattern).search(value):
            problems.append(f"{where}: {_describe(value)} does not match {pattern}")
    if isinstance(value, list):
        _check_length(len(value), schema, "minItems", "maxItems", "items", where, problems)
        items = schema.get("items")
        if isinstance(items, dict):
            value = [check(v, items, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        value = _check_object(value, schema, path, problems)
    return value


def _check_object(value, schema, path, problems):
    properties = schema.get("properties", {})
    out = {}
    for name in schema.get("required", []):
        if name not in value:
            problems.append(f"{_join(path, name)}: missing (required)")
    extra = schema.get("additionalProperties", True)
    for name, v in value.items():
        if name in properties:
            out[name] = check(v, properties[name], _join(path, name), problems)
        elif extra is False:
            known = ", ".join(properties) or "none"
            problems.append(f"{_join(path, name)}: unknown key (known: {known})")
        elif isinstance(extra, dict):
            out[name] = check(v, extra, _join(path, name), problems)
        else:
            out[name] = v
    for name, prop in properties.items():
        if name not in value and isinstance(prop, dict) and "default" in prop:
            out[name] = json.loads(json.dumps(prop["default"]))
    return out


def _check_bounds(value, schema, where, problems):
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and value < lo:
        problems.append(f"{where}: {_num(value)} is below the minimum {_num(lo)}")
    if hi is not None and value > hi:
        problems.append(f"{where}: {_num(value)} is above the maximum {_num(hi)}")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlo is not None and value <= xlo:
        problems.append(f"{where}: {_num(value)} must be above {_num(xlo)}")
    if xhi is not None and value >= xhi:
        problems.append(f"{where}: {_num(value)} must be below {_num(xhi)}")


def _check_length(n, schema, lo_key, hi_key, unit, where, problems):
    lo, hi = schema.get(lo_key), schema.get(hi_key)
    if lo is not None and n < lo:
        problems.append(f"{where}: has {n} {unit}, at least {lo} needed")
    if hi is not None and n > hi:
        problems.append(f"{where}: has {n} {unit}, at most {hi} allowed")


def _join(path, name):
    return f"{path}.{name}" if path else name


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _form_matches(schema, v):
    t = schema.get("type")
    if t is None:
        return False
    return any(_type_matches(x, v) for x in (t if isinstance(t, list) else [t]))


def _type_matches(t, v):
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return _is_number(v) and float(v).is_integer()
    if t == "number":
        return _is_number(v)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "null":
        return v is None
    return False


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _type_names(types_):
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types_)


def _num(v):
    return str(int(v)) if float(v).is_integer() else str(v)


def _describe(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {json.dumps(v)}"
    if isinstance(v, str):
        s = v if len(v) <= 40 else v[:40] + "…"
        return f"string {json.dumps(s, ensure_ascii=False)}"
    if _is_number(v):
        return f"number {_num(v)}"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _json_equal(a, b):
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


json_equal = _json_equal
