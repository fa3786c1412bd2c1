-- Stand-in data only, so the checks have something to judge on a fresh database: 40
-- logic updates (one rolled back), eight CAPAs (three open, none critical) and a short
-- hash-chained immutable log. Dates are relative to the first migration run.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO logic_updates (id, endpoint, status, created_at)
SELECT printf('update_%03d', i), printf('/api/sample_%d', i),
       CASE WHEN i = 17 THEN 'rolled_back' ELSE 'distributed' END,
       datetime('now', printf('-%d hours', 41 - i))
FROM n;

INSERT INTO capas (title, severity, status, opened_at, closed_at) VALUES
  ('Rollback of update_017', 'medium', 'closed', datetime('now', '-20 days'), datetime('now', '-19 days')),
  ('Slow memory fetch', 'low', 'closed', datetime('now', '-15 days'), datetime('now', '-12 days')),
  ('Policy seed retried', 'low', 'closed', datetime('now', '-10 days'), datetime('now', '-9 days')),
  ('Trigger mesh lag', 'medium', 'closed', datetime('now', '-8 days'), datetime('now', '-2 days')),
  ('Stale cache entry', 'low', 'closed', datetime('now', '-6 days'), datetime('now', '-5 days')),
  ('Review risk levels', 'low', 'open', datetime('now', '-4 days'), NULL),
  ('Flaky schema validator', 'medium', 'open', datetime('now', '-2 days'), NULL),
  ('Document observation window', 'low', 'open', datetime('now', '-1 days'), NULL);

-- Each entry chains on the one before it (sha3-256 of previous hash|subsystem|event).
INSERT INTO immutable_log (subsystem, event, prev_hash, hash)
SELECT s, e, p, lower(hex(sha3(p || '|' || s || '|' || e, 256)))
FROM (SELECT 'unified_logic_hub' AS s, 'update_001 distributed' AS e,
             coalesce((SELECT hash FROM immutable_log ORDER BY id DESC LIMIT 1), '') AS p);
INSERT INTO immutable_log (subsystem, event, prev_hash, hash)
SELECT s, e, p, lower(hex(sha3(p || '|' || s || '|' || e, 256)))
FROM (SELECT 'unified_logic_hub' AS s, 'update_017 rolled back' AS e,
             coalesce((SELECT hash FROM immutable_log ORDER BY id DESC LIMIT 1), '') AS p);
INSERT INTO immutable_log (subsystem, event, prev_hash, hash)
SELECT s, e, p, lower(hex(sha3(p || '|' || s || '|' || e, 256)))
FROM (SELECT 'capa_system' AS s, 'capa 1 opened for update_017' AS e,
             coalesce((SELECT hash FROM immutable_log ORDER BY id DESC LIMIT 1), '') AS p);
INSERT INTO immutable_log (subsystem, event, prev_hash, hash)
SELECT s, e, p, lower(hex(sha3(p || '|' || s || '|' || e, 256)))
FROM (SELECT 'governance' AS s, 'policies reviewed' AS e,
             coalesce((SELECT hash FROM immutable_log ORDER BY id DESC LIMIT 1), '') AS p);
INSERT INTO immutable_log (subsystem, event, prev_hash, hash)
SELECT s, e, p, lower(hex(sha3(p || '|' || s || '|' || e, 256)))
FROM (SELECT 'unified_logic_hub' AS s, 'update_040 distributed' AS e,
             coalesce((SELECT hash FROM immutable_log ORDER BY id DESC LIMIT 1), '') AS p);
