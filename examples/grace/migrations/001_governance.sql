-- Governance policies the backend enforces; seeded by `grace-db seed-policies`.
CREATE TABLE governance_policies (
  name TEXT PRIMARY KEY,
  description TEXT NOT NULL,
  active INTEGER NOT NULL DEFAULT 1
);
