//! The commands that talk to a running Aloft: gather views through `remote`, print them with
//! `render` (or as JSON), and turn outcomes into exit codes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use aloft_proto::flyteidl::{admin, core};
use serde::Serialize;

use super::remote::{self, Admin, exec_id};
use super::view::{self, DeliveryView, ExecutionView, LineageView, ProjectView, is_terminal};
use super::{
    Command, DataArgs, ExecutionsCommand, LineageCommand, ListArgs, LogsArgs, Output, ProjectCreateArgs,
    ProjectsCommand, Remote, Scope, render,
};
use crate::Error;

/// Runs one of the remote commands.
pub async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Projects(ProjectsCommand::Create(args)) => projects_create(args).await,
        Command::Projects(ProjectsCommand::List { remote }) => projects_list(&remote).await,
        Command::Executions(ExecutionsCommand::List(args)) => executions_list(args).await,
        Command::Executions(ExecutionsCommand::Show(args)) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            show(&args.remote, &id).await
        }
        Command::Executions(ExecutionsCommand::Watch(args)) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            if !(args.interval.is_finite() && args.interval > 0.0) {
                return Err(Error::Usage(format!(
                    "--interval {}: must be a positive number of seconds",
                    args.interval
                )));
            }
            watch(&args.remote, &id, Duration::from_secs_f64(args.interval)).await
        }
        Command::Executions(ExecutionsCommand::Terminate(args)) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            let admin = Admin::new(&args.remote.endpoint)?;
            let before = ExecutionView::from_proto(&admin.execution(&id).await?);
            if is_terminal(&before.phase) {
                return Err(Error::Remote(format!(
                    "execution {} already ended {}; nothing to terminate",
                    before.full_name(),
                    before.phase
                )));
            }
            admin.terminate(&id, &args.reason).await?;
            emit(&args.remote, &serde_json::json!({"terminated": before.full_name()}), || {
                format!("asked {} to stop (it ends ABORTED once its running tasks are killed)\n", before.full_name())
            })
        }
        Command::Executions(ExecutionsCommand::Relaunch(args)) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            let admin = Admin::new(&args.remote.endpoint)?;
            let new = admin.relaunch(&id).await?;
            let full = format!("{}/{}/{}", new.project, new.domain, new.name);
            emit(&args.remote, &serde_json::json!({"relaunched": full, "name": new.name}), || {
                format!(
                    "relaunched as {full}\nfollow it with: aloft executions watch {} -p {} -d {}\n",
                    new.name, new.project, new.domain
                )
            })
        }
        Command::Logs(args) => logs(args).await,
        Command::Inputs(args) => data(args, true).await,
        Command::Outputs(args) => data(args, false).await,
        Command::Notifications(args) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            // Asking metadata first turns a typo into "execution ... not found" rather than an
            // empty list from the notifier, which only knows executions it was told about.
            Admin::new(&args.remote.endpoint)?.execution(&id).await?;
            let list: Vec<DeliveryView> =
                remote::deliveries(&args.notifier, &id).await?.iter().map(DeliveryView::from_proto).collect();
            let name = format!("{}/{}/{}", id.project, id.domain, id.name);
            emit(&args.remote, &list, || render::deliveries(&name, &list))
        }
        Command::Lineage(LineageCommand::Run(args)) => {
            let id = parse_execution(&args.execution, &args.scope)?;
            let graph = LineageView::from_proto(&remote::run_lineage(&args.service.lineage, &id).await?);
            emit(&args.remote, &graph, || render::lineage(&graph))
        }
        Command::Lineage(LineageCommand::Model(args)) => {
            let r = remote::model_lineage(&args.service.lineage, &args.project, &args.name, &args.version).await?;
            let mut nodes: Vec<_> = r.model_version.iter().collect();
            nodes.extend(r.runs.iter().chain(&r.datasets).chain(&r.sources));
            let graph = LineageView {
                nodes: nodes.into_iter().map(view::LineageNodeView::from_proto).collect(),
                edges: Vec::new(),
                truncated: false,
            };
            emit(&args.remote, &graph, || render::lineage(&graph))
        }
        Command::Lineage(LineageCommand::Apply(args)) => {
            let yaml = std::fs::read_to_string(&args.file)
                .map_err(|e| Error::Usage(format!("{}: {e}", args.file.display())))?;
            let file_name = args.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let r = remote::apply_declarations(&args.service.lineage, &args.project, &yaml, &file_name, args.dry_run)
                .await?;
            let summary = serde_json::json!({
                "project": args.project, "version": r.version, "changed": r.changed, "digest": r.digest,
                "nodes": r.nodes, "edges": r.edges, "dry_run": args.dry_run,
            });
            emit(&args.remote, &summary, || {
                if args.dry_run {
                    format!("{file_name} is valid: {} nodes, {} edges\n", r.nodes, r.edges)
                } else if r.changed {
                    format!(
                        "applied {file_name} to {} as version {} ({} nodes, {} edges)\n",
                        args.project, r.version, r.nodes, r.edges
                    )
                } else {
                    format!("{file_name} is unchanged: {} stays at version {}\n", args.project, r.version)
                }
            })
        }
        Command::Up(_) | Command::Init(_) | Command::Version => {
            unreachable!("handled by cli::main before reaching the remote commands")
        }
    }
}

/// Prints `value` as JSON or `text()` for people.
fn emit<T: Serialize>(remote: &Remote, value: &T, text: impl FnOnce() -> String) -> Result<(), Error> {
    let out = match remote.output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| Error::Remote(e.to_string()))? + "\n",
        Output::Text => text(),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`aloft ... | head`) is not an error worth a message.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// `name` in the scope's project and domain, or `project/domain/name` as given.
pub fn parse_execution(text: &str, scope: &Scope) -> Result<core::WorkflowExecutionIdentifier, Error> {
    let parts: Vec<&str> = text.split('/').collect();
    let id = match parts.as_slice() {
        [name] => exec_id(&scope.project, &scope.domain, name),
        [project, domain, name] => exec_id(project, domain, name),
        _ => return Err(Error::Usage(format!("execution `{text}`: expected a name or project/domain/name"))),
    };
    if id.project.is_empty() || id.domain.is_empty() || id.name.is_empty() {
        return Err(Error::Usage(format!("execution `{text}`: project, domain and name must not be empty")));
    }
    Ok(id)
}

/// `key=value` labels.
fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, Error> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Usage(format!("--label {item}: expected key=value"))),
        })
        .collect()
}

/// The project message `projects create` registers. Slack channels are stored without `#`
/// because label values cannot hold it (the notifier adds it back).
pub fn project_message(args: &ProjectCreateArgs) -> Result<admin::Project, Error> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid(&args.id) {
        return Err(Error::Usage(format!("project id `{}`: use lower case letters, digits and `-` only", args.id)));
    }
    let mut labels = parse_labels(&args.labels)?;
    if let Some(team) = &args.team {
        labels.insert("team".into(), team.clone());
    }
    if let Some(channel) = &args.slack_channel {
        labels.insert("slack-channel".into(), channel.trim_start_matches('#').to_string());
    }
    Ok(admin::Project {
        id: args.id.clone(),
        name: args.name.clone().unwrap_or_else(|| args.id.clone()),
        description: args.description.clone(),
        labels: (!labels.is_empty()).then(|| admin::Labels { values: labels.into_iter().collect() }),
        ..Default::default()
    })
}

async fn projects_create(args: ProjectCreateArgs) -> Result<(), Error> {
    let project = project_message(&args)?;
    let admin = Admin::new(&args.remote.endpoint)?;
    admin.register_project(project.clone()).await?;
    let created = ProjectView::from_proto(&admin.project(&project.id).await?);
    emit(&args.remote, &created, || {
        let mut out = format!("created project {}\n", created.id);
        if created.team.is_empty() {
            out.push_str("no owner team: pass --team so notifications say who owns its runs\n");
        }
        out.push_str(&format!("register into it with: pyflyte register -p {} -d development <package>\n", created.id));
        out
    })
}

async fn projects_list(remote: &Remote) -> Result<(), Error> {
    let admin = Admin::new(&remote.endpoint)?;
    let list: Vec<ProjectView> = admin.projects().await?.iter().map(ProjectView::from_proto).collect();
    emit(remote, &list, || render::projects(&list))
}

/// The admin filter for `executions list` flags. Phases are stored as their enum number.
pub fn execution_filters(phase: Option<&str>, launch_plan: Option<&str>) -> Result<String, Error> {
    let mut filters = Vec::new();
    if let Some(p) = phase {
        let name = p.trim().to_ascii_uppercase().replace('-', "_");
        let value = core::workflow_execution::Phase::from_str_name(&name).ok_or_else(|| {
            Error::Usage(format!(
                "--phase {p}: not a phase (queued, running, succeeding, succeeded, failing, failed, aborted, timed-out, aborting)"
            ))
        })?;
        filters.push(format!("eq(phase,{})", value as i32));
    }
    if let Some(lp) = launch_plan {
        filters.push(format!("eq(launch_plan,{lp})"));
    }
    Ok(filters.join("+"))
}

async fn executions_list(args: ListArgs) -> Result<(), Error> {
    let filters = execution_filters(args.phase.as_deref(), args.launch_plan.as_deref())?;
    let admin = Admin::new(&args.remote.endpoint)?;
    let projects = match &args.project {
        Some(p) => vec![p.clone()],
        None => admin.projects().await?.into_iter().map(|p| p.id).collect(),
    };
    let domains = match &args.domain {
        Some(d) => vec![d.clone()],
        None => admin.domains().await?,
    };
    let mut all = Vec::new();
    for p in &projects {
        for d in &domains {
            match admin.executions(p, d, &filters, args.limit).await {
                Ok(list) => all.extend(list.iter().map(ExecutionView::from_proto)),
                // A project named with -p that does not exist is worth saying so.
                Err(e @ Error::NotFound(_)) if args.project.is_some() => return Err(e),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(p) = &args.project
        && all.is_empty()
    {
        // The list call does not check the project; make a typo visible.
        admin.project(p).await?;
    }
    all.sort_by(|a, b| b.created_at.partial_cmp(&a.created_at).unwrap_or(std::cmp::Ordering::Equal));
    all.truncate(args.limit as usize);
    emit(&args.remote, &all, || render::executions(&all))
}

/// The console page of an execution on the admin endpoint (what pyflyte prints).
pub fn console_url(endpoint: &str, id: &core::WorkflowExecutionIdentifier) -> String {
    let base = remote::endpoint_uri(endpoint).unwrap_or_else(|_| endpoint.to_string());
    format!("{base}/console/projects/{}/domains/{}/executions/{}", id.project, id.domain, id.name)
}

async fn show(remote: &Remote, id: &core::WorkflowExecutionIdentifier) -> Result<(), Error> {
    let admin = Admin::new(&remote.endpoint)?;
    let detail = admin.detail(id).await?;
    emit(remote, &detail, || render::execution_detail(&detail, &console_url(&remote.endpoint, id)))
}

async fn watch(remote: &Remote, id: &core::WorkflowExecutionIdentifier, interval: Duration) -> Result<(), Error> {
    let admin = Admin::new(&remote.endpoint)?;
    let mut last: Option<view::ExecutionDetail> = None;
    let text = remote.output == Output::Text;
    if text {
        println!("watching {}/{}/{} (Ctrl-C stops watching, not the execution)", id.project, id.domain, id.name);
    }
    let detail = loop {
        let detail = admin.detail(id).await?;
        if text {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            let mut stdout = std::io::stdout().lock();
            for line in render::changes(last.as_ref(), &detail, now) {
                let _ = writeln!(stdout, "{line}");
            }
            let _ = stdout.flush();
        }
        if is_terminal(&detail.execution.phase) {
            break detail;
        }
        last = Some(detail);
        tokio::time::sleep(interval).await;
    };
    if text {
        println!();
    }
    emit(remote, &detail, || render::execution_detail(&detail, &console_url(&remote.endpoint, id)))?;
    match detail.execution.phase.as_str() {
        "SUCCEEDED" => Ok(()),
        phase => Err(Error::Ended { name: detail.execution.full_name(), phase: phase.to_string() }),
    }
}

async fn logs(args: LogsArgs) -> Result<(), Error> {
    let id = parse_execution(&args.execution, &args.scope)?;
    let admin = Admin::new(&args.remote.endpoint)?;
    // GetNodeExecution first, so an unknown node is reported as such rather than "no attempts".
    admin.node(&id, &args.node).await?;
    let attempts = admin.attempts(&id, &args.node).await?;
    let name = format!("{}/{}/{}", id.project, id.domain, id.name);
    let attempt = match args.attempt {
        Some(n) => attempts.iter().find(|t| t.id.as_ref().map(|i| i.retry_attempt) == Some(n)).ok_or_else(|| {
            Error::NotFound(format!(
                "attempt {n} of node {} of execution {name} not found ({} attempts)",
                args.node,
                attempts.len()
            ))
        })?,
        None => attempts.last().ok_or_else(|| {
            Error::NotFound(format!(
                "node {} of execution {name} has no task attempts (it is not a task node, or has not started)",
                args.node
            ))
        })?,
    };
    let a = view::AttemptView::from_proto(attempt);
    let uri = a.log_uri.clone().ok_or_else(|| {
        Error::NotFound(format!("attempt {} of node {} of execution {name} has no log yet", a.attempt, args.node))
    })?;
    let bytes = admin.download(&uri).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "the log of attempt {} of node {} of execution {name} is not written yet (it is uploaded when the attempt ends)",
            a.attempt, args.node
        )),
        other => other,
    })?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    emit(
        &args.remote,
        &serde_json::json!({"execution": name, "node": args.node, "attempt": a.attempt, "uri": uri, "log": text}),
        || text.clone(),
    )
}

async fn data(args: DataArgs, inputs: bool) -> Result<(), Error> {
    let id = parse_execution(&args.execution, &args.scope)?;
    let admin = Admin::new(&args.remote.endpoint)?;
    let (ins, outs) = match &args.node {
        Some(node) => admin.node_data(&id, node).await?,
        None => admin.execution_data(&id).await?,
    };
    let values = view::values(if inputs { ins.as_ref() } else { outs.as_ref() });
    let what = if inputs { "inputs" } else { "outputs (yet)" };
    emit(&args.remote, &values, || render::values(what, &values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope { project: "flytesnacks".into(), domain: "development".into() }
    }

    #[test]
    fn executions_by_name_or_full_path() {
        let id = parse_execution("abc", &scope()).unwrap();
        assert_eq!((id.project.as_str(), id.domain.as_str(), id.name.as_str()), ("flytesnacks", "development", "abc"));
        let id = parse_execution("ml/production/xyz", &scope()).unwrap();
        assert_eq!((id.project.as_str(), id.domain.as_str(), id.name.as_str()), ("ml", "production", "xyz"));
        let e = parse_execution("a/b", &scope()).unwrap_err();
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("execution `a/b`: expected a name or project/domain/name", 2)
        );
    }

    #[test]
    fn phase_and_launch_plan_filters() {
        assert_eq!(execution_filters(Some("failed"), None).unwrap(), "eq(phase,6)");
        assert_eq!(execution_filters(Some("timed-out"), Some("wf.lp")).unwrap(), "eq(phase,8)+eq(launch_plan,wf.lp)");
        assert_eq!(execution_filters(None, None).unwrap(), "");
        assert_eq!(execution_filters(Some("done"), None).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn project_labels_carry_team_and_channel_without_hash() {
        let args = ProjectCreateArgs {
            id: "churn".into(),
            name: None,
            description: String::new(),
            team: Some("ml-platform".into()),
            slack_channel: Some("#ml-alerts".into()),
            labels: vec!["notify-production=all".into()],
            remote: Remote { endpoint: String::new(), output: Output::Text },
        };
        let p = project_message(&args).unwrap();
        let labels = p.labels.unwrap().values;
        assert_eq!(labels["team"], "ml-platform");
        assert_eq!(labels["slack-channel"], "ml-alerts");
        assert_eq!(labels["notify-production"], "all");
        assert_eq!(p.name, "churn");
        let bad = ProjectCreateArgs { id: "Churn Model".into(), ..args };
        assert_eq!(project_message(&bad).unwrap_err().exit_code(), 2);
    }
}
