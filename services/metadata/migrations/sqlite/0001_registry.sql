-- Registry of tasks, workflows and launch plans, and projects.
-- One table for the three entity kinds: they share identity, immutability and listing rules.
CREATE TABLE entities (
    resource_type INTEGER NOT NULL,          -- flyteidl.core.ResourceType: 1 task, 2 workflow, 3 launch plan
    project       TEXT    NOT NULL,
    domain        TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    digest        TEXT    NOT NULL,          -- sha256 of the spec as sent; equal digests = identical re-registration
    spec          BLOB    NOT NULL,          -- TaskSpec / WorkflowSpec / LaunchPlanSpec, as sent
    closure       BLOB    NOT NULL,          -- CompiledTask / CompiledWorkflowClosure / LaunchPlanClosure
    state         INTEGER NOT NULL DEFAULT 0, -- launch plans: 1 = ACTIVE
    created_at    BIGINT  NOT NULL,          -- unix microseconds
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (resource_type, project, domain, name, version)
);
-- "latest version of a name" and "all of a project/domain", both sorted by creation time
CREATE INDEX entities_by_name ON entities (resource_type, project, domain, name, created_at);
CREATE INDEX entities_by_scope ON entities (resource_type, project, domain, created_at);
CREATE INDEX entities_active ON entities (resource_type, project, domain, state) WHERE state = 1;

CREATE TABLE projects (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    labels      BLOB    NOT NULL,            -- flyteidl.admin.Labels
    state       INTEGER NOT NULL,            -- flyteidl.admin.Project.ProjectState
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
