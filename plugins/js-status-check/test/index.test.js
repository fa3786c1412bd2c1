// Unit tests of the check's logic against a mock host: canned HTTP answers, recorded
// requests and log lines. Run with `sdk-js/dev.sh test`.

import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { MockHost } from 'runcap-plugin/testing';

import check from '../index.js';
import { lookup } from '../pointer.js';

const URL = 'http://svc/health';
let printed;

beforeEach((t) => {
  // What the check prints (the step's stdout in runcap).
  printed = t.mock.method(console, 'log', () => {});
});

describe('js-status-check', () => {
  it('passes on the expected status', () => {
    const host = new MockHost().answerHttp({ status: 200, json: { status: 'up' }, elapsedMs: 4.25 });
    const { outcome } = host.run(check, { url: URL });
    assert.equal(outcome.status, 'ok');
    assert.equal(outcome.summary, `GET ${URL} → 200 in 4.3 ms`);
    assert.deepEqual(outcome.details, {
      url: URL,
      final_url: URL,
      status: 200,
      expect_status: 200,
      response_time_ms: 4.3,
    });
    assert.deepEqual(outcome.metrics, { response_time_ms: 4.3, status: 200 });
    assert.equal(host.requests.length, 1);
    assert.equal(host.requests[0].method, 'GET');
    assert.equal(host.requests[0].url, URL);
    assert.equal(host.requests[0].timeoutMs, undefined);
    assert.deepEqual(host.logs, [
      { level: 'info', message: 'answer', fields: { url: URL, status: '200', elapsed_ms: '4.3' } },
    ]);
    assert.deepEqual(printed.mock.calls[0].arguments, [`GET ${URL} → 200 in 4.3 ms`]);
  });

  it('fails on another status', () => {
    const host = new MockHost().answerHttp({ status: 503 });
    const { outcome } = host.run(check, { url: URL });
    assert.equal(outcome.status, 'fail');
    assert.match(outcome.summary, /→ 503 .*: status 503, expected 200$/);
  });

  it('takes the status to expect and a timeout', () => {
    const host = new MockHost().answerHttp({ status: 204 });
    assert.equal(host.run(check, { url: URL, expect_status: 204, timeout_ms: 800 }).outcome.status, 'ok');
    assert.equal(host.requests[0].timeoutMs, 800);
  });

  it('checks one JSON field', () => {
    const body = { status: 'up', checks: { db: true, queue: false }, list: [{ name: 'a' }] };
    const run = (json) => new MockHost().answerHttp({ json: body }).run(check, { url: URL, json }).outcome;

    const passed = run({ pointer: '/checks/db', equals: true });
    assert.equal(passed.status, 'ok');
    assert.deepEqual(passed.details.json, { pointer: '/checks/db', expected: true, actual: true, passed: true });
    assert.equal(run({ pointer: '/list/0', equals: { name: 'a' } }).status, 'ok');

    const wrong = run({ pointer: '/checks/queue', equals: true });
    assert.equal(wrong.status, 'fail');
    assert.match(wrong.summary, /json \/checks\/queue is false, expected true$/);

    const missing = run({ pointer: '/checks/cache', equals: true });
    assert.equal(missing.status, 'fail');
    assert.match(missing.summary, /json \/checks\/cache is missing$/);
    assert.equal(missing.details.json.actual, null);
  });

  it('reports both problems when status and field are wrong', () => {
    const host = new MockHost().answerHttp({ status: 500, json: { status: 'down' } });
    const { outcome } = host.run(check, { url: URL, json: { pointer: '/status', equals: 'up' } });
    assert.match(outcome.summary, /: status 500, expected 200; json \/status is "down", expected "up"$/);
  });

  it('fails when nothing answers', () => {
    const host = new MockHost().answerHttpError('connection', 'connection refused');
    const { outcome } = host.run(check, { url: URL });
    assert.equal(outcome.status, 'fail');
    assert.equal(outcome.summary, `GET ${URL}: connection failed: connection refused`);
    assert.deepEqual(outcome.details, { url: URL, error: 'connection', message: 'connection refused' });
    assert.equal(host.logs[0].level, 'warn');
  });

  it('leaves a denial to runcap', () => {
    const host = new MockHost().answerHttpError('denied', 'http://svc is not granted');
    assert.deepEqual(host.run(check, { url: URL }).error, { kind: 'denied', message: 'http://svc is not granted' });
  });

  it('reports a body that is not JSON as an error, with where it was thrown', () => {
    const host = new MockHost().answerHttp({ body: 'plain text' });
    const { error } = host.run(check, { url: URL, json: { pointer: '/status', equals: 'up' } });
    assert.equal(error.kind, 'failed');
    assert.match(error.message, /^SyntaxError: the response body of http:\/\/svc\/health is not JSON: /);
    assert.match(error.message, /js-status-check\/index\.js:\d+:\d+/);
  });

  it('rejects params it cannot use', () => {
    const host = new MockHost();
    const cases = [
      [{}, 'missing field `url`'],
      [{ url: 'svc/health' }, 'url: string "svc/health" does not match "^https?://"'],
      [{ url: URL, expect_status: '200' }, 'expect_status: expected integer, found string "200"'],
      [{ url: URL, expect_status: 42 }, 'expect_status: 42 is below the minimum 100'],
      [{ url: URL, json: { pointer: '/status' } }, 'json: missing field `equals`'],
      [{ url: URL, json: { pointer: 'status', equals: 1 } }, 'json.pointer: string "status" does not match "^(/.*)?$"'],
      [
        { url: URL, expect: 200 },
        'unknown field `expect`, expected one of `url`, `expect_status`, `json`, `timeout_ms`',
      ],
    ];
    for (const [params, message] of cases) {
      assert.equal(host.validate(check, params), message);
      assert.deepEqual(host.run(check, params).error, { kind: 'invalid-params', message });
    }
    assert.equal(host.requests.length, 0, 'nothing is sent with bad params');
    assert.equal(host.validate(check, { url: URL, json: { pointer: '', equals: {} } }), null);
  });

  it('describes itself', () => {
    const d = new MockHost().describe(check);
    assert.equal(d.name, 'js-status-check');
    assert.equal(d.version, '0.1.0');
    assert.deepEqual(d.paramsSchema.required, ['url']);
    assert.equal(d.paramsSchema.properties.expect_status.default, 200);
  });
});

describe('lookup', () => {
  it('follows RFC 6901 pointers', () => {
    const doc = { 'a/b': { '~k': [10, 20] }, '': 1 };
    assert.deepEqual(lookup(doc, ''), { found: true, value: doc });
    assert.deepEqual(lookup(doc, '/a~1b/~0k/1'), { found: true, value: 20 });
    assert.deepEqual(lookup(doc, '/'), { found: true, value: 1 });
    assert.deepEqual(lookup(doc, '/a~1b/~0k/2'), { found: false });
    assert.deepEqual(lookup(doc, '/a~1b/~0k/01'), { found: false });
    assert.deepEqual(lookup(doc, 'a'), { found: false });
    assert.deepEqual(lookup(null, '/x'), { found: false });
  });
});
