//! Text for people: tables, the node tree, values, and the lines `executions watch` prints.
//!
//! Pure functions from views to strings, tested against golden files in `tests/golden/`.

use super::view::{
    DeliveryView, ExecutionDetail, ExecutionView, LineageView, NodeView, ProjectView, Value, is_terminal,
};

/// Shown for a value that is not there (not started, no cache for this kind of node).
const NONE: &str = "-";

/// Unix seconds as `2026-05-09 07:35:25` UTC.
pub fn timestamp(secs: f64) -> String {
    chrono::DateTime::from_timestamp(secs.floor() as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{secs}"))
}

/// Seconds as `0.4s`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return NONE.into();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = secs.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| NONE.into())
}

fn or_none(s: &str) -> String {
    if s.is_empty() { NONE.into() } else { s.to_string() }
}

/// Left-aligned columns separated by two spaces; no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `projects list`.
pub fn projects(list: &[ProjectView]) -> String {
    if list.is_empty() {
        return "no projects yet: create one with `aloft projects create <id> --team <team>`\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![p.id.clone(), p.name.clone(), or_none(&p.team), or_none(&p.slack_channel), or_none(&p.description)]
        })
        .collect();
    table(&["PROJECT", "NAME", "TEAM", "SLACK CHANNEL", "DESCRIPTION"], &rows)
}

/// `executions list`, newest first as given.
pub fn executions(list: &[ExecutionView]) -> String {
    if list.is_empty() {
        return "no executions match\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                format!("{}/{}", e.project, e.domain),
                e.launch_plan.clone(),
                e.phase.clone(),
                opt(e.started_at.or(e.created_at), timestamp),
                opt(e.duration_secs, duration),
                e.mode.clone(),
            ]
        })
        .collect();
    table(&["EXECUTION", "PROJECT/DOMAIN", "LAUNCH PLAN", "PHASE", "STARTED (UTC)", "DURATION", "MODE"], &rows)
}

/// Top-level nodes (`prefix` None) get no branch glyphs; children are drawn under their parent.
fn node_rows(nodes: &[&NodeView], prefix: Option<&str>, rows: &mut Vec<Vec<String>>) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (name, child_prefix) = match prefix {
            None => (n.id.clone(), String::new()),
            Some(p) => {
                let (glyph, indent) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
                (format!("{p}{glyph}{}", n.id), format!("{p}{indent}"))
            }
        };
        let attempts = if n.attempts.is_empty() { String::new() } else { n.attempts.len().to_string() };
        rows.push(vec![
            name,
            or_none(&n.task),
            n.phase.clone(),
            opt(n.duration_secs, duration),
            or_none(&n.cache),
            or_none(&attempts),
        ]);
        let children: Vec<&NodeView> = n.children.iter().collect();
        node_rows(&children, Some(&child_prefix), rows);
    }
}

/// The node tree as table rows, children under their parent with branch glyphs.
pub fn node_table(nodes: &[NodeView]) -> String {
    let top: Vec<&NodeView> = nodes.iter().filter(|n| !n.is_bookkeeping()).collect();
    let mut rows = Vec::new();
    node_rows(&top, None, &mut rows);
    table(&["NODE", "TASK", "PHASE", "DURATION", "CACHE", "ATTEMPTS"], &rows)
}

/// `executions show`: the execution, then its node tree, then failures in full.
pub fn execution_detail(d: &ExecutionDetail, console: &str) -> String {
    let e = &d.execution;
    let mut out = format!("{}  {}", e.full_name(), e.phase);
    if let Some(s) = e.duration_secs {
        out.push_str(&format!("  {}", duration(s)));
    }
    out.push('\n');
    let mut facts = vec![
        ("launch plan", format!("{} (version {})", e.launch_plan, or_none(&e.version))),
        ("started", opt(e.started_at, |s| timestamp(s) + " UTC")),
        ("mode", e.mode.clone()),
    ];
    if let Some(r) = &e.reference {
        facts.push(("re-runs", r.clone()));
    }
    if !console.is_empty() {
        facts.push(("console", console.to_string()));
    }
    for (k, v) in facts {
        out.push_str(&format!("  {k:<12} {v}\n"));
    }
    out.push('\n');
    if d.nodes.iter().all(NodeView::is_bookkeeping) {
        out.push_str("no nodes have started yet\n");
    } else {
        out.push_str(&node_table(&d.nodes));
    }
    let failures: Vec<&NodeView> =
        d.nodes.iter().flat_map(NodeView::walk).filter(|n| n.error.is_some() && n.children.is_empty()).collect();
    if let Some(err) = &e.error {
        out.push_str(&format!("\nerror: {}\n", indent_rest(err)));
    }
    for n in failures {
        if e.error.as_deref() != n.error.as_deref() {
            out.push_str(&format!("\nnode {} failed: {}\n", n.id, indent_rest(n.error.as_deref().unwrap_or_default())));
        }
    }
    out
}

fn indent_rest(text: &str) -> String {
    text.trim_end().replace('\n', "\n  ")
}

/// `inputs` / `outputs`.
pub fn values(what: &str, list: &[Value]) -> String {
    if list.is_empty() {
        return format!("no {what}\n");
    }
    let rows: Vec<Vec<String>> =
        list.iter().map(|v| vec![v.name.clone(), v.kind.clone(), v.value.replace('\n', "\\n")]).collect();
    table(&["NAME", "TYPE", "VALUE"], &rows)
}

/// `notifications`.
pub fn deliveries(execution: &str, list: &[DeliveryView]) -> String {
    if list.is_empty() {
        return format!(
            "no notifications for {execution} (none are sent before it ends, or no Slack rule or project channel matched)\n"
        );
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.phase.clone(),
                d.destination.clone(),
                or_none(&d.target),
                d.state.clone(),
                d.attempts.to_string(),
                or_none(&d.last_error),
            ]
        })
        .collect();
    table(&["PHASE", "DESTINATION", "SENT WITH", "STATE", "ATTEMPTS", "LAST ERROR"], &rows)
}

/// `lineage run` / `lineage model`: the nodes, then every edge as `from --kind--> to`.
pub fn lineage(g: &LineageView) -> String {
    if g.nodes.is_empty() {
        return "no lineage recorded\n".into();
    }
    // Keys repeat the name with a prefix; they are in the edges below and in `--output json`.
    let rows: Vec<Vec<String>> = g.nodes.iter().map(|n| vec![n.kind.clone(), n.label.clone()]).collect();
    let mut out = table(&["KIND", "NAME"], &rows);
    if !g.edges.is_empty() {
        out.push('\n');
        for e in &g.edges {
            out.push_str(&format!("{} --{}--> {}\n", e.from, e.kind, e.to));
        }
    }
    if g.truncated {
        out.push_str("(truncated: the graph is larger than the service's limit)\n");
    }
    out
}

/// What changed between two polls of a watched execution, one line per node or execution phase
/// change, prefixed with the time of the poll.
pub fn changes(before: Option<&ExecutionDetail>, after: &ExecutionDetail, at: f64) -> Vec<String> {
    let clock = chrono::DateTime::from_timestamp(at.floor() as i64, 0)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let old_phase = |id: &str| {
        before.and_then(|b| b.nodes.iter().flat_map(NodeView::walk).find(|n| n.id == id).map(|n| n.phase.clone()))
    };
    let mut lines = Vec::new();
    for n in after.nodes.iter().flat_map(NodeView::walk).filter(|n| !n.is_bookkeeping()) {
        if old_phase(&n.id).as_deref() != Some(n.phase.as_str()) {
            let task = if n.task.is_empty() { String::new() } else { format!(" ({})", n.task) };
            let took = match n.duration_secs {
                Some(s) if is_terminal(&n.phase) => format!(" in {}", duration(s)),
                _ => String::new(),
            };
            lines.push(format!("{clock}  {}{task}  {}{took}", n.id, n.phase));
        }
    }
    let (done, total) = after.progress();
    if before.map(|b| b.execution.phase.as_str()) != Some(after.execution.phase.as_str())
        || before.map(ExecutionDetail::progress) != Some((done, total))
    {
        lines.push(format!(
            "{clock}  execution {}  {}  ({done}/{total} nodes done)",
            after.execution.name, after.execution.phase
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0.42), "0.4s");
        assert_eq!(duration(59.94), "59.9s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(7380.0), "2h03m");
        assert_eq!(duration(-1.0), "-");
        assert_eq!(timestamp(1_700_000_000.7), "2023-11-14 22:13:20");
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), String::new()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
    }
}
