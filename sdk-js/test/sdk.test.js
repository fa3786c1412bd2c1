// The SDK's own tests: outcomes, params, error mapping, the http and log wrappers, and
// the mock host. Run with `sdk-js/dev.sh test` (or `node --test` in sdk-js).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  ActionError,
  Context,
  HttpError,
  Outcome,
  ParamsError,
  http,
  log,
  parseParams,
  plugin,
} from '../src/index.js';
import { MockHost } from '../src/testing.js';

const echo = (run, extra = {}) => plugin({ name: 'echo', run, ...extra });

describe('Outcome', () => {
  it('builds each status with details and metrics', () => {
    const o = Outcome.warn('slow', { ms: 120 }, { latency_ms: 120 });
    assert.equal(o.status, 'warn');
    assert.equal(o.summary, 'slow');
    assert.deepEqual(o.details, { ms: 120 });
    assert.deepEqual(o.metrics, [{ name: 'latency_ms', value: 120 }]);
    assert.equal(Outcome.ok('up').status, 'ok');
    assert.equal(Outcome.fail('down').status, 'fail');
  });

  it('takes metrics as pairs or records, and chains', () => {
    const o = Outcome.ok('x', {}, [['a', 1], { name: 'b', value: 2 }]).detail('k', [1]).metric('c', 3n);
    assert.deepEqual(o.metrics, [
      { name: 'a', value: 1 },
      { name: 'b', value: 2 },
      { name: 'c', value: 3 },
    ]);
    assert.deepEqual(o.details, { k: [1] });
  });

  it('refuses what the host could not take', () => {
    assert.throws(() => new Outcome('maybe', 'x'), /status must be one of ok, warn, fail/);
    assert.throws(() => Outcome.ok('x', [1]), /details must be an object/);
    assert.throws(() => Outcome.ok('x', {}, { m: 'fast' }), /metric "m" must be a number/);
  });
});

describe('parseParams', () => {
  const schema = {
    type: 'object',
    additionalProperties: false,
    required: ['url'],
    properties: {
      url: { type: 'string', pattern: '^https?://' },
      retries: { type: 'integer', minimum: 0, maximum: 5, default: 1 },
      mode: { enum: ['fast', 'slow'] },
      tags: { type: 'array', items: { type: 'string' }, maxItems: 2 },
      limits: {
        type: 'object',
        properties: { ms: { type: 'number', exclusiveMinimum: 0 } },
      },
      either: { anyOf: [{ type: 'string' }, { type: 'integer' }] },
    },
  };
  const message = (text) => {
    try {
      parseParams(text, schema);
    } catch (e) {
      assert.ok(e instanceof ParamsError);
      return e.message;
    }
    assert.fail(`accepted ${text}`);
  };

  it('fills defaults and keeps what matches', () => {
    assert.deepEqual(parseParams('{"url":"http://a","tags":["x"],"either":3}', schema), {
      url: 'http://a',
      tags: ['x'],
      either: 3,
      retries: 1,
    });
  });

  it('treats empty params as an empty object', () => {
    assert.deepEqual(parseParams('', { type: 'object' }), {});
    assert.deepEqual(parseParams('  ', undefined), {});
  });

  it('names the field and what was wrong', () => {
    assert.equal(message('{}'), 'missing field `url`');
    assert.equal(message('{"url":"ftp://a"}'), 'url: string "ftp://a" does not match "^https?://"');
    assert.equal(message('{"url":"http://a","retries":"2"}'), 'retries: expected integer, found string "2"');
    assert.equal(message('{"url":"http://a","retries":1.5}'), 'retries: expected integer, found number 1.5');
    assert.equal(message('{"url":"http://a","retries":9}'), 'retries: 9 is above the maximum 5');
    assert.equal(message('{"url":"http://a","mode":"medium"}'), 'mode: expected one of "fast", "slow", found string "medium"');
    assert.equal(message('{"url":"http://a","tags":["a",2]}'), 'tags[1]: expected string, found number 2');
    assert.equal(message('{"url":"http://a","tags":["a","b","c"]}'), 'tags: takes at most 2 items, found 3');
    assert.equal(message('{"url":"http://a","limits":{"ms":0}}'), 'limits.ms: 0 must be above 0');
    assert.match(message('{"url":"http://a","either":true}'), /^either: matches none of the allowed forms/);
    assert.equal(
      message('{"url":"http://a","colour":1}'),
      'unknown field `colour`, expected one of `url`, `retries`, `mode`, `tags`, `limits`, `either`',
    );
    assert.match(message('{"url":'), /^params are not JSON: /);
    assert.equal(message('[1]'), 'expected object, found an array');
  });
});

describe('plugin', () => {
  it('describes itself with its params schema', () => {
    const p = plugin({ name: 'p', version: '1.2.3', description: 'd', params: { type: 'object' }, run: () => Outcome.ok('') });
    assert.deepEqual(p.describe(), { name: 'p', version: '1.2.3', description: 'd', paramsSchema: '{"type":"object"}' });
    assert.deepEqual(new MockHost().describe(p).paramsSchema, { type: 'object' });
  });

  it('refuses a definition it cannot run', () => {
    assert.throws(() => plugin({ run() {} }), /name must be a non-empty string/);
    assert.throws(() => plugin({ name: 'x' }), /run must be a function/);
  });

  it('returns WIT results and never throws', () => {
    const p = echo(() => Outcome.ok('fine', { a: 1 }, { m: 2 }));
    const r = p.run({ runId: 'r', deadlineMs: 0n }, '{}');
    assert.deepEqual(r, { tag: 'ok', val: { status: 'ok', summary: 'fine', details: '{"a":1}', metrics: [{ name: 'm', value: 2 }] } });
    const e = echo(() => {
      throw new Error('boom');
    }).run({}, '{}');
    assert.equal(e.tag, 'err');
    assert.equal(e.val.tag, 'failed');
  });

  it('validates with the schema, then the validate hook', () => {
    const host = new MockHost();
    const p = echo(() => Outcome.ok(''), {
      params: { type: 'object', properties: { n: { type: 'integer' } } },
      validate(params) {
        if (params.n === 13) throw ActionError.invalidParams('n must not be 13');
        if (params.n === 7) throw new RangeError('7 is taken');
      },
    });
    assert.equal(host.validate(p, { n: 1 }), null);
    assert.equal(host.validate(p, { n: 'x' }), 'n: expected integer, found string "x"');
    assert.equal(host.validate(p, { n: 13 }), 'n must not be 13');
    assert.deepEqual(host.run(p, { n: 13 }).error, { kind: 'invalid-params', message: 'n must not be 13' });
    assert.deepEqual(host.run(p, '{"n":').error.kind, 'invalid-params');
    // Whatever validate throws rejects the params with its message (no stack).
    assert.equal(host.validate(p, { n: 7 }), 'RangeError: 7 is taken');
    assert.deepEqual(host.run(p, { n: 7 }).error, { kind: 'invalid-params', message: 'RangeError: 7 is taken' });
  });

  it('maps what run throws to an action error', () => {
    const host = new MockHost();
    const kind = (thrown) =>
      host.run(
        echo(() => {
          throw thrown;
        }),
      ).error;
    assert.deepEqual(kind(ActionError.denied('no secret')), { kind: 'denied', message: 'no secret' });
    assert.deepEqual(kind(ActionError.failed('gave up')), { kind: 'failed', message: 'gave up' });
    assert.deepEqual(kind(new ParamsError('bad')), { kind: 'invalid-params', message: 'bad' });
    assert.deepEqual(kind(new HttpError('denied', 'not granted')), { kind: 'denied', message: 'not granted' });
    assert.deepEqual(kind(new HttpError('invalid-request', 'bad URL')), {
      kind: 'invalid-params',
      message: 'invalid request: bad URL',
    });
    assert.equal(kind(new HttpError('timeout')).kind, 'failed');
    assert.match(kind(new HttpError('timeout')).message, /^timed out\n/);
    assert.deepEqual(kind('a string'), { kind: 'failed', message: 'uncaught exception: a string' });
    assert.deepEqual(kind({ code: 7 }), { kind: 'failed', message: 'uncaught exception: {"code":7}' });
    assert.deepEqual(kind(undefined), { kind: 'failed', message: 'uncaught exception: undefined' });
  });

  it('reports an uncaught error with its message and stack', () => {
    function deepInside() {
      return null.property;
    }
    const r = new MockHost().run(echo(() => deepInside()));
    assert.equal(r.error.kind, 'failed');
    const [first, ...frames] = r.error.message.split('\n');
    assert.match(first, /^TypeError: Cannot read properties of null/);
    assert.match(frames.join('\n'), /deepInside/);
  });

  it('says what is wrong with what run returned', () => {
    const host = new MockHost();
    assert.match(host.run(echo(() => 'ok')).error.message, /^TypeError: run must return an Outcome .*not "ok"/);
    assert.match(host.run(echo(() => Promise.resolve(Outcome.ok('')))).error.message, /run returned a Promise/);
    assert.match(host.run(echo(() => Outcome.ok('x', { n: 1n }))).error.message, /outcome details are not JSON/);
    assert.deepEqual(host.run(echo(() => ({ status: 'warn', summary: 'plain' }))).outcome, {
      status: 'warn',
      summary: 'plain',
      details: {},
      metrics: {},
    });
  });

  it('hands run a context', () => {
    let seen;
    new MockHost().run(
      echo((ctx) => {
        seen = ctx;
        return Outcome.ok('');
      }),
      {},
      { dryRun: true, step: 'probe', deadlineMs: Date.now() + 5000 },
    );
    assert.ok(seen instanceof Context);
    assert.equal(seen.dryRun, true);
    assert.equal(seen.step, 'probe');
    assert.ok(seen.remainingMs() > 4000 && seen.remainingMs() <= 5000);
  });
});

describe('http', () => {
  it('sends what the plugin asked for and reads the answer', () => {
    const host = new MockHost().answerHttp({
      status: 201,
      headers: { 'X-Id': '7' },
      json: { ok: true },
      elapsedMs: 12.5,
      certNotAfter: 1700000000,
      remoteAddress: '10.0.0.1:443',
    });
    const resp = host.with(() =>
      http.post('https://svc/items', 'name=a', { headers: [['Authorization', 'Bearer t']], timeoutMs: 1500.2, followRedirects: 3 }),
    );
    assert.equal(resp.status, 201);
    assert.equal(resp.header('x-ID'), '7');
    assert.equal(resp.header('content-type'), 'application/json');
    assert.deepEqual(resp.json(), { ok: true });
    assert.equal(resp.text(), '{"ok":true}');
    assert.equal(resp.elapsedMs, 12.5);
    assert.equal(resp.certNotAfter, 1700000000);
    assert.equal(resp.remoteAddress, '10.0.0.1:443');
    assert.equal(resp.finalUrl, 'https://svc/items');
    assert.deepEqual(host.requests, [
      {
        method: 'POST',
        url: 'https://svc/items',
        headers: { authorization: 'Bearer t' },
        body: new TextEncoder().encode('name=a'),
        text: 'name=a',
        timeoutMs: 1501,
        maxRedirects: 3,
      },
    ]);
  });

  it('sends JSON bodies and every method', () => {
    const host = new MockHost();
    for (let i = 0; i < 6; i++) host.answerHttp({});
    host.with(() => {
      http.request({ method: 'put', url: 'http://a', json: { v: 2 } });
      http.get('http://a');
      http.head('http://a');
      http.patch('http://a', new Uint8Array([1, 2]));
      http.delete('http://a');
      http.put('http://a', 'x');
    });
    assert.deepEqual(
      host.requests.map((r) => r.method),
      ['PUT', 'GET', 'HEAD', 'PATCH', 'DELETE', 'PUT'],
    );
    assert.equal(host.requests[0].text, '{"v":2}');
    assert.equal(host.requests[0].headers['content-type'], 'application/json');
    assert.equal(host.requests[1].maxRedirects, 0);
    assert.equal(host.requests[1].timeoutMs, undefined);
    assert.throws(() => host.with(() => http.request({ method: 'TRACE', url: 'http://a' })), /unsupported HTTP method "TRACE"/);
  });

  it('throws the host error as an HttpError', () => {
    const host = new MockHost().answerHttpError('denied', 'http://x is not granted').answerHttpError('timeout');
    assert.throws(
      () => host.with(() => http.get('http://x')),
      (err) => err instanceof HttpError && err.kind === 'denied' && err.detail === 'http://x is not granted',
    );
    assert.throws(
      () => host.with(() => http.get('http://x')),
      (err) => err instanceof HttpError && err.kind === 'timeout' && err.message === 'timed out',
    );
    // An empty queue answers like a host nobody listens to.
    assert.throws(
      () => host.with(() => http.get('http://x')),
      (err) => err instanceof HttpError && err.kind === 'connection' && err.message === 'connection failed: no canned response',
    );
  });

  it('says when the body is not JSON', () => {
    const host = new MockHost().answerHttp({ body: '<html>' });
    const resp = host.with(() => http.get('http://a/x'));
    assert.throws(() => resp.json(), /^SyntaxError: the response body of http:\/\/a\/x is not JSON/);
  });

  it('needs a host', () => {
    assert.throws(() => http.get('http://a'), /no runcap host: .*MockHost/);
  });
});

describe('log', () => {
  it('records levels, messages and fields as strings', () => {
    const host = new MockHost();
    host.with(() => {
      log.debug('d');
      log.info('started', { n: 3, ok: true, s: 'x', o: { a: 1 } });
      log.warn('careful', [['k', 'v']]);
      log.error(new Error('bad'));
    });
    assert.deepEqual(host.logs, [
      { level: 'debug', message: 'd', fields: {} },
      { level: 'info', message: 'started', fields: { n: '3', ok: 'true', s: 'x', o: '{"a":1}' } },
      { level: 'warn', message: 'careful', fields: { k: 'v' } },
      { level: 'error', message: 'Error: bad', fields: {} },
    ]);
  });
});

describe('MockHost', () => {
  it('puts the previous host back, even when run throws', () => {
    const outer = new MockHost().answerHttp({ status: 204 });
    const inner = new MockHost();
    outer.with(() => {
      assert.throws(() =>
        inner.with(() => {
          throw new Error('x');
        }),
      );
      assert.equal(http.get('http://a').status, 204);
    });
    assert.equal(inner.requests.length, 0);
    assert.equal(outer.requests.length, 1);
  });
});
