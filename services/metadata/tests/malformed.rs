//! A corpus of malformed and conflicting requests: each must get the right gRPC code and a message
//! naming what is wrong, and none may change what is stored.

mod common;

use aloft_proto::flyteidl::admin::{self, NamedEntityIdentifier, ResourceListRequest};
use aloft_proto::flyteidl::core::{self, ResourceType, SimpleType};
use aloft_proto::flyteidl::service::CreateUploadLocationRequest;
use common::*;
use prost::Message;
use tonic::Code;

type Call = Box<dyn Fn(Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Env, tonic::Status)>>>>;

macro_rules! case {
    ($method:ident, $client:ident, $req:expr) => {{
        let req = $req;
        Box::new(move |mut env: Env| {
            let req = req.clone();
            Box::pin(async move {
                let status = env.$client.$method(req).await.expect_err("request must fail");
                (env, status)
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = (Env, tonic::Status)>>>
        }) as Call
    }};
}

/// Everything stored, as bytes, to prove a failed request changed nothing.
async fn snapshot(env: &mut Env) -> Vec<u8> {
    let scope = || {
        Some(NamedEntityIdentifier {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            name: String::new(),
            org: String::new(),
        })
    };
    let req = || ResourceListRequest { id: scope(), limit: 1000, ..Default::default() };
    let mut out = Vec::new();
    out.extend(env.client.list_tasks(req()).await.unwrap().into_inner().encode_to_vec());
    out.extend(env.client.list_workflows(req()).await.unwrap().into_inner().encode_to_vec());
    out.extend(env.client.list_launch_plans(req()).await.unwrap().into_inner().encode_to_vec());
    out.extend(
        env.client
            .list_projects(admin::ProjectListRequest { limit: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .encode_to_vec(),
    );
    out
}

fn cases() -> Vec<(&'static str, Code, &'static str, Call)> {
    let t1 = id(ResourceType::Task, "pipeline.t1", "v1");
    let t2 = id(ResourceType::Task, "pipeline.t2", "v1");
    let wf = id(ResourceType::Workflow, "pipeline.wf", "v1");
    let lp = id(ResourceType::LaunchPlan, "pipeline.wf", "v1");
    let task_req = |id: Option<core::Identifier>, spec: Option<admin::TaskSpec>| admin::TaskCreateRequest { id, spec };
    let wf_req = |spec: admin::WorkflowSpec| admin::WorkflowCreateRequest {
        id: spec.template.as_ref().unwrap().id.clone(),
        spec: Some(spec),
    };
    let lp_req =
        |spec: admin::LaunchPlanSpec| admin::LaunchPlanCreateRequest { id: Some(lp.clone()), spec: Some(spec) };
    let get = |id: core::Identifier| admin::ObjectGetRequest { id: Some(id) };
    let with = |mut id: core::Identifier, f: fn(&mut core::Identifier)| {
        f(&mut id);
        id
    };

    let mut changed_task = task_spec("pipeline.t1", "v1");
    if let Some(core::task_template::Target::Container(c)) = changed_task.template.as_mut().unwrap().target.as_mut() {
        c.image = "ghcr.io/example/img:2".into();
    }
    let mut wf_unknown_task =
        workflow_spec("pipeline.wf2", "v1", &t1, &with(t2.clone(), |i| i.name = "pipeline.missing".into()));
    wf_unknown_task.template.as_mut().unwrap().id = Some(id(ResourceType::Workflow, "pipeline.wf2", "v1"));
    let mut wf_cycle = workflow_spec("pipeline.cyc", "v1", &t1, &t2);
    wf_cycle.template.as_mut().unwrap().nodes[0].inputs = vec![bind("x", promise("n1", "o0"))];
    let mut wf_unknown_var = workflow_spec("pipeline.uv", "v1", &t1, &t2);
    wf_unknown_var.template.as_mut().unwrap().nodes[1].inputs = vec![bind("x", promise("n0", "nope"))];
    let mut wf_unknown_node = workflow_spec("pipeline.un", "v1", &t1, &t2);
    wf_unknown_node.template.as_mut().unwrap().nodes[1].inputs = vec![bind("x", promise("n9", "o0"))];
    let mut wf_bad_type = workflow_spec("pipeline.bt", "v1", &t1, &t2);
    wf_bad_type.template.as_mut().unwrap().interface =
        Some(interface(&[("x", SimpleType::String)], &[("o0", SimpleType::Integer)]));
    let mut wf_missing_input = workflow_spec("pipeline.mi", "v1", &t1, &t2);
    wf_missing_input.template.as_mut().unwrap().nodes[1].inputs.clear();
    let mut wf_dup = workflow_spec("pipeline.dup", "v1", &t1, &t2);
    wf_dup.template.as_mut().unwrap().nodes[1].id = "n0".into();
    let mut wf_bad_output = workflow_spec("pipeline.bo", "v1", &t1, &t2);
    wf_bad_output.template.as_mut().unwrap().outputs = vec![bind("o0", promise("n1", "o7"))];
    let mut wf_mismatch = workflow_spec("pipeline.mm", "v1", &t1, &t2);
    wf_mismatch.template.as_mut().unwrap().id = Some(id(ResourceType::Workflow, "pipeline.other", "v1"));
    let wf_mismatch_req = admin::WorkflowCreateRequest {
        id: Some(id(ResourceType::Workflow, "pipeline.mm", "v1")),
        spec: Some(wf_mismatch),
    };
    let mut wf_changed = workflow_spec("pipeline.wf", "v1", &t1, &t2);
    wf_changed.template.as_mut().unwrap().nodes.pop();
    wf_changed.template.as_mut().unwrap().outputs = vec![bind("o0", promise("n0", "o0"))];
    let mut lp_unknown_default = launch_plan_spec(&wf, Some(1));
    let p = lp_unknown_default.default_inputs.as_mut().unwrap().parameters.remove("x").unwrap();
    lp_unknown_default.default_inputs.as_mut().unwrap().parameters.insert("y".into(), p);
    let mut lp_bad_type = launch_plan_spec(&wf, None);
    lp_bad_type.default_inputs.as_mut().unwrap().parameters.get_mut("x").unwrap().var.as_mut().unwrap().r#type =
        Some(simple(SimpleType::Boolean));
    let mut lp_fixed_unknown = launch_plan_spec(&wf, None);
    lp_fixed_unknown.fixed_inputs = Some(core::LiteralMap { literals: [("z".to_string(), int_literal(1))].into() });
    let mut lp_both = launch_plan_spec(&wf, Some(1));
    lp_both.fixed_inputs = Some(core::LiteralMap { literals: [("x".to_string(), int_literal(1))].into() });
    let mut lp_bad_cron = launch_plan_spec(&wf, Some(1));
    lp_bad_cron.entity_metadata = Some(admin::LaunchPlanMetadata {
        schedule: Some(admin::Schedule {
            schedule_expression: Some(admin::schedule::ScheduleExpression::CronSchedule(admin::CronSchedule {
                schedule: "every day".into(),
                offset: String::new(),
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut lp_kickoff = launch_plan_spec(&wf, Some(1));
    lp_kickoff.entity_metadata = Some(admin::LaunchPlanMetadata {
        schedule: Some(admin::Schedule {
            schedule_expression: Some(admin::schedule::ScheduleExpression::CronSchedule(admin::CronSchedule {
                schedule: "*/5 * * * *".into(),
                offset: String::new(),
            })),
            kickoff_time_input_arg: "x".into(),
        }),
        ..Default::default()
    });
    let mut lp_no_recipients = launch_plan_spec(&wf, Some(1));
    lp_no_recipients.entity_metadata = Some(admin::LaunchPlanMetadata {
        notifications: vec![admin::Notification {
            phases: vec![core::workflow_execution::Phase::Failed as i32],
            r#type: Some(admin::notification::Type::Slack(admin::SlackNotification {
                recipients_email: vec![],
                ..Default::default()
            })),
        }],
        ..Default::default()
    });
    let mut lp_changed = launch_plan_spec(&wf, Some(4));
    lp_changed.max_parallelism = 3;
    let upload = |f: fn(&mut CreateUploadLocationRequest)| {
        let mut r = CreateUploadLocationRequest {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            filename: "fast1.tar.gz".into(),
            content_md5: vec![1; 16],
            ..Default::default()
        };
        f(&mut r);
        r
    };

    vec![
        (
            "task without id",
            Code::InvalidArgument,
            "CreateTask: missing id",
            case!(create_task, client, task_req(None, Some(task_spec("pipeline.t1", "v1")))),
        ),
        (
            "task without spec",
            Code::InvalidArgument,
            "task marketplace/development/pipeline.t9@v1: spec is missing",
            case!(create_task, client, task_req(Some(with(t1.clone(), |i| i.name = "pipeline.t9".into())), None)),
        ),
        (
            "task with empty version",
            Code::InvalidArgument,
            "CreateTask: id.version is empty",
            case!(
                create_task,
                client,
                task_req(Some(with(t1.clone(), |i| i.version.clear())), Some(task_spec("pipeline.t1", "")))
            ),
        ),
        (
            "task with empty name",
            Code::InvalidArgument,
            "CreateTask: id.name is empty",
            case!(create_task, client, task_req(Some(with(t1.clone(), |i| i.name.clear())), Some(task_spec("", "v1")))),
        ),
        (
            "task id of another kind",
            Code::InvalidArgument,
            "CreateTask: id.resource_type is WORKFLOW, expected TASK",
            case!(
                create_task,
                client,
                task_req(
                    Some(with(t1.clone(), |i| i.resource_type = ResourceType::Workflow as i32)),
                    Some(task_spec("pipeline.t1", "v1"))
                )
            ),
        ),
        (
            "task in bad project name",
            Code::InvalidArgument,
            "CreateTask: id.project `bad project` may only contain letters, digits, - and _",
            case!(
                create_task,
                client,
                task_req(
                    Some(with(t1.clone(), |i| i.project = "bad project".into())),
                    Some(task_spec("pipeline.t1", "v1"))
                )
            ),
        ),
        (
            "task in unknown domain",
            Code::InvalidArgument,
            "domain `qa` is not one of development, staging, production",
            case!(create_task, client, {
                let mut s = task_spec("pipeline.t1", "v1");
                s.template.as_mut().unwrap().id.as_mut().unwrap().domain = "qa".into();
                task_req(Some(with(t1.clone(), |i| i.domain = "qa".into())), Some(s))
            }),
        ),
        (
            "template id differs",
            Code::InvalidArgument,
            "task marketplace/development/pipeline.t8@v1: spec.template.id marketplace/development/pipeline.t1@v1 does not match the request id",
            case!(
                create_task,
                client,
                task_req(
                    Some(with(t1.clone(), |i| i.name = "pipeline.t8".into())),
                    Some(task_spec("pipeline.t1", "v1"))
                )
            ),
        ),
        (
            "task without type",
            Code::InvalidArgument,
            "task marketplace/development/pipeline.t7@v1: spec.template.type is empty",
            case!(create_task, client, {
                let mut s = task_spec("pipeline.t7", "v1");
                s.template.as_mut().unwrap().r#type.clear();
                task_req(Some(with(t1.clone(), |i| i.name = "pipeline.t7".into())), Some(s))
            }),
        ),
        (
            "task changed under same version",
            Code::InvalidArgument,
            "task marketplace/development/pipeline.t1@v1 already exists with a different structure: container differ",
            case!(create_task, client, task_req(Some(t1.clone()), Some(changed_task.clone()))),
        ),
        (
            "workflow with unregistered task",
            Code::InvalidArgument,
            "pipeline.missing",
            case!(create_workflow, client, wf_req(wf_unknown_task.clone())),
        ),
        (
            "workflow with a cycle",
            Code::InvalidArgument,
            "cycle",
            case!(create_workflow, client, wf_req(wf_cycle.clone())),
        ),
        (
            "binding to unknown output",
            Code::InvalidArgument,
            "nope",
            case!(create_workflow, client, wf_req(wf_unknown_var.clone())),
        ),
        (
            "binding to unknown node",
            Code::InvalidArgument,
            "n9",
            case!(create_workflow, client, wf_req(wf_unknown_node.clone())),
        ),
        (
            "binding type mismatch",
            Code::InvalidArgument,
            "string",
            case!(create_workflow, client, wf_req(wf_bad_type.clone())),
        ),
        (
            "required input unbound",
            Code::InvalidArgument,
            "n1",
            case!(create_workflow, client, wf_req(wf_missing_input.clone())),
        ),
        ("duplicate node id", Code::InvalidArgument, "n0", case!(create_workflow, client, wf_req(wf_dup.clone()))),
        (
            "output bound to unknown variable",
            Code::InvalidArgument,
            "o7",
            case!(create_workflow, client, wf_req(wf_bad_output.clone())),
        ),
        (
            "workflow template id differs",
            Code::InvalidArgument,
            "does not match the request id",
            case!(create_workflow, client, wf_mismatch_req.clone()),
        ),
        (
            "workflow without spec",
            Code::InvalidArgument,
            "workflow marketplace/development/pipeline.x@v1: spec is missing",
            case!(
                create_workflow,
                client,
                admin::WorkflowCreateRequest { id: Some(id(ResourceType::Workflow, "pipeline.x", "v1")), spec: None }
            ),
        ),
        (
            "workflow changed under same version",
            Code::InvalidArgument,
            "workflow marketplace/development/pipeline.wf@v1 already exists with a different structure: nodes, outputs differ",
            case!(create_workflow, client, wf_req(wf_changed.clone())),
        ),
        (
            "launch plan for unregistered workflow",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: workflow marketplace/development/pipeline.nowf@v1 is not registered",
            case!(
                create_launch_plan,
                client,
                lp_req(launch_plan_spec(&with(wf.clone(), |i| i.name = "pipeline.nowf".into()), Some(1)))
            ),
        ),
        (
            "launch plan without workflow id",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: workflow_id: missing id",
            case!(create_launch_plan, client, lp_req(admin::LaunchPlanSpec::default())),
        ),
        (
            "default input not in workflow",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: default input `y` is not an input of the workflow",
            case!(create_launch_plan, client, lp_req(lp_unknown_default.clone())),
        ),
        (
            "default input of wrong type",
            Code::InvalidArgument,
            "default input `x` has type",
            case!(create_launch_plan, client, lp_req(lp_bad_type.clone())),
        ),
        (
            "fixed input not in workflow",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: fixed input `z` is not an input of the workflow",
            case!(create_launch_plan, client, lp_req(lp_fixed_unknown.clone())),
        ),
        (
            "input both default and fixed",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: input `x` is both a default and a fixed input",
            case!(create_launch_plan, client, lp_req(lp_both.clone())),
        ),
        (
            "bad cron",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: schedule `every day` is not a valid cron expression (5 fields or an @alias)",
            case!(create_launch_plan, client, lp_req(lp_bad_cron.clone())),
        ),
        (
            "kickoff arg not a datetime",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: kickoff_time_input_arg `x` must be a datetime input",
            case!(create_launch_plan, client, lp_req(lp_kickoff.clone())),
        ),
        (
            "notification without recipients",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1: notification 0 has no recipients",
            case!(create_launch_plan, client, lp_req(lp_no_recipients.clone())),
        ),
        (
            "launch plan changed under same version",
            Code::InvalidArgument,
            "launch plan marketplace/development/pipeline.wf@v1 already exists with a different structure: default_inputs, max_parallelism differ",
            case!(create_launch_plan, client, lp_req(lp_changed.clone())),
        ),
        (
            "activate unknown launch plan",
            Code::NotFound,
            "launch plan marketplace/development/pipeline.none@v1 does not exist",
            case!(
                update_launch_plan,
                client,
                admin::LaunchPlanUpdateRequest {
                    id: Some(with(lp.clone(), |i| i.name = "pipeline.none".into())),
                    state: 1
                }
            ),
        ),
        (
            "launch plan bad state",
            Code::InvalidArgument,
            "UpdateLaunchPlan: unknown state 7",
            case!(update_launch_plan, client, admin::LaunchPlanUpdateRequest { id: Some(lp.clone()), state: 7 }),
        ),
        (
            "get unknown task",
            Code::NotFound,
            "task marketplace/development/pipeline.t0@v1 does not exist",
            case!(get_task, client, get(with(t1.clone(), |i| i.name = "pipeline.t0".into()))),
        ),
        (
            "get unknown workflow version",
            Code::NotFound,
            "workflow marketplace/development/pipeline.wf@v9 does not exist",
            case!(get_workflow, client, get(with(wf.clone(), |i| i.version = "v9".into()))),
        ),
        (
            "get launch plan with task id",
            Code::InvalidArgument,
            "GetLaunchPlan: id.resource_type is TASK, expected LAUNCH_PLAN",
            case!(get_launch_plan, client, get(t1.clone())),
        ),
        (
            "no active version",
            Code::NotFound,
            "launch plan marketplace/development/pipeline.wf has no active version",
            case!(
                get_active_launch_plan,
                client,
                admin::ActiveLaunchPlanRequest {
                    id: Some(NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        name: "pipeline.wf".into(),
                        org: String::new()
                    })
                }
            ),
        ),
        (
            "list without project",
            Code::InvalidArgument,
            "list tasks: id.project is empty",
            case!(
                list_tasks,
                client,
                ResourceListRequest {
                    id: Some(NamedEntityIdentifier { domain: DOMAIN.into(), ..Default::default() }),
                    ..Default::default()
                }
            ),
        ),
        (
            "list with bad filter",
            Code::InvalidArgument,
            "invalid filter `eq(version)`: expected func(field,value)",
            case!(
                list_tasks,
                client,
                ResourceListRequest {
                    id: Some(NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        ..Default::default()
                    }),
                    filters: "eq(version)".into(),
                    ..Default::default()
                }
            ),
        ),
        (
            "list filtering unknown field",
            Code::InvalidArgument,
            "cannot filter on `spec`",
            case!(
                list_workflows,
                client,
                ResourceListRequest {
                    id: Some(NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        ..Default::default()
                    }),
                    filters: "eq(spec,x)".into(),
                    ..Default::default()
                }
            ),
        ),
        (
            "list with bad token",
            Code::InvalidArgument,
            "invalid pagination token `abc`",
            case!(
                list_launch_plans,
                client,
                ResourceListRequest {
                    id: Some(NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        ..Default::default()
                    }),
                    token: "abc".into(),
                    ..Default::default()
                }
            ),
        ),
        (
            "list sorted by unknown key",
            Code::InvalidArgument,
            "cannot sort by `size`",
            case!(
                list_tasks,
                client,
                ResourceListRequest {
                    id: Some(NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        ..Default::default()
                    }),
                    sort_by: Some(admin::Sort { key: "size".into(), direction: 0 }),
                    ..Default::default()
                }
            ),
        ),
        (
            "register existing project",
            Code::AlreadyExists,
            "project `marketplace` already exists",
            case!(
                register_project,
                client,
                admin::ProjectRegisterRequest {
                    project: Some(admin::Project { id: PROJECT.into(), name: "x".into(), ..Default::default() })
                }
            ),
        ),
        (
            "register project with bad id",
            Code::InvalidArgument,
            "RegisterProject: project.id `a/b` may only contain letters, digits, - and _",
            case!(
                register_project,
                client,
                admin::ProjectRegisterRequest {
                    project: Some(admin::Project { id: "a/b".into(), name: "x".into(), ..Default::default() })
                }
            ),
        ),
        (
            "update unknown project",
            Code::NotFound,
            "project `ghost` does not exist",
            case!(
                update_project,
                client,
                admin::Project { id: "ghost".into(), name: "x".into(), ..Default::default() }
            ),
        ),
        (
            "get unknown project",
            Code::NotFound,
            "project `ghost` does not exist",
            case!(get_project, client, admin::ProjectGetRequest { id: "ghost".into(), org: String::new() }),
        ),
        (
            "upload without md5 or root",
            Code::InvalidArgument,
            "CreateUploadLocation: content_md5 or filename_root is required",
            case!(create_upload_location, dataproxy, upload(|r| r.content_md5.clear())),
        ),
        (
            "upload with short md5",
            Code::InvalidArgument,
            "CreateUploadLocation: content_md5 must be 16 bytes, got 3",
            case!(create_upload_location, dataproxy, upload(|r| r.content_md5 = vec![1, 2, 3])),
        ),
        (
            "upload escaping its folder",
            Code::InvalidArgument,
            "CreateUploadLocation: filename `../x` must be a single path segment",
            case!(create_upload_location, dataproxy, upload(|r| r.filename = "../x".into())),
        ),
        (
            "upload without project",
            Code::InvalidArgument,
            "CreateUploadLocation: project is required",
            case!(create_upload_location, dataproxy, upload(|r| r.project.clear())),
        ),
    ]
}

async fn run_corpus(b: Backend) {
    let mut env = start(b, |_| {}).await;
    register_basics(&mut env, "v1").await;
    let before = snapshot(&mut env).await;
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus must stay at least 30 cases");
    let mut failures = Vec::new();
    for (name, code, message, call) in cases {
        let (e, status) = call(env).await;
        env = e;
        if status.code() != code || !status.message().contains(message) {
            failures.push(format!(
                "{name}: expected {code:?} containing {message:?}, got {:?} {:?}",
                status.code(),
                status.message()
            ));
        }
        // no handler may answer UNKNOWN or UNAUTHENTICATED: flytekit would start a login flow
        assert!(!matches!(status.code(), Code::Unknown | Code::Unauthenticated), "{name}");
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(before, snapshot(&mut env).await, "a rejected request changed stored state");
}

#[tokio::test]
async fn corpus_sqlite() {
    run_corpus(Backend::Sqlite).await
}

#[tokio::test]
async fn corpus_postgres() {
    run_corpus(Backend::Postgres).await
}
