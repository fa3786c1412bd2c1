// runcap-plugin: write a runcap plugin (WIT world `check`: log + http) in JavaScript.
//
//   import { plugin, Outcome, http, log } from 'runcap-plugin';
//
//   export default plugin({
//     name: 'my-check',
//     version: '0.1.0',
//     description: 'Is it up?',
//     params: { type: 'object', properties: { url: { type: 'string' } }, required: ['url'] },
//     run(ctx, params) {
//       const resp = http.get(params.url);
//       return resp.status === 200 ? Outcome.ok('up') : Outcome.fail(`down: ${resp.status}`);
//     },
//   });
//
// Capability calls go through the host that `host.js` holds: the WIT imports in a
// component, a MockHost (runcap-plugin/testing) in unit tests.

import { current } from './host.js';
import { ParamsError, parseParams } from './params.js';

export { ParamsError, parseParams };

const STATUSES = ['ok', 'warn', 'fail'];

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The result of an action that ran to completion: a status, one line for humans, JSON details and metrics. */
export class Outcome {
  /**
   * @param {'ok'|'warn'|'fail'} status
   * @param {string} summary one line for humans
   * @param {object} [details] a JSON object for later steps and operators
   * @param {Record<string, number> | Array<[string, number] | {name: string, value: number}>} [metrics]
   */
  constructor(status, summary, details = {}, metrics = {}) {
    if (!STATUSES.includes(status)) {
      throw new TypeError(`outcome status must be one of ${STATUSES.join(', ')}, not ${JSON.stringify(status)}`);
    }
    if (details === undefined || details === null) details = {};
    if (!isPlainObject(details)) {
      throw new TypeError('outcome details must be an object');
    }
    this.status = status;
    this.summary = String(summary ?? '');
    this.details = { ...details };
    this.metrics = [];
    if (Array.isArray(metrics)) {
      for (const m of metrics) {
        if (Array.isArray(m)) this.metric(m[0], m[1]);
        else this.metric(m?.name, m?.value);
      }
    } else if (isPlainObject(metrics)) {
      for (const [name, value] of Object.entries(metrics)) this.metric(name, value);
    } else if (metrics !== undefined && metrics !== null) {
      throw new TypeError('outcome metrics must be an object of numbers or a list of [name, value]');
    }
  }

  static ok(summary, details, metrics) {
    return new Outcome('ok', summary, details, metrics);
  }

  static warn(summary, details, metrics) {
    return new Outcome('warn', summary, details, metrics);
  }

  static fail(summary, details, metrics) {
    return new Outcome('fail', summary, details, metrics);
  }

  /** Adds one field to the details. */
  detail(key, value) {
    this.details[String(key)] = value;
    return this;
  }

  /** Adds one metric. */
  metric(name, value) {
    const v = typeof value === 'bigint' ? Number(value) : value;
    if (typeof v !== 'number') {
      throw new TypeError(`metric ${JSON.stringify(String(name))} must be a number, not ${typeof value}`);
    }
    this.metrics.push({ name: String(name), value: v });
    return this;
  }
}

const ACTION_ERROR_KINDS = ['invalid-params', 'denied', 'failed'];

/** Why an action produced no outcome; throw one from `run` (or `validate`). */
export class ActionError extends Error {
  /** @param {'invalid-params'|'denied'|'failed'} kind */
  constructor(kind, message) {
    if (!ACTION_ERROR_KINDS.includes(kind)) {
      throw new TypeError(`action error kind must be one of ${ACTION_ERROR_KINDS.join(', ')}, not ${JSON.stringify(kind)}`);
    }
    super(String(message));
    this.name = 'ActionError';
    this.kind = kind;
  }

  /** The params are not what the plugin expects. */
  static invalidParams(message) {
    return new ActionError('invalid-params', message);
  }

  /** A capability the action needs was not granted. */
  static denied(message) {
    return new ActionError('denied', message);
  }

  /** Anything else. */
  static failed(message) {
    return new ActionError('failed', message);
  }
}

/** Why an HTTP request produced no response (the `error` variant of runcap:plugin/http). */
export class HttpError extends Error {
  /**
   * @param {'denied'|'invalid-request'|'timeout'|'connection'|'tls'} kind
   * @param {string} [detail] the host's message
   */
  constructor(kind, detail = '') {
    const text = {
      denied: `denied: ${detail}`,
      'invalid-request': `invalid request: ${detail}`,
      timeout: 'timed out',
      connection: `connection failed: ${detail}`,
      tls: `TLS failed: ${detail}`,
    }[kind];
    super(text ?? `${kind}: ${detail}`);
    this.name = 'HttpError';
    this.kind = kind;
    this.detail = detail;
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** What came back from an HTTP request. */
export class HttpResponse {
  constructor(wire) {
    /** @type {number} */
    this.status = wire.status;
    /** @type {Array<[string, string]>} */
    this.headers = wire.headers ?? [];
    /** @type {Uint8Array} */
    this.body = wire.body instanceof Uint8Array ? wire.body : new Uint8Array(wire.body ?? []);
    /** The body was longer than the grant's limit and was cut. */
    this.bodyTruncated = Boolean(wire.bodyTruncated);
    /** Milliseconds from sending the request to the final response's headers. */
    this.elapsedMs = Number(wire.elapsedUs ?? 0n) / 1000;
    /** The URL that produced this response, after redirects. */
    this.finalUrl = wire.finalUrl ?? '';
    /** The address the host connected to for the final hop. */
    this.remoteAddress = wire.remoteAddress;
    /** For https: the peer certificate's notAfter, seconds since the Unix epoch. */
    this.certNotAfter = wire.certNotAfter === undefined ? undefined : Number(wire.certNotAfter);
  }

  /** The first header with this name, compared case-insensitively. */
  header(name) {
    const n = String(name).toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === n);
    return found ? found[1] : undefined;
  }

  /** The body as text (UTF-8; invalid sequences replaced). */
  text() {
    return decoder.decode(this.body);
  }

  /** The body parsed as JSON; throws a SyntaxError that says so when it is not. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new SyntaxError(`the response body of ${this.finalUrl || 'the request'} is not JSON: ${e.message}`);
    }
  }
}

const METHODS = ['get', 'head', 'post', 'put', 'delete', 'patch'];

function headerList(headers) {
  if (headers === undefined || headers === null) return [];
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  return entries.map(([k, v]) => [String(k), String(v)]);
}

function bodyBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('request body must be a string, a Uint8Array or an ArrayBuffer (use `json` for a value)');
}

/**
 * Sends one request through the host (grants.http decides where it may go).
 *
 * @param {object} req
 * @param {string} [req.method] GET (default), HEAD, POST, PUT, DELETE or PATCH
 * @param {string} req.url
 * @param {Record<string, string> | Array<[string, string]>} [req.headers]
 * @param {string | Uint8Array | ArrayBuffer} [req.body]
 * @param {unknown} [req.json] a value sent as a JSON body (with content-type application/json)
 * @param {number} [req.timeoutMs] whole-request timeout; the host caps it at the action's deadline
 * @param {number} [req.followRedirects] how many redirects to follow (default 0: a 3xx is returned)
 * @returns {HttpResponse}
 * @throws {HttpError}
 */
function request(req) {
  if (!isPlainObject(req)) throw new TypeError('http.request takes an object: { method, url, headers, body, ... }');
  const method = String(req.method ?? 'GET').toLowerCase();
  if (!METHODS.includes(method)) {
    throw new TypeError(`unsupported HTTP method ${JSON.stringify(req.method)}: use ${METHODS.map((m) => m.toUpperCase()).join(', ')}`);
  }
  if (typeof req.url !== 'string') throw new TypeError('http request url must be a string');
  const headers = headerList(req.headers);
  let body = bodyBytes(req.body);
  if (req.json !== undefined) {
    body = encoder.encode(JSON.stringify(req.json));
    if (!headers.some(([k]) => k.toLowerCase() === 'content-type')) headers.push(['content-type', 'application/json']);
  }
  let timeoutMs;
  if (req.timeoutMs !== undefined && req.timeoutMs !== null) {
    timeoutMs = Math.min(Math.max(Math.ceil(Number(req.timeoutMs)), 0), 0xffffffff);
    if (Number.isNaN(timeoutMs)) throw new TypeError('http request timeoutMs must be a number');
  }
  const maxRedirects = Math.min(Math.max(Math.trunc(Number(req.followRedirects ?? 0)) || 0, 0), 255);
  const answer = current().send({ method, url: req.url, headers, body, timeoutMs, maxRedirects });
  if (answer.err !== undefined) {
    throw new HttpError(answer.err.tag, answer.err.val ?? '');
  }
  return new HttpResponse(answer.ok);
}

/** Outbound HTTP(S), checked by the host against the plugin's grants.http. */
export const http = Object.freeze({
  request,
  get: (url, options = {}) => request({ ...options, method: 'GET', url }),
  head: (url, options = {}) => request({ ...options, method: 'HEAD', url }),
  post: (url, body, options = {}) => request({ ...options, method: 'POST', url, body }),
  put: (url, body, options = {}) => request({ ...options, method: 'PUT', url, body }),
  patch: (url, body, options = {}) => request({ ...options, method: 'PATCH', url, body }),
  delete: (url, options = {}) => request({ ...options, method: 'DELETE', url }),
});

function fieldList(fields) {
  if (fields === undefined || fields === null) return [];
  const entries = Array.isArray(fields) ? fields : Object.entries(fields);
  return entries.map(([k, v]) => [String(k), typeof v === 'string' ? v : JSON.stringify(v) ?? String(v)]);
}

function writer(level) {
  return (message, fields) => current().log(level, String(message), fieldList(fields));
}

/** Structured log lines in the step's record (no grant needed). Fields: an object of values. */
export const log = Object.freeze({
  debug: writer('debug'),
  info: writer('info'),
  warn: writer('warn'),
  error: writer('error'),
});

/** Where and how this action runs. */
export class Context {
  constructor(wire = {}) {
    this.runId = wire.runId ?? '';
    this.environment = wire.environment ?? '';
    this.runbook = wire.runbook ?? '';
    this.step = wire.step ?? '';
    /** When true, the plugin must not change anything (the host records mutations instead). */
    this.dryRun = Boolean(wire.dryRun);
    /** Wall-clock deadline, milliseconds since the Unix epoch. */
    this.deadlineMs = Number(wire.deadlineMs ?? 0);
  }

  /** Milliseconds left before the host stops the action. */
  remainingMs() {
    return Math.max(0, this.deadlineMs - Date.now());
  }
}

/** The text of an uncaught exception: its message, then (with `stack`) its stack. */
export function describeError(e, stack = true) {
  if (e instanceof Error) {
    // An HttpError's message says what it is ("connection failed: ...").
    const head = e.name && e.name !== 'Error' && e.name !== 'HttpError' ? `${e.name}: ${e.message}` : e.message;
    if (!stack) return head;
    let trace = typeof e.stack === 'string' ? e.stack : '';
    // V8 starts the stack with the error's own line; SpiderMonkey (in the component) does not.
    const own = String(e);
    if (trace.startsWith(own)) trace = trace.slice(own.length);
    // In the component, frames read `function@module:line:column`; the last ones are the
    // generated bindings (`/runcap-init/`) and this SDK calling `run`, which say nothing.
    const frames = trace.split('\n').filter((f) => f.trim() !== '' && !f.includes('@/runcap-init/'));
    while (frames.length > 1 && frames.at(-1).includes('@runcap-plugin/')) frames.pop();
    return frames.length ? `${head}\n${frames.join('\n')}` : head;
  }
  let text;
  try {
    text = typeof e === 'string' ? e : JSON.stringify(e) ?? String(e);
  } catch {
    text = String(e);
  }
  return `uncaught exception: ${text}`;
}

/**
 * The WIT `action-error` for anything `run` threw: failed with the message and stack, or,
 * for what checking params threw, invalid-params with the message.
 */
function actionError(e, kindForOthers = 'failed') {
  if (e instanceof ActionError && ACTION_ERROR_KINDS.includes(e.kind)) return { tag: e.kind, val: e.message };
  if (e instanceof ParamsError) return { tag: 'invalid-params', val: e.message };
  if (e instanceof HttpError) {
    if (e.kind === 'denied') return { tag: 'denied', val: e.detail };
    if (e.kind === 'invalid-request') return { tag: 'invalid-params', val: e.message };
  }
  return { tag: kindForOthers, val: describeError(e, kindForOthers === 'failed') };
}

function wireOutcome(o) {
  let details;
  try {
    details = JSON.stringify(o.details);
  } catch (e) {
    throw new TypeError(`outcome details are not JSON: ${e.message}`);
  }
  return {
    status: o.status,
    summary: o.summary,
    details,
    metrics: o.metrics.map((m) => ({ name: m.name, value: m.value })),
  };
}

function asOutcome(value) {
  if (value instanceof Outcome) return value;
  if (isPlainObject(value) && STATUSES.includes(value.status)) {
    return new Outcome(value.status, value.summary, value.details, value.metrics);
  }
  if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
    throw new TypeError(
      'run returned a Promise: runcap plugins run synchronously (http.get returns the response itself), so drop `async`/`await`',
    );
  }
  let shown;
  try {
    shown = JSON.stringify(value) ?? String(value);
  } catch {
    shown = String(value);
  }
  throw new TypeError(`run must return an Outcome (Outcome.ok, .warn or .fail), not ${shown.length > 80 ? `${shown.slice(0, 80)}…` : shown}`);
}

/**
 * Defines a plugin. Export what it returns as the module's default export:
 * `export default plugin({ ... })`. The returned object has the three functions the
 * component exports (`describe`, `validate`, `run`), each on WIT-shaped values; none of
 * them throws.
 *
 * @param {object} def
 * @param {string} def.name
 * @param {string} [def.version]
 * @param {string} [def.description]
 * @param {object} [def.params] JSON Schema of the params object (checked before `validate` and `run`)
 * @param {(params: object) => void} [def.validate] further checks; throw to reject (the message is shown)
 * @param {(ctx: Context, params: object) => Outcome} def.run
 */
export function plugin(def) {
  if (!isPlainObject(def)) throw new TypeError('plugin() takes an object: { name, version, description, params, run }');
  const { name, version = '0.0.0', description = '', params: schema = { type: 'object' }, validate, run } = def;
  if (typeof name !== 'string' || name === '') throw new TypeError('plugin name must be a non-empty string');
  if (typeof run !== 'function') throw new TypeError('plugin run must be a function (ctx, params) => Outcome');
  if (validate !== undefined && typeof validate !== 'function') throw new TypeError('plugin validate must be a function');
  const paramsSchema = JSON.stringify(schema);

  function parse(text) {
    const params = parseParams(text, schema);
    if (validate) validate(params);
    return params;
  }

  return Object.freeze({
    name,
    describe() {
      return { name, version: String(version), description: String(description), paramsSchema };
    },
    validate(text) {
      try {
        parse(text);
        return { tag: 'ok', val: undefined };
      } catch (e) {
        const err = actionError(e, 'invalid-params');
        return { tag: 'err', val: err.val };
      }
    },
    run(ctx, text) {
      let params;
      try {
        params = parse(text);
      } catch (e) {
        return { tag: 'err', val: actionError(e, 'invalid-params') };
      }
      try {
        // The host names the action on request (`runcap:plugin/invocation`); the call's
        // context carries the dry-run flag and the deadline.
        const context = new Context({ ...current().names(), ...ctx });
        return { tag: 'ok', val: wireOutcome(asOutcome(run(context, params))) };
      } catch (e) {
        return { tag: 'err', val: actionError(e) };
      }
    },
  });
}
