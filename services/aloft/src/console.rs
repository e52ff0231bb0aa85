//! The console: small server-rendered HTML pages behind the links pyflyte prints.
//!
//! `/console/projects/<p>/domains/<d>/executions/<name>` shows an execution (phase, the node
//! tree with phases, durations and cache status, inputs, outputs, the error, links to each
//! attempt's log); `/console` lists projects, and each project's domains list executions. The
//! pages read the admin API like the CLI does (the same views), refresh themselves while an
//! execution runs, and use no JavaScript.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::Error;
use crate::cli::remote::{Admin, exec_id};
use crate::cli::render::{duration, timestamp};
use crate::cli::view::{self, ExecutionDetail, ExecutionView, NodeView, ProjectView, Value, is_terminal};

/// What the handlers share.
#[derive(Clone)]
pub struct Console {
    /// The embedded admin API.
    pub admin: Admin,
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(projects))
        .route("/console/", get(projects))
        .route("/console/projects/{project}", get(project))
        .route("/console/projects/{project}/domains/{domain}", get(executions))
        .route("/console/projects/{project}/domains/{domain}/executions", get(executions))
        .route("/console/projects/{project}/domains/{domain}/executions/{name}", get(execution))
        .route(
            "/console/projects/{project}/domains/{domain}/executions/{name}/nodes/{node}/attempts/{attempt}/log",
            get(log),
        )
        .route("/console/projects/{project}/domains/{domain}/{kind}/{name}/version/{version}", get(entity))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { page_response(StatusCode::NOT_FOUND, "Not found", not_found_body()) })
        .with_state(console)
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes one path segment of a link.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.25em .8em .25em 0;text-align:left;vertical-align:top}\
th{border-bottom:1px solid #ccc;font-weight:600}code,pre,.tree{font-family:ui-monospace,monospace}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;white-space:pre-wrap}a{color:#0b5cad}\
.SUCCEEDED{color:#137333}.FAILED,.TIMED_OUT,.FAILING{color:#c5221f}.RUNNING,.QUEUED,.SUCCEEDING{color:#b06000}\
.ABORTED,.ABORTING,.SKIPPED{color:#666}nav{margin-bottom:1em;color:#666}";

/// A whole page. `refresh` makes the browser reload it every few seconds (a running execution).
pub fn page(title: &str, nav: &str, body: &str, refresh: bool) -> String {
    let meta = if refresh { "<meta http-equiv=\"refresh\" content=\"3\">" } else { "" };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">{meta}<title>{t} · Aloft</title><style>{STYLE}</style></head>\n\
         <body><nav><a href=\"/console\">Aloft</a>{nav}</nav>\n<h1>{t}</h1>\n{body}</body></html>\n",
        t = esc(title)
    )
}

fn page_response(status: StatusCode, title: &str, body: String) -> Response {
    (status, Html(page(title, "", &body, false))).into_response()
}

fn not_found_body() -> String {
    "<p>This console has pages for projects, their executions, and each execution. \
     <a href=\"/console\">All projects</a>.</p>\n"
        .into()
}

fn error_response(e: Error) -> Response {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    };
    page_response(status, "Cannot show this page", format!("<p>{}</p>\n{}", esc(&e.to_string()), not_found_body()))
}

fn phase(p: &str) -> String {
    format!("<span class=\"{}\">{}</span>", esc(p), esc(p))
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn exec_href(e: &ExecutionView) -> String {
    format!("/console/projects/{}/domains/{}/executions/{}", seg(&e.project), seg(&e.domain), seg(&e.name))
}

/// The projects page body.
pub fn projects_body(list: &[ProjectView], domains: &[String]) -> String {
    if list.is_empty() {
        return "<p>No projects yet. Register workflows with <code>pyflyte register</code> or create one with \
                <code>aloft projects create</code>.</p>\n"
            .into();
    }
    let mut out =
        String::from("<table><tr><th>Project</th><th>Team</th><th>Slack channel</th><th>Executions</th></tr>\n");
    for p in list {
        let links: Vec<String> = domains
            .iter()
            .map(|d| {
                format!("<a href=\"/console/projects/{}/domains/{}/executions\">{}</a>", seg(&p.id), seg(d), esc(d))
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td><a href=\"/console/projects/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seg(&p.id),
            esc(&p.id),
            esc(&p.team),
            esc(&p.slack_channel),
            links.join(" · ")
        );
    }
    out.push_str("</table>\n");
    out
}

/// The executions table body.
pub fn executions_body(list: &[ExecutionView]) -> String {
    if list.is_empty() {
        return "<p>No executions here yet. Start one with <code>pyflyte run --remote</code>.</p>\n".into();
    }
    let mut out = String::from(
        "<table><tr><th>Execution</th><th>Launch plan</th><th>Phase</th><th>Started (UTC)</th><th>Duration</th><th>Mode</th></tr>\n",
    );
    for e in list {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            exec_href(e),
            esc(&e.name),
            esc(&e.launch_plan),
            phase(&e.phase),
            opt(e.started_at.or(e.created_at), timestamp),
            opt(e.duration_secs, duration),
            esc(&e.mode)
        );
    }
    out.push_str("</table>\n");
    out
}

fn node_rows(out: &mut String, e: &ExecutionView, nodes: &[&NodeView], depth: usize) {
    for n in nodes {
        let logs: Vec<String> = n
            .attempts
            .iter()
            .filter(|a| a.log_uri.is_some())
            .map(|a| {
                format!(
                    "<a href=\"{}/nodes/{}/attempts/{}/log\">attempt {}</a>",
                    exec_href(e),
                    seg(&n.id),
                    a.attempt,
                    a.attempt
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"tree\" style=\"padding-left:{}em\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            depth * 2,
            esc(&n.id),
            esc(&n.task),
            phase(&n.phase),
            opt(n.duration_secs, duration),
            esc(&n.cache),
            logs.join(" ")
        );
        if let Some(err) = &n.error
            && n.children.is_empty()
        {
            let _ = writeln!(out, "<tr><td></td><td colspan=\"5\"><pre>{}</pre></td></tr>", esc(err));
        }
        let children: Vec<&NodeView> = n.children.iter().collect();
        node_rows(out, e, &children, depth + 1);
    }
}

fn values_table(title: &str, values: &[Value]) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(title));
    if values.is_empty() {
        out.push_str("<p>None.</p>\n");
        return out;
    }
    out.push_str("<table><tr><th>Name</th><th>Type</th><th>Value</th></tr>\n");
    for v in values {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&v.name),
            esc(&v.kind),
            esc(&v.value)
        );
    }
    out.push_str("</table>\n");
    out
}

/// The execution page body.
pub fn execution_body(d: &ExecutionDetail, inputs: &[Value], outputs: &[Value]) -> String {
    let e = &d.execution;
    let mut out = String::from("<table>\n");
    let mut facts = vec![
        ("Phase", phase(&e.phase)),
        ("Launch plan", format!("{} <small>version {}</small>", esc(&e.launch_plan), esc(&e.version))),
        ("Started (UTC)", opt(e.started_at, timestamp)),
        ("Duration", opt(e.duration_secs, duration)),
        ("Mode", esc(&e.mode)),
    ];
    if let Some(r) = &e.reference {
        let parts: Vec<&str> = r.split('/').collect();
        let link = match parts.as_slice() {
            [p, dom, n] => format!(
                "<a href=\"/console/projects/{}/domains/{}/executions/{}\">{}</a>",
                seg(p),
                seg(dom),
                seg(n),
                esc(r)
            ),
            _ => esc(r),
        };
        facts.push(("Re-runs", link));
    }
    for (k, v) in facts {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    out.push_str("</table>\n");
    if let Some(err) = &e.error {
        let _ = writeln!(out, "<h2>Error</h2>\n<pre>{}</pre>", esc(err));
    }
    out.push_str("<h2>Nodes</h2>\n");
    let top: Vec<&NodeView> = d.nodes.iter().filter(|n| !n.is_bookkeeping()).collect();
    if top.is_empty() {
        out.push_str("<p>No node has started yet.</p>\n");
    } else {
        out.push_str(
            "<table><tr><th>Node</th><th>Task</th><th>Phase</th><th>Duration</th><th>Cache</th><th>Logs</th></tr>\n",
        );
        node_rows(&mut out, e, &top, 0);
        out.push_str("</table>\n");
    }
    out.push_str(&values_table("Inputs", inputs));
    if is_terminal(&e.phase) || !outputs.is_empty() {
        out.push_str(&values_table("Outputs", outputs));
    }
    let _ = writeln!(
        out,
        "<p>From a shell: <code>aloft executions show {n} -p {p} -d {dm}</code> · \
         <code>aloft logs {n} &lt;node&gt; -p {p} -d {dm}</code></p>",
        n = esc(&e.name),
        p = esc(&e.project),
        dm = esc(&e.domain)
    );
    out
}

fn nav(project: &str, domain: Option<&str>) -> String {
    let mut out = format!(" / <a href=\"/console/projects/{}\">{}</a>", seg(project), esc(project));
    if let Some(d) = domain {
        let _ = write!(
            out,
            " / <a href=\"/console/projects/{}/domains/{}/executions\">{}</a>",
            seg(project),
            seg(d),
            esc(d)
        );
    }
    out
}

async fn projects(State(c): State<Console>) -> Response {
    let result = async {
        let list: Vec<ProjectView> = c.admin.projects().await?.iter().map(ProjectView::from_proto).collect();
        let domains = c.admin.domains().await?;
        Ok::<_, Error>(page("Projects", "", &projects_body(&list, &domains), false))
    }
    .await;
    result.map(|h| Html(h).into_response()).unwrap_or_else(error_response)
}

async fn project(State(c): State<Console>, Path(p): Path<String>) -> Response {
    let result = async {
        let proj = ProjectView::from_proto(&c.admin.project(&p).await?);
        let domains = c.admin.domains().await?;
        let body = projects_body(std::slice::from_ref(&proj), &domains);
        Ok::<_, Error>(page(&format!("Project {p}"), &nav(&p, None), &body, false))
    }
    .await;
    result.map(|h| Html(h).into_response()).unwrap_or_else(error_response)
}

async fn executions(State(c): State<Console>, Path((p, d)): Path<(String, String)>) -> Response {
    let result = async {
        c.admin.project(&p).await?;
        let list: Vec<ExecutionView> =
            c.admin.executions(&p, &d, "", 100).await?.iter().map(ExecutionView::from_proto).collect();
        let running = list.iter().any(|e| !is_terminal(&e.phase));
        Ok::<_, Error>(page(&format!("Executions in {p}/{d}"), &nav(&p, Some(&d)), &executions_body(&list), running))
    }
    .await;
    result.map(|h| Html(h).into_response()).unwrap_or_else(error_response)
}

async fn execution(State(c): State<Console>, Path((p, d, name)): Path<(String, String, String)>) -> Response {
    let result = async {
        let id = exec_id(&p, &d, &name);
        let detail = c.admin.detail(&id).await?;
        let (ins, outs) = c.admin.execution_data(&id).await?;
        let body = execution_body(&detail, &view::values(ins.as_ref()), &view::values(outs.as_ref()));
        let running = !is_terminal(&detail.execution.phase);
        Ok::<_, Error>(page(&format!("Execution {name}"), &nav(&p, Some(&d)), &body, running))
    }
    .await;
    result.map(|h| Html(h).into_response()).unwrap_or_else(error_response)
}

async fn log(
    State(c): State<Console>,
    Path((p, d, name, node, attempt)): Path<(String, String, String, String, u32)>,
) -> Response {
    let result = async {
        let id = exec_id(&p, &d, &name);
        let attempts = c.admin.attempts(&id, &node).await?;
        let a =
            attempts.iter().map(view::AttemptView::from_proto).find(|a| a.attempt == attempt).ok_or_else(|| {
                Error::NotFound(format!("attempt {attempt} of node {node} of {p}/{d}/{name} not found"))
            })?;
        let uri = a.log_uri.ok_or_else(|| Error::NotFound(format!("attempt {attempt} of node {node} has no log")))?;
        c.admin.download(&uri).await
    }
    .await;
    match result {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(e) => error_response(e),
    }
}

/// The pages pyflyte links to after `register -v`: what was registered, and its runs.
async fn entity(
    State(c): State<Console>,
    Path((p, d, kind, name, version)): Path<(String, String, String, String, String)>,
) -> Response {
    let result = async {
        let filter = format!("eq(launch_plan,{name})");
        let list: Vec<ExecutionView> =
            c.admin.executions(&p, &d, &filter, 50).await?.iter().map(ExecutionView::from_proto).collect();
        let kind_text = kind.replace('_', " ");
        let body = format!(
            "<p>{} <code>{}</code> version <code>{}</code> is registered in {}/{}. Runs of the launch plan of the same name:</p>\n{}",
            esc(&kind_text),
            esc(&name),
            esc(&version),
            esc(&p),
            esc(&d),
            executions_body(&list)
        );
        Ok::<_, Error>(page(&name, &nav(&p, Some(&d)), &body, false))
    }
    .await;
    result.map(|h| Html(h).into_response()).unwrap_or_else(error_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_links_are_encoded() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(seg("n1-0/x y"), "n1-0%2Fx%20y");
    }

    #[test]
    fn running_pages_refresh_and_finished_ones_do_not() {
        assert!(page("t", "", "", true).contains("http-equiv=\"refresh\""));
        assert!(!page("t", "", "", false).contains("refresh"));
        assert!(page("<x>", "", "", false).contains("<title>&lt;x&gt; · Aloft</title>"));
    }
}
