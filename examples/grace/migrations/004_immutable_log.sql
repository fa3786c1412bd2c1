-- Append-only audit log: each entry's hash covers the previous entry's hash, so changing
-- or removing an entry breaks every hash after it (`grace-db verify-log` walks the chain).
CREATE TABLE immutable_log (
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL DEFAULT (datetime('now')),
  subsystem TEXT NOT NULL,
  event TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
