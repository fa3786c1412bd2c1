// runcap-plugin/testing: a recording host for native unit tests (`node --test`).
//
//   import { MockHost } from 'runcap-plugin/testing';
//   import check from '../index.js';
//
//   const host = new MockHost().answerHttp({ status: 503, json: { status: 'down' } });
//   const r = host.run(check, { url: 'http://svc/health' });
//   assert.equal(r.outcome.status, 'fail');
//   assert.equal(host.requests[0].url, 'http://svc/health');
//
// `run` goes through the same export the component has (params JSON in, WIT result
// out), so params errors and uncaught exceptions come back exactly as runcap sees them.

import { install } from './host.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  throw new TypeError('a canned body is a string or a Uint8Array (or use `json`)');
}

function headerList(headers) {
  if (!headers) return [];
  return (Array.isArray(headers) ? headers : Object.entries(headers)).map(([k, v]) => [String(k), String(v)]);
}

/** Records capability calls and answers HTTP requests from a queue of canned answers. */
export class MockHost {
  constructor() {
    /** Requests the plugin sent, in order: { method: 'GET', url, headers, body, text, timeoutMs, maxRedirects }. */
    this.requests = [];
    /** Log lines the plugin wrote, in order: { level, message, fields: { key: value } }. */
    this.logs = [];
    this.answers = [];
  }

  /**
   * Queues the answer to the next HTTP request. An empty queue answers
   * `connection: no canned response`.
   *
   * @param {object} answer
   * @param {number} [answer.status] default 200
   * @param {Record<string, string> | Array<[string, string]>} [answer.headers]
   * @param {string | Uint8Array} [answer.body]
   * @param {unknown} [answer.json] a body serialized as JSON (adds content-type)
   * @param {number} [answer.elapsedMs] default 1
   * @param {string} [answer.finalUrl] default: the request's URL
   * @param {boolean} [answer.bodyTruncated]
   * @param {string} [answer.remoteAddress]
   * @param {number} [answer.certNotAfter] seconds since the Unix epoch
   */
  answerHttp(answer = {}) {
    this.answers.push({ response: answer });
    return this;
  }

  /**
   * Queues an HTTP failure for the next request.
   *
   * @param {'denied'|'invalid-request'|'timeout'|'connection'|'tls'} kind
   * @param {string} [message]
   */
  answerHttpError(kind, message = '') {
    this.answers.push({ error: kind === 'timeout' ? { tag: kind } : { tag: kind, val: message } });
    return this;
  }

  // The host interface host.js expects.

  log(level, message, fields) {
    this.logs.push({ level, message, fields: Object.fromEntries(fields) });
  }

  names() {
    return this.invocation ?? { runId: 'test-run', environment: 'test', runbook: 'test', step: 'test' };
  }

  send(req) {
    const body = req.body instanceof Uint8Array ? req.body : new Uint8Array(req.body);
    this.requests.push({
      method: req.method.toUpperCase(),
      url: req.url,
      headers: Object.fromEntries(req.headers.map(([k, v]) => [k.toLowerCase(), v])),
      body,
      text: decoder.decode(body),
      timeoutMs: req.timeoutMs,
      maxRedirects: req.maxRedirects,
    });
    const next = this.answers.shift() ?? { error: { tag: 'connection', val: 'no canned response' } };
    if (next.error) return { err: next.error };
    const a = next.response;
    const headers = headerList(a.headers);
    let body2 = bytes(a.body);
    if (a.json !== undefined) {
      body2 = encoder.encode(JSON.stringify(a.json));
      if (!headers.some(([k]) => k.toLowerCase() === 'content-type')) headers.push(['content-type', 'application/json']);
    }
    return {
      ok: {
        status: a.status ?? 200,
        headers,
        body: body2,
        bodyTruncated: Boolean(a.bodyTruncated),
        elapsedUs: BigInt(Math.round((a.elapsedMs ?? 1) * 1000)),
        finalUrl: a.finalUrl ?? req.url,
        remoteAddress: a.remoteAddress,
        certNotAfter: a.certNotAfter === undefined ? undefined : BigInt(a.certNotAfter),
      },
    };
  }

  /** Runs `fn` with this mock as the host. */
  with(fn) {
    const previous = install(this);
    try {
      return fn();
    } finally {
      install(previous);
    }
  }

  /**
   * Runs the plugin's `run` as runcap would: `params` is an object (sent as JSON) or the
   * JSON text itself. Returns `{ outcome: { status, summary, details, metrics } }` (details
   * parsed, metrics as { name: value }) or `{ error: { kind, message } }`, `kind` being
   * invalid-params, denied or failed.
   */
  run(plugin, params = {}, ctx = {}) {
    const text = typeof params === 'string' ? params : JSON.stringify(params);
    const context = {
      runId: 'test-run',
      environment: 'test',
      runbook: 'test',
      step: 'test',
      dryRun: false,
      deadlineMs: BigInt(Date.now() + 30_000),
      ...ctx,
    };
    if (typeof context.deadlineMs === 'number') context.deadlineMs = BigInt(context.deadlineMs);
    const { runId, environment, runbook, step, ...wire } = context;
    this.invocation = { runId, environment, runbook, step };
    const result = this.with(() => plugin.run(wire, text));
    if (result.tag === 'ok') {
      const o = result.val;
      return {
        outcome: {
          status: o.status,
          summary: o.summary,
          details: JSON.parse(o.details),
          metrics: Object.fromEntries(o.metrics.map((m) => [m.name, m.value])),
        },
      };
    }
    return { error: { kind: result.val.tag, message: result.val.val } };
  }

  /** Runs the plugin's `validate`: null when the params are accepted, else the message. */
  validate(plugin, params = {}) {
    const text = typeof params === 'string' ? params : JSON.stringify(params);
    const result = this.with(() => plugin.validate(text));
    return result.tag === 'ok' ? null : result.val;
  }

  /** The plugin's descriptor, with the params schema parsed. */
  describe(plugin) {
    const d = this.with(() => plugin.describe());
    return { ...d, paramsSchema: JSON.parse(d.paramsSchema) };
  }
}
