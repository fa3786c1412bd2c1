-- The governance policies every deployment starts with. Seeding is idempotent: a policy
-- already present keeps its row (and whether it is active).
INSERT OR IGNORE INTO governance_policies (name, description) VALUES
  ('require_validation', 'every logic update passes schema validation before distribution'),
  ('observation_window', 'a distributed update is watched before it counts as stable'),
  ('auto_rollback', 'a critical anomaly in the observation window rolls the update back'),
  ('signed_updates', 'every update carries a signature'),
  ('capa_on_rollback', 'every rollback opens a corrective action');
