// wit.js, the component's host adapter, against stand-ins for the WIT imports that
// behave as componentize-js's bindings do: `send` returns the response, or throws an
// error whose `payload` is the http `error` variant.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

// Resolves `runcap:plugin/*` to modules that hand every call to globalThis.witImports.
const fakes = {
  'runcap:plugin/log@0.2.0': 'export const write = (...a) => globalThis.witImports.write(...a);',
  'runcap:plugin/http@0.2.0': 'export const send = (...a) => globalThis.witImports.send(...a);',
  'runcap:plugin/invocation@0.2.0': 'export const current = (...a) => globalThis.witImports.current(...a);',
};
const hooks = `
const fakes = ${JSON.stringify(fakes)};
export async function resolve(specifier, context, next) {
  if (specifier in fakes) {
    return { url: 'data:text/javascript,' + encodeURIComponent(fakes[specifier]), shortCircuit: true };
  }
  return next(specifier, context);
}`;

class ComponentError extends Error {
  constructor(value) {
    super(`${String(value)} (see error.payload)`);
    Object.defineProperty(this, 'payload', { value, enumerable: true });
  }
}

let sdk;
const calls = [];

before(async () => {
  register(`data:text/javascript,${encodeURIComponent(hooks)}`);
  globalThis.witImports = {
    write: (...args) => calls.push(['write', ...args]),
    current() {
      calls.push(['current']);
      return { runId: 'r-7', environment: 'prod', runbook: 'nightly', step: 'probe' };
    },
    send(req) {
      calls.push(['send', req]);
      if (req.url.includes('denied')) throw new ComponentError({ tag: 'denied', val: `${req.url} is not granted` });
      if (req.url.includes('slow')) throw new ComponentError({ tag: 'timeout' });
      if (req.url.includes('trap')) throw new TypeError('bindings broke');
      return {
        status: 200,
        headers: [['content-type', 'text/plain']],
        body: new TextEncoder().encode('hi'),
        bodyTruncated: false,
        elapsedUs: 2500n,
        finalUrl: req.url,
        remoteAddress: '127.0.0.1:80',
        certNotAfter: undefined,
      };
    },
  };
  await import('../src/wit.js');
  sdk = await import('../src/index.js');
});

describe('wit.js', () => {
  it('passes requests to runcap:plugin/http as WIT values', () => {
    calls.length = 0;
    const resp = sdk.http.get('http://svc/ok', { headers: { Accept: '*/*' }, timeoutMs: 250 });
    assert.equal(resp.status, 200);
    assert.equal(resp.text(), 'hi');
    assert.equal(resp.elapsedMs, 2.5);
    assert.deepEqual(calls, [
      [
        'send',
        {
          method: 'get',
          url: 'http://svc/ok',
          headers: [['Accept', '*/*']],
          body: new Uint8Array(0),
          timeoutMs: 250,
          maxRedirects: 0,
        },
      ],
    ]);
  });

  it('turns an err result into an HttpError', () => {
    assert.throws(
      () => sdk.http.get('http://svc/denied'),
      (e) => e instanceof sdk.HttpError && e.kind === 'denied' && e.detail === 'http://svc/denied is not granted',
    );
    assert.throws(
      () => sdk.http.get('http://svc/slow'),
      (e) => e instanceof sdk.HttpError && e.kind === 'timeout',
    );
  });

  it('lets anything else through, and run reports it as failed', () => {
    assert.throws(() => sdk.http.get('http://svc/trap'), /bindings broke/);
    const p = sdk.plugin({ name: 'x', run: () => sdk.http.get('http://svc/trap') });
    const r = p.run({}, '{}');
    assert.equal(r.tag, 'err');
    assert.equal(r.val.tag, 'failed');
    assert.match(r.val.val, /^TypeError: bindings broke\n/);
  });

  it('writes log lines to runcap:plugin/log', () => {
    calls.length = 0;
    sdk.log.warn('disk low', { free_gb: 3 });
    assert.deepEqual(calls, [['write', 'warn', 'disk low', [['free_gb', '3']]]]);
  });

  it('asks runcap:plugin/invocation for the names of the running action', () => {
    calls.length = 0;
    let seen;
    const p = sdk.plugin({
      name: 'x',
      run(ctx) {
        seen = ctx;
        return sdk.Outcome.ok('');
      },
    });
    assert.equal(p.run({ dryRun: true, deadlineMs: 5n }, '').tag, 'ok');
    assert.deepEqual(calls, [['current']]);
    assert.deepEqual(
      [seen.runId, seen.environment, seen.runbook, seen.step, seen.dryRun, seen.deadlineMs],
      ['r-7', 'prod', 'nightly', 'probe', true, 5],
    );
  });

  it('maps a denial in run to the denied action error', () => {
    const p = sdk.plugin({ name: 'x', run: () => sdk.http.get('http://svc/denied') });
    assert.deepEqual(p.run({}, ''), { tag: 'err', val: { tag: 'denied', val: 'http://svc/denied is not granted' } });
  });
});
