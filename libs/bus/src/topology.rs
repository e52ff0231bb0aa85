//! The bus topology as code: stream names, subjects, and which subject an envelope goes to.
//!
//! Everything here is pure so it can be tested without a server; [`crate::Bus::ensure`] turns
//! [`Topology::stream_specs`] into streams.
//!
//! Subjects, with `<p>` the configured `subject_prefix` (default `aloft`):
//!
//! | stream (`<P>` = `stream_prefix`) | retention  | subjects                                   |
//! |----------------------------------|------------|--------------------------------------------|
//! | `<P>_COMMANDS`                   | work queue | `<p>.cmd.execute`, `<p>.cmd.abort`, `<p>.cmd.wake` |
//! | `<P>_TASKS`                      | work queue | `<p>.task.run.<queue>`                     |
//! | `<P>_EVENTS`                     | limits     | `<p>.evt.<kind>.<project>.<domain>`       |
//!
//! with `<kind>` one of `workflow`, `node`, `task`, `sla`.

use std::time::Duration;

use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;

use crate::config::BusConfig;
use crate::error::{Error, Result};

/// The three streams of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Execute and abort commands: work queue, one consumer acts on each message.
    Commands,
    /// Task runs for the executor pools: work queue.
    Tasks,
    /// Workflow, node and task execution events: kept for `event_max_age`, any number of consumers.
    Events,
}

impl StreamKind {
    /// All streams, in the order `ensure` creates them.
    pub const ALL: [StreamKind; 3] = [StreamKind::Commands, StreamKind::Tasks, StreamKind::Events];

    /// Suffix of the stream name.
    pub fn suffix(self) -> &'static str {
        match self {
            StreamKind::Commands => "COMMANDS",
            StreamKind::Tasks => "TASKS",
            StreamKind::Events => "EVENTS",
        }
    }

    /// Whether a message is removed once acknowledged (commands, tasks) rather than kept for
    /// every consumer (events).
    pub fn is_work_queue(self) -> bool {
        !matches!(self, StreamKind::Events)
    }
}

/// The kind of an execution event, the third subject token of an event subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `flyteidl.event.WorkflowExecutionEvent`.
    Workflow,
    /// `flyteidl.event.NodeExecutionEvent`.
    Node,
    /// `flyteidl.event.TaskExecutionEvent`.
    Task,
    /// `aloft.v1.SlaBreach`: a running execution broke its SLA.
    Sla,
}

impl EventKind {
    /// The subject token.
    pub fn token(self) -> &'static str {
        match self {
            EventKind::Workflow => "workflow",
            EventKind::Node => "node",
            EventKind::Task => "task",
            EventKind::Sla => "sla",
        }
    }
}

/// Retention of a stream, independent of the client library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Removed once acknowledged by the one consumer whose filter matches.
    WorkQueue,
    /// Kept until `max_age`, whatever the consumers do.
    Limits,
}

/// What one stream must look like; `ensure` creates or updates it to this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Which stream.
    pub kind: StreamKind,
    /// Full stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Retention policy.
    pub retention: Retention,
    /// Message age limit; zero means unlimited.
    pub max_age: Duration,
    /// Deduplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Replicas.
    pub replicas: usize,
    /// Human description, shown by `nats stream info`.
    pub description: String,
}

/// Names and subjects derived from a [`BusConfig`]; no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    stream_prefix: String,
    subject_prefix: String,
    event_max_age: Duration,
    duplicate_window: Duration,
    replicas: usize,
}

impl Topology {
    /// Derives the topology from a (validated) config.
    pub fn new(config: &BusConfig) -> Topology {
        Topology {
            stream_prefix: config.stream_prefix.clone(),
            subject_prefix: config.subject_prefix.clone(),
            event_max_age: config.event_max_age,
            duplicate_window: config.duplicate_window,
            replicas: config.replicas,
        }
    }

    /// Name of a stream: `<stream_prefix>_<KIND>`.
    pub fn stream_name(&self, kind: StreamKind) -> String {
        format!("{}_{}", self.stream_prefix, kind.suffix())
    }

    /// The prefix of every stream (and, after `KV_`, every KV bucket's stream) of this deployment.
    pub fn stream_prefix(&self) -> &str {
        &self.stream_prefix
    }

    /// Name of the stream behind a key-value bucket is `KV_<bucket>`; the bucket itself is
    /// `<stream_prefix>_<name>` so buckets are namespaced like streams.
    pub fn kv_bucket_name(&self, name: &str) -> Result<String> {
        if !is_valid_name(name) {
            return Err(Error::Config(format!(
                "kv bucket name {name:?} must be non-empty letters, digits, '_' or '-'"
            )));
        }
        Ok(format!("{}_{}", self.stream_prefix, name))
    }

    /// `<p>.cmd.execute`.
    pub fn execute_subject(&self) -> String {
        format!("{}.cmd.execute", self.subject_prefix)
    }

    /// `<p>.cmd.abort`.
    pub fn abort_subject(&self) -> String {
        format!("{}.cmd.abort", self.subject_prefix)
    }

    /// `<p>.cmd.wake`: signals and timers for the scheduler.
    pub fn wake_subject(&self) -> String {
        format!("{}.cmd.wake", self.subject_prefix)
    }

    /// `<p>.task.run.<queue>`, the queue encoded as one token.
    pub fn task_run_subject(&self, queue: &str) -> Result<String> {
        let queue = subject_token(queue).ok_or_else(|| Error::Config("task queue name is empty".into()))?;
        Ok(format!("{}.task.run.{queue}", self.subject_prefix))
    }

    /// `<p>.evt.<kind>.<project>.<domain>`, project and domain encoded as one token each.
    pub fn event_subject(&self, kind: EventKind, project: &str, domain: &str) -> Result<String> {
        let project = subject_token(project).ok_or_else(|| Error::Config("event project is empty".into()))?;
        let domain = subject_token(domain).ok_or_else(|| Error::Config("event domain is empty".into()))?;
        Ok(format!("{}.evt.{}.{project}.{domain}", self.subject_prefix, kind.token()))
    }

    /// A consumer filter over events: `None` for any kind, project or domain (a `*` wildcard).
    pub fn events_filter(&self, kind: Option<EventKind>, project: Option<&str>, domain: Option<&str>) -> String {
        let token = |v: Option<&str>| v.and_then(subject_token).unwrap_or_else(|| "*".into());
        format!(
            "{}.evt.{}.{}.{}",
            self.subject_prefix,
            kind.map(EventKind::token).unwrap_or("*"),
            token(project),
            token(domain)
        )
    }

    /// The subjects a stream captures.
    pub fn stream_subjects(&self, kind: StreamKind) -> Vec<String> {
        match kind {
            StreamKind::Commands => vec![self.execute_subject(), self.abort_subject(), self.wake_subject()],
            StreamKind::Tasks => vec![format!("{}.task.run.>", self.subject_prefix)],
            StreamKind::Events => vec![format!("{}.evt.>", self.subject_prefix)],
        }
    }

    /// The desired shape of every stream.
    pub fn stream_specs(&self) -> Vec<StreamSpec> {
        StreamKind::ALL.iter().map(|&kind| self.stream_spec(kind)).collect()
    }

    /// The desired shape of one stream.
    pub fn stream_spec(&self, kind: StreamKind) -> StreamSpec {
        let (retention, max_age, description) = match kind {
            // Commands must never expire unseen: they leave the stream only when acted on (or
            // when max_deliver gives up on them, which leaves them in place for inspection).
            StreamKind::Commands => (Retention::WorkQueue, Duration::ZERO, "aloft execute/abort commands"),
            StreamKind::Tasks => (Retention::WorkQueue, Duration::ZERO, "aloft task runs for executor pools"),
            StreamKind::Events => (Retention::Limits, self.event_max_age, "aloft workflow/node/task execution events"),
        };
        StreamSpec {
            kind,
            name: self.stream_name(kind),
            subjects: self.stream_subjects(kind),
            retention,
            max_age,
            duplicate_window: self.duplicate_window,
            replicas: self.replicas,
            description: description.into(),
        }
    }

    /// The subject an envelope is published on, derived from its body.
    pub fn subject_for(&self, envelope: &Envelope) -> Result<String> {
        let invalid = |reason: &str| Error::InvalidEnvelope { id: envelope.id.clone(), reason: reason.into() };
        let body = envelope.body.as_ref().ok_or_else(|| invalid("it has no body"))?;
        let (kind, exec) = match body {
            Body::Execute(_) => return Ok(self.execute_subject()),
            Body::Abort(_) => return Ok(self.abort_subject()),
            Body::Signal(_) | Body::Wake(_) => return Ok(self.wake_subject()),
            Body::TaskRun(run) => {
                if run.queue.is_empty() {
                    return Err(invalid("task_run.queue is empty"));
                }
                return self.task_run_subject(&run.queue);
            }
            Body::WorkflowEvent(e) => (EventKind::Workflow, e.execution_id.as_ref()),
            Body::NodeEvent(e) => (EventKind::Node, e.id.as_ref().and_then(|n| n.execution_id.as_ref())),
            // The task id's own project/domain is where the task is registered, which may differ
            // from the execution's: route by the execution, like the other events.
            Body::TaskEvent(e) => {
                (EventKind::Task, e.parent_node_execution_id.as_ref().and_then(|n| n.execution_id.as_ref()))
            }
            Body::SlaBreach(b) => (EventKind::Sla, b.execution_id.as_ref()),
        };
        let WorkflowExecutionIdentifier { project, domain, .. } =
            exec.ok_or_else(|| invalid(&format!("{} event has no execution id", kind.token())))?;
        if project.is_empty() {
            return Err(invalid(&format!("{} event execution id has an empty project", kind.token())));
        }
        if domain.is_empty() {
            return Err(invalid(&format!("{} event execution id has an empty domain", kind.token())));
        }
        self.event_subject(kind, project, domain)
    }

    /// The stream a subject of this topology belongs to.
    pub fn stream_of(&self, subject: &str) -> Option<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .find(|&kind| self.stream_subjects(kind).iter().any(|s| subject_is_subset(subject, s)))
    }

    /// Checks that every consumer filter lies inside the stream's subjects.
    pub fn check_filters(&self, kind: StreamKind, filters: &[String]) -> Result<()> {
        let subjects = self.stream_subjects(kind);
        for filter in filters {
            if !subjects.iter().any(|s| subject_is_subset(filter, s)) {
                return Err(Error::FilterOutsideStream {
                    filter: filter.clone(),
                    stream: self.stream_name(kind),
                    subjects: subjects.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// The `Nats-Msg-Id` of an envelope: its own id, which must be stable across retries for the
/// server to drop duplicates. An empty id would silently disable deduplication, so it is refused.
pub fn message_id(envelope: &Envelope) -> Result<&str> {
    let id = envelope.id.as_str();
    let reason = if id.trim().is_empty() {
        "id is empty (it is the deduplication key)"
    } else if id.chars().any(|c| c.is_control()) {
        "id contains control characters (it is sent as a header)"
    } else {
        return Ok(id);
    };
    Err(Error::InvalidEnvelope { id: id.into(), reason: reason.into() })
}

/// Encodes a free-form value (project, domain, queue) as exactly one subject token, or `None` when
/// it is empty.
///
/// NATS tokens cannot contain `.`, `*`, `>` or whitespace. Those characters, `%` itself and any
/// other control or non-ASCII character are percent-encoded byte by byte, so the encoding is
/// reversible and two different names never share a subject. Flyte's own project and domain
/// names (`[a-z0-9-]`) come through unchanged.
pub fn subject_token(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        let keep = b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

/// Whether every subject matched by `filter` is also matched by `pattern` (both may contain `*`
/// and `>` wildcards).
pub fn subject_is_subset(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('.');
    let mut p = pattern.split('.');
    loop {
        match (f.next(), p.next()) {
            (None, None) => return true,
            // `>` needs at least one more token, which the filter has.
            (Some(_), Some(">")) => return true,
            (Some(">"), Some(_)) => return false,
            (Some(_), Some("*")) => continue,
            (Some("*"), Some(_)) => return false,
            (Some(a), Some(b)) if a == b => continue,
            _ => return false,
        }
    }
}

/// Stream, consumer and bucket names: non-empty ASCII letters, digits, `_` and `-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A subject prefix: one or more literal tokens, not in a reserved namespace.
pub fn is_valid_subject_prefix(prefix: &str) -> bool {
    !prefix.starts_with('$')
        && !prefix.starts_with("_INBOX")
        && prefix.split('.').all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>'))
}

#[cfg(test)]
mod tests {
    use aloft_proto::aloft::v1::{AbortCommand, ExecuteCommand, TaskRunCommand};
    use aloft_proto::flyteidl::core::NodeExecutionIdentifier;
    use aloft_proto::flyteidl::event::{NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent};

    use super::*;

    fn topo() -> Topology {
        Topology::new(&BusConfig::default())
    }

    fn exec(project: &str, domain: &str) -> WorkflowExecutionIdentifier {
        WorkflowExecutionIdentifier {
            project: project.into(),
            domain: domain.into(),
            name: "e1".into(),
            org: String::new(),
        }
    }

    fn env(body: Body) -> Envelope {
        Envelope { id: "id-1".into(), created_at: None, source: "test".into(), body: Some(body) }
    }

    #[test]
    fn stream_names_use_the_prefix() {
        let t = topo();
        assert_eq!(t.stream_name(StreamKind::Commands), "ALOFT_COMMANDS");
        assert_eq!(t.stream_name(StreamKind::Tasks), "ALOFT_TASKS");
        assert_eq!(t.stream_name(StreamKind::Events), "ALOFT_EVENTS");
        assert_eq!(t.kv_bucket_name("executions").unwrap(), "ALOFT_executions");
        assert!(t.kv_bucket_name("a.b").is_err());
    }

    #[test]
    fn stream_specs_match_the_architecture() {
        let specs = topo().stream_specs();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].subjects, ["aloft.cmd.execute", "aloft.cmd.abort", "aloft.cmd.wake"]);
        assert_eq!(specs[0].retention, Retention::WorkQueue);
        assert_eq!(specs[1].subjects, ["aloft.task.run.>"]);
        assert_eq!(specs[1].retention, Retention::WorkQueue);
        assert_eq!(specs[2].subjects, ["aloft.evt.>"]);
        assert_eq!(specs[2].retention, Retention::Limits);
        assert_eq!(specs[2].max_age, Duration::from_secs(7 * 86400));
        assert!(specs.iter().all(|s| s.duplicate_window == Duration::from_secs(120)));
    }

    #[test]
    fn subject_prefix_namespaces_every_subject() {
        let t = Topology::new(&BusConfig { subject_prefix: "t_1".into(), ..Default::default() });
        for kind in StreamKind::ALL {
            assert!(t.stream_subjects(kind).iter().all(|s| s.starts_with("t_1.")));
        }
        assert_eq!(t.events_filter(None, None, None), "t_1.evt.*.*.*");
    }

    #[test]
    fn subject_for_every_body() {
        let t = topo();
        assert_eq!(t.subject_for(&env(Body::Execute(ExecuteCommand::default()))).unwrap(), "aloft.cmd.execute");
        assert_eq!(t.subject_for(&env(Body::Abort(AbortCommand::default()))).unwrap(), "aloft.cmd.abort");
        assert_eq!(t.subject_for(&env(Body::Wake(Default::default()))).unwrap(), "aloft.cmd.wake");
        assert_eq!(t.subject_for(&env(Body::Signal(Default::default()))).unwrap(), "aloft.cmd.wake");
        let run = TaskRunCommand { queue: "gpu.large".into(), ..Default::default() };
        assert_eq!(t.subject_for(&env(Body::TaskRun(run))).unwrap(), "aloft.task.run.gpu%2Elarge");
        let wf =
            WorkflowExecutionEvent { execution_id: Some(exec("flytesnacks", "development")), ..Default::default() };
        assert_eq!(t.subject_for(&env(Body::WorkflowEvent(wf))).unwrap(), "aloft.evt.workflow.flytesnacks.development");
        let node_id = NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec("p", "d")) };
        let node = NodeExecutionEvent { id: Some(node_id.clone()), ..Default::default() };
        assert_eq!(t.subject_for(&env(Body::NodeEvent(node))).unwrap(), "aloft.evt.node.p.d");
        let task = TaskExecutionEvent { parent_node_execution_id: Some(node_id), ..Default::default() };
        assert_eq!(t.subject_for(&env(Body::TaskEvent(task))).unwrap(), "aloft.evt.task.p.d");
        let breach = aloft_proto::aloft::v1::SlaBreach { execution_id: Some(exec("p", "d")), ..Default::default() };
        assert_eq!(t.subject_for(&env(Body::SlaBreach(breach))).unwrap(), "aloft.evt.sla.p.d");
        assert!(t.subject_for(&env(Body::SlaBreach(Default::default()))).is_err());
    }

    #[test]
    fn every_published_subject_lands_in_its_stream() {
        let t = topo();
        assert_eq!(t.stream_of(&t.execute_subject()), Some(StreamKind::Commands));
        assert_eq!(t.stream_of(&t.abort_subject()), Some(StreamKind::Commands));
        assert_eq!(t.stream_of(&t.task_run_subject("q").unwrap()), Some(StreamKind::Tasks));
        assert_eq!(t.stream_of(&t.event_subject(EventKind::Task, "a b", "c>").unwrap()), Some(StreamKind::Events));
        assert_eq!(t.stream_of("aloft.cmd.other"), None);
        assert_eq!(t.stream_of("other.evt.node.p.d"), None);
    }

    #[test]
    fn unroutable_envelopes_are_refused_with_a_reason() {
        let t = topo();
        let no_body = Envelope { id: "x".into(), ..Default::default() };
        assert!(t.subject_for(&no_body).unwrap_err().to_string().contains("no body"));
        let no_queue = env(Body::TaskRun(TaskRunCommand::default()));
        assert!(t.subject_for(&no_queue).unwrap_err().to_string().contains("task_run.queue"));
        let no_exec = env(Body::WorkflowEvent(WorkflowExecutionEvent::default()));
        let err = t.subject_for(&no_exec).unwrap_err().to_string();
        assert!(err.contains("id-1") && err.contains("workflow event has no execution id"), "{err}");
        let no_domain = env(Body::NodeEvent(NodeExecutionEvent {
            id: Some(NodeExecutionIdentifier { node_id: "n".into(), execution_id: Some(exec("p", "")) }),
            ..Default::default()
        }));
        assert!(t.subject_for(&no_domain).unwrap_err().to_string().contains("empty domain"));
    }

    #[test]
    fn subject_tokens_are_single_tokens_and_reversible() {
        assert_eq!(subject_token("flytesnacks").as_deref(), Some("flytesnacks"));
        assert_eq!(subject_token("my-proj_1").as_deref(), Some("my-proj_1"));
        assert_eq!(subject_token("a.b").as_deref(), Some("a%2Eb"));
        assert_eq!(subject_token("a*b>c").as_deref(), Some("a%2Ab%3Ec"));
        assert_eq!(subject_token("a b\tc\n").as_deref(), Some("a%20b%09c%0A"));
        assert_eq!(subject_token("100%").as_deref(), Some("100%25"));
        assert_eq!(subject_token("é").as_deref(), Some("%C3%A9"));
        assert_eq!(subject_token(""), None);
        // Distinct inputs stay distinct, even ones that a naive '_' replacement would merge.
        assert_ne!(subject_token("a.b"), subject_token("a_b"));
        assert_ne!(subject_token("a%2Eb"), subject_token("a.b"));
        for v in ["a.b", "x y", ">", "*", "%", "\u{7f}", "ünï.cödé"] {
            let t = subject_token(v).unwrap();
            assert!(t.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>')), "{t}");
        }
    }

    #[test]
    fn message_id_is_the_envelope_id() {
        let e = Envelope { id: "exec/p/d/n".into(), ..Default::default() };
        assert_eq!(message_id(&e).unwrap(), "exec/p/d/n");
        assert!(message_id(&Envelope::default()).unwrap_err().to_string().contains("id is empty"));
        let bad = Envelope { id: "a\r\nb".into(), ..Default::default() };
        assert!(message_id(&bad).unwrap_err().to_string().contains("control characters"));
    }

    #[test]
    fn subset_follows_wildcard_rules() {
        assert!(subject_is_subset("a.b.c", "a.b.c"));
        assert!(subject_is_subset("a.b.c", "a.>"));
        assert!(subject_is_subset("a.*.c", "a.>"));
        assert!(subject_is_subset("a.>", "a.>"));
        assert!(subject_is_subset("a.b", "a.*"));
        assert!(subject_is_subset("a.*", "a.*"));
        assert!(!subject_is_subset("a", "a.>"));
        assert!(!subject_is_subset("a.>", "a.*"));
        assert!(!subject_is_subset("a.*", "a.b"));
        assert!(!subject_is_subset("a.b.c", "a.b"));
        assert!(!subject_is_subset("a.b", "a.b.c"));
        assert!(!subject_is_subset("x.b", "a.>"));
    }

    #[test]
    fn filters_must_lie_inside_the_stream() {
        let t = topo();
        t.check_filters(StreamKind::Events, &[t.events_filter(Some(EventKind::Node), Some("p"), None)]).unwrap();
        t.check_filters(StreamKind::Commands, &[t.execute_subject()]).unwrap();
        t.check_filters(StreamKind::Tasks, &["aloft.task.run.*".into()]).unwrap();
        let err = t.check_filters(StreamKind::Commands, &["aloft.evt.>".into()]).unwrap_err().to_string();
        assert!(err.contains("aloft.evt.>") && err.contains("ALOFT_COMMANDS"), "{err}");
    }

    #[test]
    fn names_and_prefixes_are_validated() {
        assert!(is_valid_name("ALOFT"));
        assert!(is_valid_name("t_0a1b-2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name("a b"));
        assert!(is_valid_subject_prefix("aloft"));
        assert!(is_valid_subject_prefix("tenant.aloft"));
        assert!(!is_valid_subject_prefix(""));
        assert!(!is_valid_subject_prefix("a..b"));
        assert!(!is_valid_subject_prefix("a.>"));
        assert!(!is_valid_subject_prefix("$KV"));
        assert!(!is_valid_subject_prefix("_INBOX.x"));
    }
}
