// The component's host: the WIT imports of world `check`. Only the component build
// evaluates this module (its entry imports it first); unit tests never load it.

import { write } from 'runcap:plugin/log@0.2.0';
import { send } from 'runcap:plugin/http@0.2.0';
import { current } from 'runcap:plugin/invocation@0.2.0';

import { install } from './host.js';

install({
  log(level, message, fields) {
    write(level, message, fields);
  },
  names() {
    return current();
  },
  send(request) {
    try {
      return { ok: send(request) };
    } catch (e) {
      // componentize-js throws the `err` case of a result as an error whose `payload`
      // is the variant value ({ tag, val }).
      if (e !== null && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload')) {
        return { err: e.payload };
      }
      throw e;
    }
  },
});
