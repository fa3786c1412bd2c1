// Params: the JSON text runcap passes to `validate` and `run`, checked against the JSON
// Schema the plugin declares (the same schema `describe` reports).
//
// The checker knows the keywords plugin params need: type, properties, required,
// additionalProperties, default, enum, const, minimum, maximum, exclusiveMinimum,
// exclusiveMaximum, minLength, maxLength, pattern, items, minItems, maxItems, anyOf.
// Others (description, title, format, examples, $schema...) are documentation and are
// not checked.

/** Params that do not match the schema. `message` is what `runcap check` prints. */
export class ParamsError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ParamsError';
  }
}

/**
 * Parses `text` (empty means `{}`) and checks it against `schema`. Returns the params with
 * each absent property that has a `default` filled in; throws ParamsError.
 */
export function parseParams(text, schema) {
  let value;
  if (typeof text !== 'string' || text.trim() === '') {
    value = {};
  } else {
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new ParamsError(`params are not JSON: ${e.message}`);
    }
  }
  return check(value, schema ?? {}, '');
}

function describeValue(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'string': {
      const s = v.length > 40 ? `${v.slice(0, 40)}…` : v;
      return `string ${JSON.stringify(s)}`;
    }
    case 'number':
      return `number ${v}`;
    case 'boolean':
      return `boolean ${v}`;
    case 'object':
      return 'an object';
    default:
      return typeof v;
  }
}

function typeMatches(type, v) {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'array':
      return Array.isArray(v);
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    default:
      throw new Error(`params schema: unknown type \`${type}\``);
  }
}

function fail(path, message) {
  return new ParamsError(path ? `${path}: ${message}` : message);
}

function join(path, key) {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

function quoteList(names) {
  return names.map((n) => `\`${n}\``).join(', ');
}

function equal(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function check(value, schema, path) {
  if (schema === true || schema === undefined) return value;
  if (schema === false) throw fail(path, 'no value is allowed here');

  if (Array.isArray(schema.anyOf)) {
    const messages = [];
    for (const option of schema.anyOf) {
      try {
        return check(value, option, path);
      } catch (e) {
        if (!(e instanceof ParamsError)) throw e;
        messages.push(e.message);
      }
    }
    throw fail(path, `matches none of the allowed forms (${messages.join('; ')})`);
  }

  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => typeMatches(t, value))) {
      throw fail(path, `expected ${types.join(' or ')}, found ${describeValue(value)}`);
    }
  }
  if ('const' in schema && !equal(value, schema.const)) {
    throw fail(path, `expected ${JSON.stringify(schema.const)}, found ${describeValue(value)}`);
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => equal(e, value))) {
    throw fail(
      path,
      `expected one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}, found ${describeValue(value)}`,
    );
  }

  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) {
      throw fail(path, `${value} is below the minimum ${schema.minimum}`);
    }
    if (typeof schema.maximum === 'number' && value > schema.maximum) {
      throw fail(path, `${value} is above the maximum ${schema.maximum}`);
    }
    if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum) {
      throw fail(path, `${value} must be above ${schema.exclusiveMinimum}`);
    }
    if (typeof schema.exclusiveMaximum === 'number' && value >= schema.exclusiveMaximum) {
      throw fail(path, `${value} must be below ${schema.exclusiveMaximum}`);
    }
  }

  if (typeof value === 'string') {
    const length = [...value].length;
    if (typeof schema.minLength === 'number' && length < schema.minLength) {
      throw fail(path, `must be at least ${schema.minLength} characters long`);
    }
    if (typeof schema.maxLength === 'number' && length > schema.maxLength) {
      throw fail(path, `must be at most ${schema.maxLength} characters long`);
    }
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(value)) {
      throw fail(path, `${describeValue(value)} does not match ${JSON.stringify(schema.pattern)}`);
    }
  }

  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) {
      throw fail(path, `needs at least ${schema.minItems} items, found ${value.length}`);
    }
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) {
      throw fail(path, `takes at most ${schema.maxItems} items, found ${value.length}`);
    }
    if (schema.items !== undefined) {
      return value.map((item, i) => check(item, schema.items, join(path, i)));
    }
    return value;
  }

  if (value !== null && typeof value === 'object') {
    const properties = schema.properties ?? {};
    const out = {};
    for (const name of schema.required ?? []) {
      if (!Object.prototype.hasOwnProperty.call(value, name)) {
        throw fail(path, `missing field \`${name}\``);
      }
    }
    for (const [name, v] of Object.entries(value)) {
      if (Object.prototype.hasOwnProperty.call(properties, name)) {
        out[name] = check(v, properties[name], join(path, name));
      } else if (schema.additionalProperties === false) {
        const known = Object.keys(properties);
        throw fail(
          path,
          known.length
            ? `unknown field \`${name}\`, expected one of ${quoteList(known)}`
            : `unknown field \`${name}\`: no fields are expected`,
        );
      } else if (schema.additionalProperties !== undefined && schema.additionalProperties !== true) {
        out[name] = check(v, schema.additionalProperties, join(path, name));
      } else {
        out[name] = v;
      }
    }
    for (const [name, sub] of Object.entries(properties)) {
      if (!(name in out) && sub !== null && typeof sub === 'object' && 'default' in sub) {
        out[name] = structuredCopy(sub.default);
      }
    }
    return out;
  }

  return value;
}

function structuredCopy(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}
