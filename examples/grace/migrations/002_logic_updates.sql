-- Logic updates (schema changes distributed by the logic hub) and their outcome.
CREATE TABLE logic_updates (
  id TEXT PRIMARY KEY,
  endpoint TEXT NOT NULL,
  risk_level TEXT NOT NULL DEFAULT 'low',
  status TEXT NOT NULL CHECK (status IN ('submitted', 'distributed', 'failed', 'rolled_back')),
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
