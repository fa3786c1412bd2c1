// js-status-check: GET a URL and judge the answer's status and, optionally, one field of
// its JSON body.
//
//   with = { url = "https://api.example.com/health", expect_status = 200,
//            json = { pointer = "/status", equals = "up" } }
//
// ok when every condition holds, fail otherwise (or when the request gets no answer).
// A body that is not JSON while `json` is set is an error of the step, reported with
// the parse error and where it was thrown.

import { plugin, Outcome, HttpError, http, log } from 'runcap-plugin';

import { lookup, jsonEqual } from './pointer.js';

const round = (ms) => Math.round(ms * 10) / 10;

export default plugin({
  name: 'js-status-check',
  version: '0.1.0',
  description: 'GET a URL; ok when the status (and optionally one JSON field) is as expected',
  params: {
    type: 'object',
    additionalProperties: false,
    required: ['url'],
    properties: {
      url: { type: 'string', pattern: '^https?://', description: 'The URL to GET.' },
      expect_status: {
        type: 'integer',
        minimum: 100,
        maximum: 599,
        default: 200,
        description: 'The status the answer must have.',
      },
      json: {
        type: 'object',
        additionalProperties: false,
        required: ['pointer', 'equals'],
        description: 'One field of the JSON body: the value at `pointer` (RFC 6901) must equal `equals`.',
        properties: {
          pointer: { type: 'string', pattern: '^(/.*)?$', description: 'Where the field is, e.g. /status.' },
          equals: { description: 'The JSON value it must have.' },
        },
      },
      timeout_ms: { type: 'integer', minimum: 1, description: 'Give up after this long (default: the step limit).' },
    },
  },

  run(ctx, params) {
    const { url, expect_status: expected } = params;
    let resp;
    try {
      resp = http.get(url, { timeoutMs: params.timeout_ms });
    } catch (e) {
      // No answer is a failed check; a denial (or a malformed URL) is an error of the step.
      if (e instanceof HttpError && ['timeout', 'connection', 'tls'].includes(e.kind)) {
        log.warn('no answer', { url, error: e.message });
        return Outcome.fail(`GET ${url}: ${e.message}`, { url, error: e.kind, message: e.detail });
      }
      throw e;
    }

    const ms = round(resp.elapsedMs);
    console.log(`GET ${url} → ${resp.status} in ${ms} ms`);
    log.info('answer', { url, status: resp.status, elapsed_ms: ms });

    const problems = [];
    const details = { url, final_url: resp.finalUrl, status: resp.status, expect_status: expected, response_time_ms: ms };
    if (resp.status !== expected) problems.push(`status ${resp.status}, expected ${expected}`);

    if (params.json) {
      const { pointer, equals } = params.json;
      const found = lookup(resp.json(), pointer);
      const passed = found.found && jsonEqual(found.value, equals);
      details.json = { pointer, expected: equals, actual: found.found ? found.value : null, passed };
      if (!found.found) problems.push(`json ${pointer} is missing`);
      else if (!passed) problems.push(`json ${pointer} is ${JSON.stringify(found.value)}, expected ${JSON.stringify(equals)}`);
    }

    const summary = `GET ${url} → ${resp.status} in ${ms} ms`;
    const metrics = { response_time_ms: ms, status: resp.status };
    if (problems.length) return Outcome.fail(`${summary}: ${problems.join('; ')}`, details, metrics);
    return Outcome.ok(summary, details, metrics);
  },
});
