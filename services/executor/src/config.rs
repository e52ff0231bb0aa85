//! Configuration of the executor.

use std::time::Duration;

use aloft_blob::BlobConfig;
use aloft_bus::BusConfig;
pub use aloft_runtime::grpc::HealthConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

use crate::domain::quantity;
pub use crate::domain::warm::Runtime;

/// Everything the executor reads at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC health endpoint that deployments probe.
    pub health: HealthConfig,
    /// The HTTP endpoint serving Prometheus `/metrics` (port 0: any free port).
    pub metrics: aloft_runtime::metrics::MetricsConfig,
    /// The task queue this executor serves (`<subject_prefix>.task.run.<queue>`); replicas with
    /// the same queue share one durable consumer. Letters, digits, `_` and `-`, because it is
    /// also part of the consumer's name.
    pub queue: String,
    /// How many task runs one executor holds at once (running or waiting for capacity); each
    /// is unacknowledged until its terminal event is published.
    pub slots: u32,
    /// The blob store of the deployment (the same as metadata's and the scheduler's): task logs
    /// are uploaded to it, raw-container data moves through it, and S3 settings are passed on
    /// to tasks as `FLYTE_AWS_*`.
    pub storage: BlobConfig,
    /// CPU and memory the attempts running here may request in total.
    pub capacity: CapacityConfig,
    /// The Python environment tasks run in.
    pub python: PythonConfig,
    /// How Python tasks (`pyflyte-execute`, `pyflyte-fast-execute`) run: `warm` (default) in a
    /// child forked from a fork server that has flytekit imported, falling back to `cold` (a fresh
    /// process per attempt) when the server cannot start or an attempt cannot run there; `cold`
    /// always. A task's `ALOFT_PYTHON_RUNTIME` environment variable overrides it for that task.
    /// An executor serves one queue, so this is also the per-queue setting. (A top-level key, not
    /// `python.runtime`, so that code building `PythonConfig` literally keeps compiling.)
    pub python_runtime: Runtime,
    /// Metadata's admin gRPC address (`host:port`) as tasks reach it, passed to them as
    /// `FLYTE_PLATFORM_URL` (with `FLYTE_PLATFORM_INSECURE=True`) so an eager workflow
    /// (`@eager`) can start its sub-executions. Unset: tasks get no endpoint.
    pub admin_endpoint: Option<String>,
    /// Directory under which each attempt gets a fresh scratch directory (working directory,
    /// `HOME`, `TMPDIR`, the log before upload).
    pub scratch_dir: String,
    /// Keep each attempt's scratch directory instead of deleting it (for debugging).
    pub keep_scratch: bool,
    /// Between SIGTERM and SIGKILL when a task's process group is killed (timeout, abort,
    /// shutdown).
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// On shutdown, how long running attempts may still finish before they are killed and
    /// their runs handed back to the queue.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// Admission capacity, as Kubernetes quantities (`"4"`, `"3500m"`, `"16Gi"`). Unset: the host's
/// CPU count and total memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// CPU, e.g. `"4"` or `"3500m"`.
    pub cpu: Option<String>,
    /// Memory, e.g. `"16Gi"`.
    pub memory: Option<String>,
}

/// Where Python (flytekit) comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonConfig {
    /// A virtualenv whose `bin` is put first on the tasks' `PATH` (so `pyflyte-execute`,
    /// `pyflyte-fast-execute` and its `python` resolve). Unset: the executor's own `PATH`.
    pub venv: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bus: BusConfig::default(),
            // 8091..8094 are scheduler, executor, notifier, lineage, so all five services share a host
            // with their defaults (metadata uses 8088/8089).
            health: HealthConfig::at("127.0.0.1:8092"),
            metrics: aloft_runtime::metrics::MetricsConfig::default(),
            queue: "default".into(),
            slots: 4,
            storage: BlobConfig::default(),
            capacity: CapacityConfig::default(),
            python: PythonConfig::default(),
            python_runtime: Runtime::Warm,
            scratch_dir: std::env::temp_dir().join("aloft-executor").to_string_lossy().into_owned(),
            keep_scratch: false,
            admin_endpoint: None,
            kill_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate_config()?;
        self.health.validate()?;
        self.metrics.validate()?;
        if !aloft_bus::is_valid_name(&self.queue) {
            return Err(ConfigError::invalid(
                "queue",
                format!("`{}` must be non-empty letters, digits, '_' or '-'", self.queue),
            ));
        }
        if self.slots == 0 {
            return Err(ConfigError::invalid("slots", "must be at least 1"));
        }
        if let Some(admin) = &self.admin_endpoint {
            aloft_runtime::grpc::validate_listen(admin, "admin_endpoint")?;
        }
        self.storage.validate().map_err(|e| ConfigError::invalid("storage", e.to_string()))?;
        if let Some(cpu) = &self.capacity.cpu {
            quantity::cpu_millis(cpu).map_err(|e| ConfigError::invalid("capacity.cpu", e.to_string()))?;
        }
        if let Some(memory) = &self.capacity.memory {
            quantity::memory_bytes(memory).map_err(|e| ConfigError::invalid("capacity.memory", e.to_string()))?;
        }
        if let Some(venv) = &self.python.venv
            && !venv.starts_with('/')
        {
            return Err(ConfigError::invalid("python.venv", format!("`{venv}` is not an absolute path")));
        }
        if !self.scratch_dir.starts_with('/') {
            return Err(ConfigError::invalid("scratch_dir", format!("`{}` is not an absolute path", self.scratch_dir)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.health.listen, "127.0.0.1:8092");
        assert_eq!(c.queue, "default");
        assert_eq!(c.capacity, CapacityConfig { cpu: None, memory: None }, "the host's by default");
        assert_eq!(c.kill_grace, Duration::from_secs(10));
        assert!(!c.keep_scratch);
        assert_eq!(c.python_runtime, Runtime::Warm);
    }

    #[test]
    fn task_settings_load() {
        let c: Config = aloft_runtime::config::load_from(
            Some((
                "e.toml",
                "scratch_dir = \"/srv/scratch\"\nkill_grace = \"2s\"\n[capacity]\ncpu = \"3500m\"\n\
                 [python]\nvenv = \"/opt/venv\"\n[storage]\nkind = \"s3\"\nroot = \"s3://b/p\"\n",
            )),
            &env(&[("ALOFT_CAPACITY__MEMORY", "16Gi"), ("ALOFT_KEEP_SCRATCH", "true"), ("ALOFT_DRAIN_TIMEOUT", "1m")]),
        )
        .unwrap();
        assert_eq!(c.capacity, CapacityConfig { cpu: Some("3500m".into()), memory: Some("16Gi".into()) });
        assert_eq!(c.python.venv.as_deref(), Some("/opt/venv"));
        assert_eq!(c.scratch_dir, "/srv/scratch");
        assert_eq!(c.kill_grace, Duration::from_secs(2));
        assert_eq!(c.drain_timeout, Duration::from_secs(60));
        assert!(c.keep_scratch);
        assert_eq!(c.storage.root, "s3://b/p");
        assert_eq!(c.python_runtime, Runtime::Warm);
        let cold: Config = aloft_runtime::config::load_from(None, &env(&[("ALOFT_PYTHON_RUNTIME", "cold")])).unwrap();
        assert_eq!(cold.python_runtime, Runtime::Cold);
        let err = aloft_runtime::config::load_from::<Config>(None, &env(&[("ALOFT_PYTHON_RUNTIME", "tepid")]));
        assert!(err.unwrap_err().to_string().contains("python_runtime"));
    }

    #[test]
    fn file_and_environment_set_keys() {
        let c: Config = aloft_runtime::config::load_from(
            Some(("e.toml", "queue = \"gpu-a100\"\n[bus]\nurl = \"nats://nats:4222\"\n")),
            &env(&[("ALOFT_SLOTS", "16"), ("ALOFT_HEALTH__LISTEN", "0.0.0.0:9000")]),
        )
        .unwrap();
        assert_eq!(c.queue, "gpu-a100");
        assert_eq!(c.slots, 16);
        assert_eq!(c.bus.url, "nats://nats:4222");
        assert_eq!(c.health.listen, "0.0.0.0:9000");
    }

    #[test]
    fn bad_values_name_their_key() {
        let load = |pairs: &[(&str, &str)]| {
            aloft_runtime::config::load_from::<Config>(None, &env(pairs)).unwrap_err().to_string()
        };
        assert_eq!(
            load(&[("ALOFT_QUEUE", "gpu.a100")]),
            "invalid value for config key `queue`: `gpu.a100` must be non-empty letters, digits, '_' or '-'"
        );
        assert_eq!(
            load(&[("ALOFT_QUEUE", "")]),
            "invalid value for config key `queue`: `` must be non-empty letters, digits, '_' or '-'"
        );
        assert_eq!(load(&[("ALOFT_SLOTS", "0")]), "invalid value for config key `slots`: must be at least 1");
        assert_eq!(
            load(&[("ALOFT_HEALTH__LISTEN", ":80")]),
            "invalid value for config key `health.listen`: `:80` is not host:port"
        );
        assert_eq!(load(&[("ALOFT_BUS__URL", " ")]), "invalid value for config key `bus`: url is empty");
        assert_eq!(
            load(&[("ALOFT_CAPACITY__CPU", "lots")]),
            "invalid value for config key `capacity.cpu`: `lots` is not a resource quantity: no digits"
        );
        assert_eq!(
            load(&[("ALOFT_CAPACITY__MEMORY", "-1Gi")]),
            "invalid value for config key `capacity.memory`: `-1Gi` is not a resource quantity: it is negative"
        );
        assert_eq!(
            load(&[("ALOFT_PYTHON__VENV", "venv")]),
            "invalid value for config key `python.venv`: `venv` is not an absolute path"
        );
        assert_eq!(
            load(&[("ALOFT_SCRATCH_DIR", "tmp")]),
            "invalid value for config key `scratch_dir`: `tmp` is not an absolute path"
        );
        assert!(load(&[("ALOFT_STORAGE__ROOT", "relative")]).starts_with("invalid value for config key `storage`: "));
    }

    #[test]
    fn printed_config_loads_back() {
        let text = aloft_runtime::config::to_toml(&Config::default());
        let back: Config = aloft_runtime::config::load_from(Some(("printed.toml", &text)), &[]).unwrap();
        assert_eq!(back, Config::default());
    }
}
