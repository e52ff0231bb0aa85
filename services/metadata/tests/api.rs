//! The admin API against a real database: every registry operation on SQLite and on Postgres.

mod common;

use aloft_proto::flyteidl::admin::{self, NamedEntityIdentifier, ResourceListRequest, Sort, sort};
use aloft_proto::flyteidl::core::{ResourceType, node::Target};
use common::*;
use tonic::Code;

fn scope(name: &str) -> Option<NamedEntityIdentifier> {
    Some(NamedEntityIdentifier {
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        org: String::new(),
    })
}

fn latest(name: &str) -> ResourceListRequest {
    ResourceListRequest {
        id: scope(name),
        limit: 1,
        sort_by: Some(Sort { key: "created_at".into(), direction: sort::Direction::Descending as i32 }),
        ..Default::default()
    }
}

both_backends!(register_and_read_back, |b| async move {
    let mut env = start(b, |_| {}).await;
    let (t1, _t2, wf, lp) = register_basics(&mut env, "v1").await;

    let task = env.client.get_task(admin::ObjectGetRequest { id: Some(t1.clone()) }).await.unwrap().into_inner();
    assert_eq!(task.closure.unwrap().compiled_task.unwrap().template.unwrap().id.unwrap(), t1);

    let w = env.client.get_workflow(admin::ObjectGetRequest { id: Some(wf.clone()) }).await.unwrap().into_inner();
    let compiled = w.closure.unwrap().compiled_workflow.unwrap();
    let nodes: Vec<String> =
        compiled.primary.as_ref().unwrap().template.as_ref().unwrap().nodes.iter().map(|n| n.id.clone()).collect();
    for n in ["start-node", "end-node", "n0", "n1"] {
        assert!(nodes.contains(&n.to_string()), "{n} missing from {nodes:?}");
    }
    assert_eq!(compiled.tasks.len(), 2, "every referenced task is in the closure");
    // workflow inputs are rewritten to come from start-node
    let n0 = compiled.primary.unwrap().template.unwrap().nodes.into_iter().find(|n| n.id == "n0").unwrap();
    match &n0.inputs[0].binding.as_ref().unwrap().value {
        Some(aloft_proto::flyteidl::core::binding_data::Value::Promise(p)) => assert_eq!(p.node_id, "start-node"),
        other => panic!("unexpected binding {other:?}"),
    }
    assert!(matches!(n0.target, Some(Target::TaskNode(_))));

    let l = env.client.get_launch_plan(admin::ObjectGetRequest { id: Some(lp.clone()) }).await.unwrap().into_inner();
    let closure = l.closure.unwrap();
    assert_eq!(closure.state, admin::LaunchPlanState::Inactive as i32);
    assert!(closure.expected_inputs.unwrap().parameters.contains_key("x"));
    assert!(closure.expected_outputs.unwrap().variables.contains_key("o0"));
});

both_backends!(identical_reregistration_is_already_exists, |b| async move {
    let mut env = start(b, |_| {}).await;
    let (t1, t2, wf, lp) = register_basics(&mut env, "v1").await;
    let err = env
        .client
        .create_task(admin::TaskCreateRequest { id: Some(t1.clone()), spec: Some(task_spec(&t1.name, "v1")) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = env
        .client
        .create_workflow(admin::WorkflowCreateRequest {
            id: Some(wf.clone()),
            spec: Some(workflow_spec(&wf.name, "v1", &t1, &t2)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = env
        .client
        .create_launch_plan(admin::LaunchPlanCreateRequest { id: Some(lp), spec: Some(launch_plan_spec(&wf, Some(3))) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
});

both_backends!(latest_and_pinned_versions, |b| async move {
    let mut env = start(b, |_| {}).await;
    register_basics(&mut env, "v1").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    register_basics(&mut env, "v2").await;
    for (kind, name) in [(0, "pipeline.t1"), (1, "pipeline.wf"), (2, "pipeline.wf")] {
        let version = match kind {
            0 => env.client.list_tasks(latest(name)).await.unwrap().into_inner().tasks[0].id.clone().unwrap().version,
            1 => {
                env.client.list_workflows(latest(name)).await.unwrap().into_inner().workflows[0]
                    .id
                    .clone()
                    .unwrap()
                    .version
            }
            _ => {
                env.client.list_launch_plans(latest(name)).await.unwrap().into_inner().launch_plans[0]
                    .id
                    .clone()
                    .unwrap()
                    .version
            }
        };
        assert_eq!(version, "v2", "latest {name}");
    }
    // flytekit's list_tasks_by_version
    let by_version = env
        .client
        .list_tasks(ResourceListRequest {
            id: scope(""),
            filters: "eq(version,v1)".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_version.tasks.len(), 2);
    assert!(by_version.tasks.iter().all(|t| t.id.as_ref().unwrap().version == "v1"));
});

both_backends!(pagination_walks_every_version_once, |b| async move {
    let mut env = start(b, |_| {}).await;
    for v in 0..7 {
        let t = id(ResourceType::Task, "pipeline.t", &format!("v{v}"));
        env.client
            .create_task(admin::TaskCreateRequest { id: Some(t.clone()), spec: Some(task_spec(&t.name, &t.version)) })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = env
            .client
            .list_tasks(ResourceListRequest {
                id: scope("pipeline.t"),
                limit: 3,
                token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.tasks.into_iter().map(|t| t.id.unwrap().version));
        if page.token.is_empty() {
            break;
        }
        token = page.token;
    }
    seen.sort();
    assert_eq!(seen, (0..7).map(|v| format!("v{v}")).collect::<Vec<_>>());
    let ids = env
        .client
        .list_task_ids(admin::NamedEntityIdentifierListRequest {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids.entities.len(), 1);
    assert_eq!(ids.entities[0].name, "pipeline.t");
});

both_backends!(activation_moves_between_versions, |b| async move {
    let mut env = start(b, |_| {}).await;
    let (_, _, _, lp1) = register_basics(&mut env, "v1").await;
    let (_, _, _, lp2) = register_basics(&mut env, "v2").await;
    let active = |id: &aloft_proto::flyteidl::core::Identifier| admin::LaunchPlanUpdateRequest {
        id: Some(id.clone()),
        state: admin::LaunchPlanState::Active as i32,
    };
    let err = env
        .client
        .get_active_launch_plan(admin::ActiveLaunchPlanRequest { id: scope("pipeline.wf") })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    env.client.update_launch_plan(active(&lp1)).await.unwrap();
    let a = env
        .client
        .get_active_launch_plan(admin::ActiveLaunchPlanRequest { id: scope("pipeline.wf") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.id.unwrap().version, "v1");
    env.client.update_launch_plan(active(&lp2)).await.unwrap();
    let a = env
        .client
        .get_active_launch_plan(admin::ActiveLaunchPlanRequest { id: scope("pipeline.wf") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.id.unwrap().version, "v2");
    let old = env.client.get_launch_plan(admin::ObjectGetRequest { id: Some(lp1) }).await.unwrap().into_inner();
    assert_eq!(old.closure.unwrap().state, admin::LaunchPlanState::Inactive as i32);
    let list = env
        .client
        .list_active_launch_plans(admin::ActiveLaunchPlanListRequest {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.launch_plans.len(), 1);
});

both_backends!(projects_and_domains, |b| async move {
    let mut env = start(b, |_| {}).await;
    let mut labels = admin::Labels::default();
    labels.values.insert("team".into(), "catalog".into());
    labels.values.insert("slack-channel".into(), "#catalog-ml".into());
    let project = admin::Project {
        id: "catalog".into(),
        name: "Catalog quality".into(),
        labels: Some(labels),
        ..Default::default()
    };
    env.client.register_project(admin::ProjectRegisterRequest { project: Some(project.clone()) }).await.unwrap();
    let err = env
        .client
        .register_project(admin::ProjectRegisterRequest { project: Some(project.clone()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let got = env
        .client
        .get_project(admin::ProjectGetRequest { id: "catalog".into(), org: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.labels.unwrap().values["team"], "catalog");
    assert_eq!(got.domains.len(), 3);
    let mut updated = project.clone();
    updated.description = "listings".into();
    env.client.update_project(updated).await.unwrap();
    let all = env
        .client
        .list_projects(admin::ProjectListRequest { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(all.projects.iter().any(|p| p.id == "catalog" && p.description == "listings"));
    let domains = env.client.get_domains(admin::GetDomainRequest {}).await.unwrap().into_inner();
    let names: Vec<String> = domains.domains.into_iter().map(|d| d.id).collect();
    assert_eq!(names, vec!["development", "staging", "production"]);
});

both_backends!(unknown_projects_rejected_when_not_auto_created, |b| async move {
    let mut env = start(b, |c| c.projects.auto_create = false).await;
    let t = id(ResourceType::Task, "pipeline.t1", "v1");
    let err = env
        .client
        .create_task(admin::TaskCreateRequest { id: Some(t.clone()), spec: Some(task_spec(&t.name, "v1")) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "project `marketplace` is not registered");
});

both_backends!(named_entities, |b| async move {
    let mut env = start(b, |_| {}).await;
    register_basics(&mut env, "v1").await;
    let list = env
        .client
        .list_named_entities(admin::NamedEntityListRequest {
            resource_type: ResourceType::Task as i32,
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<String> = list.entities.into_iter().map(|e| e.id.unwrap().name).collect();
    names.sort();
    assert_eq!(names, vec!["pipeline.t1", "pipeline.t2"]);
    let got = env
        .client
        .get_named_entity(admin::NamedEntityGetRequest {
            resource_type: ResourceType::Workflow as i32,
            id: scope("pipeline.wf"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id.unwrap().name, "pipeline.wf");
    let err = env
        .client
        .get_named_entity(admin::NamedEntityGetRequest {
            resource_type: ResourceType::Workflow as i32,
            id: scope("nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
});
