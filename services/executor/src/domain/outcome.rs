//! The attempt's result, decided from the files the task wrote and how its process ended
//! (flyte contract 5.4, protocol doc "The attempt result"): never from the exit code alone,
//! because flytekit reports user errors, input-conversion errors and its own system errors in
//! `error.pb` with exit code 0.

use std::time::Duration;

use aloft_proto::flyteidl::core::{ContainerError, ExecutionError, container_error, execution_error};

/// How the task's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It exited by itself with this status.
    Exited(i32),
    /// A signal it did not send itself killed it (the OOM killer, a crash).
    Signaled(i32),
    /// It could not be started (program not found, not executable, bad working directory).
    StartFailed(String),
    /// It ran past the task's timeout and its process group was killed.
    TimedOut(Duration),
    /// Its execution was aborted and its process group was killed.
    Aborted(String),
    /// The executor is shutting down and killed it: no result, the run goes back to the queue.
    Interrupted,
}

/// What the task left under its output prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Files {
    /// `error.pb`: absent, decoded, or present but unreadable (with why).
    pub error: Option<Result<ContainerError, String>>,
    /// `outputs.pb` exists.
    pub outputs: bool,
    /// `futures.pb` exists (a `@dynamic` task).
    pub futures: bool,
}

/// The attempt's result, as the terminal task event reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Phase SUCCEEDED with `output_uri`.
    Succeeded {
        /// `O/outputs.pb`.
        output_uri: String,
    },
    /// Phase RETRYABLE_FAILED: the scheduler decides whether another attempt runs.
    RetryableFailed(ExecutionError),
    /// Phase FAILED: never retried.
    Failed(ExecutionError),
    /// Phase ABORTED.
    Aborted {
        /// Why (the abort's cause).
        reason: String,
    },
}

/// Lines of the log quoted in a `ProcessFailed` message.
pub const LOG_TAIL_LINES: usize = 20;
/// Bytes of the log quoted in a `ProcessFailed` message at most.
pub const LOG_TAIL_BYTES: usize = 4096;

/// Decides the result; `None` when the executor itself interrupted the attempt (shutdown), which
/// has no result: it runs again elsewhere.
pub fn decide(
    end: &ProcessEnd,
    files: &Files,
    has_outputs: bool,
    output_prefix: &str,
    log_tail: &str,
) -> Option<Outcome> {
    let error_uri = format!("{}/error.pb", output_prefix.trim_end_matches('/'));
    let system = |code: &str, message: String| ExecutionError {
        code: code.into(),
        message,
        kind: execution_error::ErrorKind::System as i32,
        ..Default::default()
    };
    let user = |code: &str, message: String| ExecutionError {
        code: code.into(),
        message,
        kind: execution_error::ErrorKind::User as i32,
        ..Default::default()
    };
    let with_tail = |message: String| {
        if log_tail.trim().is_empty() { message } else { format!("{message}; last lines of task.log:\n{log_tail}") }
    };
    let outcome = match end {
        ProcessEnd::Interrupted => return None,
        ProcessEnd::Aborted(reason) => Outcome::Aborted { reason: reason.clone() },
        // error.pb decides even after a kill on timeout: a task handling SIGTERM may report its
        // own error (protocol doc: "No error.pb and ... a kill on timeout").
        _ if files.error.is_some() => match files.error.as_ref().expect("checked") {
            Ok(doc) => {
                let kind = if doc.origin == execution_error::ErrorKind::System as i32 {
                    execution_error::ErrorKind::System
                } else {
                    execution_error::ErrorKind::User
                };
                let error = ExecutionError {
                    code: doc.code.clone(),
                    message: doc.message.clone(),
                    error_uri,
                    kind: kind as i32,
                    timestamp: doc.timestamp,
                    worker: doc.worker.clone(),
                };
                if doc.kind == container_error::Kind::Recoverable as i32 {
                    Outcome::RetryableFailed(error)
                } else {
                    Outcome::Failed(error)
                }
            }
            Err(why) => {
                let message = format!("the task wrote {error_uri} but it cannot be read: {why}");
                Outcome::RetryableFailed(ExecutionError { error_uri, ..system("ErrorDocumentUnreadable", message) })
            }
        },
        // As in Flyte, an expired deadline is the task's fault: it counts against the task's own
        // retries (so `retries=0` means one attempt), not the system budget.
        ProcessEnd::TimedOut(limit) => Outcome::RetryableFailed(user(
            "Timeout",
            format!("task exceeded its timeout of {} and was killed", humantime::format_duration(*limit)),
        )),
        ProcessEnd::Exited(0) => {
            let output_uri = format!("{}/outputs.pb", output_prefix.trim_end_matches('/'));
            if files.outputs || files.futures || !has_outputs {
                Outcome::Succeeded { output_uri }
            } else {
                Outcome::Failed(ExecutionError {
                    code: "OutputsNotFound".into(),
                    message: with_tail(format!(
                        "outputs not found: the task declares outputs but wrote neither {output_uri} nor futures.pb"
                    )),
                    kind: execution_error::ErrorKind::User as i32,
                    ..Default::default()
                })
            }
        }
        ProcessEnd::Exited(code) => Outcome::RetryableFailed(system(
            "ProcessFailed",
            with_tail(format!("the task process exited with status {code}")),
        )),
        ProcessEnd::Signaled(signal) => Outcome::RetryableFailed(system(
            "ProcessFailed",
            with_tail(format!("the task process was killed by signal {signal} ({})", signal_name(*signal))),
        )),
        ProcessEnd::StartFailed(why) => Outcome::RetryableFailed(system("ProcessFailed", why.clone())),
    };
    Some(outcome)
}

/// The last `lines` lines of `text`, at most `max_bytes` (cut at a character boundary).
pub fn tail(text: &str, lines: usize, max_bytes: usize) -> String {
    let trimmed = text.trim_end();
    let start = trimmed.rmatch_indices('\n').nth(lines.saturating_sub(1)).map(|(i, _)| i + 1).unwrap_or(0);
    let mut out = &trimmed[start..];
    if out.len() > max_bytes {
        let mut cut = out.len() - max_bytes;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = &out[cut..];
    }
    out.to_string()
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL, often the out-of-memory killer",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: &str = "/data/m/p/d/e/n0/data/0";

    fn doc(kind: container_error::Kind, origin: execution_error::ErrorKind) -> ContainerError {
        ContainerError {
            code: "USER:ValueError".into(),
            message: "Traceback ... ValueError: boom".into(),
            kind: kind as i32,
            origin: origin as i32,
            timestamp: Some(prost_types::Timestamp { seconds: 5, nanos: 0 }),
            worker: "w".into(),
        }
    }

    fn files(error: Option<Result<ContainerError, String>>, outputs: bool, futures: bool) -> Files {
        Files { error, outputs, futures }
    }

    #[test]
    fn error_document_decides_even_with_exit_zero() {
        let nonrec =
            files(Some(Ok(doc(container_error::Kind::NonRecoverable, execution_error::ErrorKind::User))), false, false);
        let Some(Outcome::Failed(e)) = decide(&ProcessEnd::Exited(0), &nonrec, true, O, "") else { panic!() };
        assert_eq!(e.code, "USER:ValueError");
        assert_eq!(e.message, "Traceback ... ValueError: boom");
        assert_eq!(e.kind, execution_error::ErrorKind::User as i32);
        assert_eq!(e.error_uri, format!("{O}/error.pb"));
        assert_eq!(e.worker, "w");
        assert_eq!(e.timestamp.unwrap().seconds, 5);

        let rec =
            files(Some(Ok(doc(container_error::Kind::Recoverable, execution_error::ErrorKind::System))), true, false);
        let Some(Outcome::RetryableFailed(e)) = decide(&ProcessEnd::Exited(1), &rec, true, O, "") else { panic!() };
        assert_eq!(e.kind, execution_error::ErrorKind::System as i32, "origin selects the kind");

        let unknown_origin = files(
            Some(Ok(doc(container_error::Kind::NonRecoverable, execution_error::ErrorKind::Unknown))),
            false,
            false,
        );
        let Some(Outcome::Failed(e)) = decide(&ProcessEnd::Exited(0), &unknown_origin, true, O, "") else { panic!() };
        assert_eq!(e.kind, execution_error::ErrorKind::User as i32);
    }

    #[test]
    fn unreadable_error_document_is_a_retryable_system_error() {
        let f = files(Some(Err("invalid wire type".into())), false, false);
        let Some(Outcome::RetryableFailed(e)) = decide(&ProcessEnd::Exited(0), &f, true, O, "") else { panic!() };
        assert_eq!(e.code, "ErrorDocumentUnreadable");
        assert!(e.message.contains("invalid wire type"));
        assert_eq!(e.error_uri, format!("{O}/error.pb"));
    }

    #[test]
    fn success_needs_outputs_when_the_interface_has_them() {
        let uri = format!("{O}/outputs.pb");
        for (f, has_outputs) in
            [(files(None, true, false), true), (files(None, false, true), true), (files(None, false, false), false)]
        {
            assert_eq!(
                decide(&ProcessEnd::Exited(0), &f, has_outputs, &format!("{O}/"), ""),
                Some(Outcome::Succeeded { output_uri: uri.clone() })
            );
        }
        let Some(Outcome::Failed(e)) = decide(&ProcessEnd::Exited(0), &files(None, false, false), true, O, "") else {
            panic!()
        };
        assert_eq!(e.code, "OutputsNotFound");
        assert!(e.message.starts_with("outputs not found"), "{}", e.message);
        assert_eq!(e.kind, execution_error::ErrorKind::User as i32);
    }

    #[test]
    fn process_failures_without_error_document_are_retryable_system_errors() {
        let none = files(None, true, false);
        let Some(Outcome::RetryableFailed(e)) = decide(&ProcessEnd::Exited(3), &none, true, O, "line a\nline b") else {
            panic!()
        };
        assert_eq!(e.code, "ProcessFailed");
        assert_eq!(e.kind, execution_error::ErrorKind::System as i32);
        assert_eq!(e.message, "the task process exited with status 3; last lines of task.log:\nline a\nline b");
        let Some(Outcome::RetryableFailed(e)) = decide(&ProcessEnd::Signaled(9), &none, true, O, "") else { panic!() };
        assert_eq!(e.message, "the task process was killed by signal 9 (SIGKILL, often the out-of-memory killer)");
        let Some(Outcome::RetryableFailed(e)) =
            decide(&ProcessEnd::StartFailed("cannot start `x`: not found".into()), &none, true, O, "")
        else {
            panic!()
        };
        assert_eq!((e.code.as_str(), e.message.as_str()), ("ProcessFailed", "cannot start `x`: not found"));
    }

    #[test]
    fn timeout_abort_and_interruption() {
        let f =
            files(Some(Ok(doc(container_error::Kind::NonRecoverable, execution_error::ErrorKind::User))), false, false);
        let timed_out = ProcessEnd::TimedOut(Duration::from_secs(90));
        let Some(Outcome::Failed(e)) = decide(&timed_out, &f, true, O, "") else { panic!() };
        assert_eq!(e.code, "USER:ValueError", "an error the task wrote still decides");
        let Some(Outcome::RetryableFailed(e)) = decide(&timed_out, &files(None, true, false), true, O, "") else {
            panic!()
        };
        assert_eq!(e.code, "Timeout");
        assert_eq!(e.kind, execution_error::ErrorKind::User as i32, "counts against the task's retries");
        assert_eq!(e.message, "task exceeded its timeout of 1m 30s and was killed");
        assert_eq!(
            decide(&ProcessEnd::Aborted("user asked".into()), &f, true, O, ""),
            Some(Outcome::Aborted { reason: "user asked".into() })
        );
        assert_eq!(decide(&ProcessEnd::Interrupted, &f, true, O, ""), None);
    }

    #[test]
    fn tails_are_bounded() {
        let log: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail(&log, 3, 1000);
        assert_eq!(t, "line 28\nline 29\nline 30");
        assert_eq!(tail("only\n\n", 5, 100), "only");
        assert_eq!(tail("abcdef", 5, 3), "def");
        assert_eq!(tail("ééé", 5, 3), "é", "cut at a character boundary");
        assert_eq!(tail("", 5, 10), "");
    }
}
