// The one place the SDK reaches the host. Everything else in the SDK calls `current()`.
//
// In a component, `wit.js` installs an adapter over the `runcap:plugin/log`,
// `runcap:plugin/http` and `runcap:plugin/invocation` imports when it is evaluated. In
// native unit tests, `MockHost` from `runcap-plugin/testing` installs itself for the
// duration of each call.
//
// A host has three functions, all on WIT-shaped values (what componentize-js passes):
//
//   log(level, message, fields)  level: 'debug' | 'info' | 'warn' | 'error',
//                                fields: [[key, value], ...] of strings
//   send(request)                request: { method: 'get' | 'head' | 'post' | 'put' | 'delete' | 'patch',
//                                           url, headers: [[name, value], ...], body: Uint8Array,
//                                           timeoutMs: number | undefined, maxRedirects: number }
//                                returns { ok: response } or { err: { tag, val } } (the http `error` variant)
//   names()                      { runId, environment, runbook, step } of the running action

const missing = {
  log() {
    throw new Error(
      'no runcap host: run the plugin in runcap, or in unit tests through MockHost from runcap-plugin/testing',
    );
  },
  send() {
    return missing.log();
  },
  // Outside runcap and a mock, nothing names the action.
  names() {
    return { runId: '', environment: '', runbook: '', step: '' };
  },
};

let host = missing;

/** The host capability calls go to. */
export function current() {
  return host;
}

/** Makes `next` the host and returns the one it replaces. */
export function install(next) {
  const previous = host;
  host = next ?? missing;
  return previous;
}
