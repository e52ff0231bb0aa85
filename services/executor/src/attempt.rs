//! One task attempt, from admission to the terminal event: wait for capacity, prepare the
//! scratch directory, command line and environment, run the process while publishing RUNNING,
//! collect raw-container outputs, upload the log, decide the result from the files and publish
//! it. The caller acknowledges the run only after that last publish.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use aloft_blob::BlobKind;
use aloft_proto::aloft::v1::{Envelope, TaskRunCommand};
use aloft_proto::flyteidl::core::{
    Container, ErrorDocument, ExecutionError, LiteralMap, data_loading_config, execution_error,
};
use prost::Message as _;

use crate::app::{Admit, Controls, Executor, Settle};
use crate::domain::admission::requested;
use crate::domain::env::{Host, task_env};
use crate::domain::events;
use crate::domain::ids::AttemptId;
use crate::domain::outcome::{self, Files, Outcome, ProcessEnd};
use crate::domain::raw_io::{self, OutputKind};
use crate::domain::template::{Paths, refers_to_inputs, render_all, rewrite_dest_dir};
use crate::domain::warm::Runtime;
use crate::domain::{SpecError, container};
use crate::raw_container;
use crate::runner::{self, Process, Stop};
use crate::warm::{Cold, SpawnError};

/// Bytes read from the end of the log for failure messages.
const LOG_TAIL_READ: u64 = 64 * 1024;
/// Bounds on the backoff between attempts to publish an event.
const PUBLISH_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Why an attempt could not be prepared.
enum PrepareError {
    /// The task as sent cannot run: FAILED, not retried.
    Spec(SpecError),
    /// The executor could not do its part (store, disk): RETRYABLE_FAILED, a system error.
    System(String),
}

impl From<SpecError> for PrepareError {
    fn from(e: SpecError) -> Self {
        PrepareError::Spec(e)
    }
}

/// The attempt's raw-container directories.
struct RawDirs {
    output_dir: PathBuf,
    outputs: Vec<(String, OutputKind)>,
}

/// A ready-to-start attempt.
struct Prepared {
    process: Process,
    raw: Option<RawDirs>,
}

/// The attempt's private directories.
struct Scratch {
    root: PathBuf,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    log: PathBuf,
}

impl Scratch {
    async fn create(base: &str, id: &AttemptId) -> std::io::Result<Scratch> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let root = Path::new(base).join(format!("{}-{}", id.slug(), &unique[..8]));
        let scratch = Scratch {
            work: root.join("work"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            log: root.join(events::LOG_NAME),
            root,
        };
        for dir in [&scratch.work, &scratch.home, &scratch.tmp] {
            tokio::fs::create_dir_all(dir).await?;
        }
        Ok(scratch)
    }
}

impl Executor {
    /// Runs the attempt and publishes its terminal event; returns how to settle the run.
    pub(crate) async fn attempt(
        &self,
        cmd: &TaskRunCommand,
        id: &AttemptId,
        controls: &Controls,
        delivered: u64,
    ) -> Settle {
        let task = cmd.task.as_ref().expect("AttemptId::from_command checked the template");
        // A redelivered run whose previous try already ended (its executor died before the terminal
        // event was published or acked) reports that result instead of running the task again:
        // a task must not run to completion twice.
        if delivered > 1
            && let Some(result) = self.previous_result(cmd).await
        {
            tracing::info!("redelivered run already finished; reporting its result");
            return self.finish(cmd, id, result).await;
        }
        let Some(container) = container(task) else {
            return self
                .finish(
                    cmd,
                    id,
                    spec_failure("task has no container (pod templates, SQL and plugin tasks are not supported)"),
                )
                .await;
        };
        let need = match requested(container.resources.as_ref()) {
            Ok(need) => need,
            Err(e) => return self.finish(cmd, id, spec_failure(&e.to_string())).await,
        };
        let (_guard, answer) = self.admit(id, need);
        match answer {
            Admit::Now => {}
            Admit::TooLarge(why) => {
                tracing::warn!(%why, "refusing a task larger than this executor");
                let error = ExecutionError {
                    code: "ResourcesExceedCapacity".into(),
                    message: why,
                    kind: execution_error::ErrorKind::User as i32,
                    ..Default::default()
                };
                return self.finish(cmd, id, Outcome::Failed(error)).await;
            }
            Admit::Wait(admitted) => {
                tracing::info!(%need, "waiting for capacity");
                tokio::select! {
                    _ = admitted => {}
                    cause = controls.aborted() => return self.finish(cmd, id, Outcome::Aborted { reason: cause }).await,
                    _ = self.shutdown.cancelled() => return Settle::Nak,
                }
            }
        }
        let t = Instant::now();
        let scratch = match Scratch::create(&self.config.scratch_dir, id).await {
            Ok(s) => s,
            Err(e) => {
                let message = format!("cannot create a scratch directory under {}: {e}", self.config.scratch_dir);
                return self.finish(cmd, id, system_failure(message)).await;
            }
        };
        self.stages.lap("scratch_create", t);
        let settle = self.run_in(cmd, id, controls, container, &scratch, delivered).await;
        let t = Instant::now();
        if self.config.keep_scratch {
            tracing::info!(scratch = %scratch.root.display(), "keeping the scratch directory");
        } else if let Err(e) = tokio::fs::remove_dir_all(&scratch.root).await {
            tracing::warn!(scratch = %scratch.root.display(), error = %e, "cannot delete the scratch directory");
        }
        self.stages.lap("scratch_remove", t);
        settle
    }

    async fn run_in(
        &self,
        cmd: &TaskRunCommand,
        id: &AttemptId,
        controls: &Controls,
        container: &Container,
        scratch: &Scratch,
        delivered: u64,
    ) -> Settle {
        let t = Instant::now();
        let prepared = match self.prepare(cmd, id, container, scratch, delivered).await {
            Ok(p) => p,
            Err(PrepareError::Spec(e)) => return self.finish(cmd, id, spec_failure(&e.to_string())).await,
            Err(PrepareError::System(message)) => return self.finish(cmd, id, system_failure(message)).await,
        };
        if let Some(cause) = controls.abort_cause() {
            return self.finish(cmd, id, Outcome::Aborted { reason: cause }).await;
        }
        let t = self.stages.lap("prepare", t);
        let end = match self.start(&prepared).await {
            Ok((running, runtime)) => {
                let t = self.stages.lap(if runtime == Runtime::Warm { "spawn_warm" } else { "spawn" }, t);
                tracing::info!(pid = running.pid(), program = %prepared.process.program, %runtime, "task started");
                let published = self.publish(&events::running(cmd, id, SystemTime::now())).await;
                self.stages.lap("publish_running", t);
                if published.is_err() {
                    // Shutdown's deadline passed while NATS was unreachable.
                    running.wait(None, self.config.kill_grace, async { Stop::Shutdown }).await;
                    return Settle::Leave;
                }
                let timeout = cmd.timeout.and_then(|d| Duration::try_from(d).ok()).filter(|d| !d.is_zero());
                let stop = async {
                    tokio::select! {
                        cause = controls.aborted() => Stop::Abort(cause),
                        _ = self.hard_stop.cancelled() => Stop::Shutdown,
                    }
                };
                let end = running.wait(timeout, self.config.kill_grace, stop).await;
                // the task's own time: its code, and flytekit's reading and writing of data
                self.stages.lap("process", t);
                end
            }
            Err(why) => ProcessEnd::StartFailed(why),
        };
        let t = Instant::now();
        tracing::info!(?end, "task process ended");

        // A raw container's outputs are turned into outputs.pb (or error.pb) here, so what the
        // attempt left is known without reading it back.
        let mut written = None;
        if let (ProcessEnd::Exited(0), Some(raw)) = (&end, &prepared.raw) {
            match raw_container::collect(
                &self.store,
                &raw.output_dir,
                &raw.outputs,
                &cmd.raw_output_prefix,
                &cmd.output_prefix,
            )
            .await
            {
                Ok(files) => written = Some(files),
                Err(e) => {
                    let message = format!("cannot collect the raw container's outputs: {e}");
                    self.upload_log(cmd, scratch).await;
                    return self.finish(cmd, id, system_failure(message)).await;
                }
            }
        }
        let t = self.stages.lap("collect_outputs", t);
        if end == ProcessEnd::Interrupted {
            // handed back to the queue: its results are not read
            self.upload_log(cmd, scratch).await;
            return Settle::Nak;
        }
        // Independent store round trips, so at once: the log upload and reading the results.
        let (_, files) = tokio::join!(self.upload_log(cmd, scratch), async {
            match written {
                Some(files) => Ok(files),
                None => self.read_files(&cmd.output_prefix).await,
            }
        });
        self.stages.lap("log_and_results", t);
        let files = match files {
            Ok(f) => f,
            Err(message) => return self.finish(cmd, id, system_failure(message)).await,
        };
        let has_outputs = cmd
            .task
            .as_ref()
            .and_then(|t| t.interface.as_ref())
            .and_then(|i| i.outputs.as_ref())
            .is_some_and(|o| !o.variables.is_empty());
        let log = runner::read_tail(&scratch.log, LOG_TAIL_READ).await;
        let tail = outcome::tail(&log, outcome::LOG_TAIL_LINES, outcome::LOG_TAIL_BYTES);
        match outcome::decide(&end, &files, has_outputs, &cmd.output_prefix, &tail) {
            Some(result) => self.finish(cmd, id, result).await,
            None => Settle::Nak,
        }
    }

    /// Starts the attempt's process: forked by the warm Python runtime when it may run there, else
    /// (and when the runtime is lost on the way) as a fresh process.
    async fn start(&self, prepared: &Prepared) -> Result<(runner::Running, Runtime), String> {
        match self.warm.choose(&prepared.process, prepared.raw.is_some()).await {
            Ok((server, script)) => match server.spawn(&script, &prepared.process).await {
                Ok(running) => return Ok((running, Runtime::Warm)),
                Err(SpawnError::Refused(why)) => return Err(why),
                Err(SpawnError::Lost(why)) => {
                    tracing::warn!(%why, "the warm Python runtime lost the task; running it cold")
                }
            },
            Err(Cold::Chosen(why)) => tracing::debug!(%why, "running the task cold"),
            Err(Cold::Unsuitable(why)) => tracing::info!(%why, "running the task cold"),
        }
        runner::spawn(&prepared.process).map(|running| (running, Runtime::Cold))
    }

    /// The result a previous try of this attempt left in its output prefix, if it finished.
    async fn previous_result(&self, cmd: &TaskRunCommand) -> Option<Outcome> {
        let files = self.read_files(&cmd.output_prefix).await.ok()?;
        if files.error.is_none() && !files.outputs && !files.futures {
            return None;
        }
        let has_outputs = cmd
            .task
            .as_ref()
            .and_then(|t| t.interface.as_ref())
            .and_then(|i| i.outputs.as_ref())
            .is_some_and(|o| !o.variables.is_empty());
        outcome::decide(&ProcessEnd::Exited(0), &files, has_outputs, &cmd.output_prefix, "")
    }

    /// Scratch layout, stale results removed, inputs (when needed), command line and environment.
    async fn prepare(
        &self,
        cmd: &TaskRunCommand,
        id: &AttemptId,
        container: &Container,
        scratch: &Scratch,
        delivered: u64,
    ) -> Result<Prepared, PrepareError> {
        let task = cmd.task.as_ref().expect("checked");
        let argv: Vec<String> = container.command.iter().chain(container.args.iter()).cloned().collect();
        if argv.is_empty() {
            return Err(SpecError::new("the task's container has neither command nor args").into());
        }
        if cmd.output_prefix.is_empty() || cmd.inputs_uri.is_empty() {
            return Err(SpecError::new("the task run has no output_prefix or inputs_uri").into());
        }
        let data_config = container.data_config.as_ref().filter(|d| d.enabled);
        let outputs = match data_config {
            Some(_) => Some(raw_io::output_kinds(task.interface.as_ref().and_then(|i| i.outputs.as_ref()))?),
            None => None,
        };

        if self.store.kind() == BlobKind::Local {
            // A local store's prefixes are plain absolute paths the task writes into directly.
            for dir in [&cmd.output_prefix, &cmd.raw_output_prefix] {
                if !dir.is_empty() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| PrepareError::System(format!("cannot create {dir}: {e}")))?;
                }
            }
        }
        // A redelivered run may find the files of its previous try. A first delivery cannot: each
        // attempt has its own output prefix, which only this run writes.
        if delivered > 1 {
            let clear = ["error.pb", "outputs.pb", "futures.pb"].map(|name| {
                let uri = aloft_blob::join(&cmd.output_prefix, name);
                async move {
                    self.store
                        .delete(&uri)
                        .await
                        .map_err(|e| PrepareError::System(format!("cannot clear a previous result {uri}: {e}")))
                }
            });
            for cleared in futures::future::join_all(clear).await {
                cleared?;
            }
        }

        // A raw container with no declared inputs gets an empty map without a store read.
        let declares_inputs =
            task.interface.as_ref().and_then(|i| i.inputs.as_ref()).is_some_and(|v| !v.variables.is_empty());
        let inputs = if (data_config.is_some() && declares_inputs) || refers_to_inputs(&argv) {
            let bytes = self
                .store
                .get(&cmd.inputs_uri)
                .await
                .map_err(|e| PrepareError::System(format!("cannot read the inputs: {e}")))?;
            Some(
                LiteralMap::decode(bytes)
                    .map_err(|e| PrepareError::System(format!("{} is not a LiteralMap: {e}", cmd.inputs_uri)))?,
            )
        } else {
            None
        };
        let unique_key = id.slug();
        let paths = Paths {
            input: &cmd.inputs_uri,
            output_prefix: &cmd.output_prefix,
            raw_output_prefix: &cmd.raw_output_prefix,
            checkpoint_prefix: &cmd.checkpoint_prefix,
            prev_checkpoint_prefix: &cmd.prev_checkpoint_prefix,
            per_retry_unique_key: &unique_key,
        };
        let work = scratch.work.to_string_lossy().into_owned();
        let mut rendered = rewrite_dest_dir(render_all(&argv, &paths, inputs.as_ref())?, &work);

        let raw = match (data_config, outputs) {
            (Some(data), Some(outputs)) => {
                // flytekit's defaults are /var/inputs and /var/outputs, meant for a container's
                // private filesystem: on the host they go under the attempt's scratch directory,
                // and the command line is pointed there, so concurrent attempts never share them.
                let input_dir = scratch.work.join(data.input_path.trim_start_matches('/'));
                let output_dir = scratch.work.join(data.output_path.trim_start_matches('/'));
                for (given, actual) in [(&data.input_path, &input_dir), (&data.output_path, &output_dir)] {
                    if given.starts_with('/') {
                        let actual = actual.to_string_lossy();
                        for arg in rendered.iter_mut() {
                            *arg = arg.replace(given.as_str(), &actual);
                        }
                    }
                }
                let format = data_loading_config::LiteralMapFormat::try_from(data.format)
                    .unwrap_or(data_loading_config::LiteralMapFormat::Json);
                let inputs = inputs.unwrap_or_default();
                let plan = raw_io::plan_inputs(&inputs, &input_dir.to_string_lossy())?;
                raw_container::materialise(&self.store, &plan, &input_dir, format)
                    .await
                    .map_err(|e| PrepareError::System(format!("cannot materialise the inputs: {e}")))?;
                raw_container::prepare_output_dir(&output_dir, &outputs)
                    .await
                    .map_err(|e| PrepareError::System(format!("cannot prepare {}: {e}", output_dir.display())))?;
                Some(RawDirs { output_dir, outputs })
            }
            _ => None,
        };

        let venv = self.config.python.venv.as_deref();
        let home = scratch.home.to_string_lossy();
        let tmp = scratch.tmp.to_string_lossy();
        let host = Host {
            venv,
            system_path: &self.host.system_path,
            home: &home,
            tmpdir: &tmp,
            s3: self.host.s3.as_ref(),
            passthrough: &self.host.passthrough,
            admin: self.config.admin_endpoint.as_deref(),
        };
        let env = task_env(cmd, id, &host);
        let mut rendered = rendered.into_iter();
        let program = rendered.next().expect("argv is not empty");
        Ok(Prepared {
            process: Process {
                program,
                args: rendered.collect(),
                env,
                cwd: scratch.work.clone(),
                log: scratch.log.clone(),
                groups: Some(crate::groups_dir(&self.config.scratch_dir)),
            },
            raw,
        })
    }

    /// `error.pb`, `outputs.pb`, `futures.pb` under the output prefix.
    async fn read_files(&self, output_prefix: &str) -> Result<Files, String> {
        let uri = |name: &str| aloft_blob::join(output_prefix, name);
        let read_err = |e: aloft_blob::BlobError| format!("cannot read the task's results: {e}");
        // three independent round trips, at once
        let (error_uri, outputs_uri, futures_uri) = (uri("error.pb"), uri("outputs.pb"), uri("futures.pb"));
        let (error, outputs, futures) =
            tokio::join!(self.store.get(&error_uri), self.store.exists(&outputs_uri), self.store.exists(&futures_uri));
        let error = match error {
            Ok(bytes) => Some(match ErrorDocument::decode(bytes) {
                Ok(ErrorDocument { error: Some(e) }) => Ok(e),
                Ok(ErrorDocument { error: None }) => Err("the document holds no error".to_string()),
                Err(e) => Err(e.to_string()),
            }),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(read_err(e)),
        };
        Ok(Files { error, outputs: outputs.map_err(read_err)?, futures: futures.map_err(read_err)? })
    }

    /// Uploads the log to `O/task.log`; a failure is logged, not fatal (the result still counts).
    async fn upload_log(&self, cmd: &TaskRunCommand, scratch: &Scratch) {
        let uri = events::log_link(&cmd.output_prefix).uri;
        if tokio::fs::metadata(&scratch.log).await.is_err() {
            // Never started: an empty log still tells the reader there was no output.
            if let Err(e) = tokio::fs::write(&scratch.log, b"").await {
                tracing::warn!(error = %e, "cannot create the empty task log");
                return;
            }
        }
        if let Err(e) = self.store.put_file(&uri, &scratch.log).await {
            tracing::warn!(%uri, error = %e, "cannot upload the task log");
        }
    }

    /// Publishes the terminal event; Ack once it is out, Leave if it could not be published
    /// before the drain deadline.
    async fn finish(&self, cmd: &TaskRunCommand, id: &AttemptId, outcome: Outcome) -> Settle {
        match &outcome {
            Outcome::Succeeded { .. } => tracing::info!("attempt succeeded"),
            Outcome::Aborted { reason } => tracing::info!(%reason, "attempt aborted"),
            Outcome::Failed(e) => tracing::info!(code = %e.code, "attempt failed"),
            Outcome::RetryableFailed(e) => tracing::info!(code = %e.code, "attempt failed (retryable)"),
        }
        let t = Instant::now();
        let published = self.publish(&events::terminal(cmd, id, &outcome, SystemTime::now())).await;
        self.stages.lap("publish_terminal", t);
        match published {
            Ok(()) => Settle::Ack,
            Err(()) => Settle::Leave,
        }
    }

    /// Publishes, retrying with backoff while NATS refuses, until the drain deadline.
    async fn publish(&self, envelope: &Envelope) -> Result<(), ()> {
        let mut delay = PUBLISH_BACKOFF.0;
        loop {
            match self.bus.publish(envelope).await {
                Ok(_) => return Ok(()),
                Err(e) => tracing::warn!(id = %envelope.id, error = %e, "cannot publish the task event; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => return Err(()),
            }
            delay = (delay * 2).min(PUBLISH_BACKOFF.1);
        }
    }
}

fn spec_failure(message: &str) -> Outcome {
    Outcome::Failed(ExecutionError {
        code: "BadTaskSpecification".into(),
        message: message.to_string(),
        kind: execution_error::ErrorKind::User as i32,
        ..Default::default()
    })
}

fn system_failure(message: String) -> Outcome {
    Outcome::RetryableFailed(ExecutionError {
        code: "ExecutorError".into(),
        message,
        kind: execution_error::ErrorKind::System as i32,
        ..Default::default()
    })
}
