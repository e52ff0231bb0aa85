-- `eq(version, V)` over a project/domain (flytekit's list_tasks_by_version) walked every newer
-- version without this; see docs/benchmarks.md (b2: 55 ms -> 2 ms on SQLite at 50,000 entities).
CREATE INDEX entities_by_version ON entities (resource_type, project, domain, version, created_at);
