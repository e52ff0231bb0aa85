//! The environment of a task process (flyte contract 5.3).
//!
//! Built from nothing rather than inherited, so the executor's own settings (and secrets such as
//! `ALOFT_STORAGE__SECRET_KEY`) never leak into user code. Layers, later ones winning, in the
//! order Propeller's pods get them: the base (`PATH`, `HOME`, `TMPDIR`, ...), the template's
//! `container.env`, what the executor derives from the ids and its storage, then the command's
//! `env` (workflow, launch plan and the execution's `envs`).

use std::collections::BTreeMap;

use aloft_proto::aloft::v1::TaskRunCommand;

use super::ids::AttemptId;

/// How tasks reach an S3 store: copied from the executor's own storage settings.
///
/// No `FLYTE_AWS_ADDRESSING_STYLE`: flytekit 1.16 maps any value of it to virtual-host
/// addressing (`data_persistence.s3_setup_args`), which breaks path-style servers; without it,
/// botocore addresses a custom endpoint path-style.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Access {
    /// `FLYTE_AWS_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `FLYTE_AWS_ACCESS_KEY_ID`.
    pub access_key: Option<String>,
    /// `FLYTE_AWS_SECRET_ACCESS_KEY`.
    pub secret_key: Option<String>,
}

/// Everything the environment is made of besides the command itself.
#[derive(Debug, Clone, Default)]
pub struct Host<'a> {
    /// The configured Python virtualenv; its `bin` goes first on `PATH`.
    pub venv: Option<&'a str>,
    /// The executor's own `PATH` (system tools such as `tar` and `sh`).
    pub system_path: &'a str,
    /// `HOME`, in the attempt's scratch directory.
    pub home: &'a str,
    /// `TMPDIR`, in the attempt's scratch directory.
    pub tmpdir: &'a str,
    /// Set when the store is S3.
    pub s3: Option<&'a S3Access>,
    /// Variables copied from the executor's environment (the standard AWS chain when the store
    /// uses it, locale), below everything else.
    pub passthrough: &'a [(String, String)],
    /// Metadata's admin API (`host:port`), given to tasks as `FLYTE_PLATFORM_URL`: an eager
    /// workflow's task starts its sub-executions there with FlyteRemote.
    pub admin: Option<&'a str>,
}

/// The variables of the executor's environment a task may see: the AWS default chain (used when
/// the store has no static keys) and the locale.
pub const PASSTHROUGH: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "LANG",
    "LC_ALL",
];

/// The lowest layer of every task's environment: the passthrough variables, `PATH`, `VIRTUAL_ENV`,
/// `HOME`, `TMPDIR`, `PYTHONUNBUFFERED`. The warm Python runtime is started with exactly this, so a
/// task whose environment only adds to it can run there.
pub fn base_env(host: &Host<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    for (k, v) in host.passthrough {
        set(k, v);
    }
    let path = match host.venv {
        Some(venv) if host.system_path.is_empty() => format!("{}/bin", venv.trim_end_matches('/')),
        Some(venv) => format!("{}/bin:{}", venv.trim_end_matches('/'), host.system_path),
        None => host.system_path.to_string(),
    };
    set("PATH", &path);
    if let Some(venv) = host.venv {
        set("VIRTUAL_ENV", venv);
    }
    set("HOME", host.home);
    set("TMPDIR", host.tmpdir);
    // stdout and stderr share one log file; unbuffered output keeps them in the order written.
    set("PYTHONUNBUFFERED", "1");
    env
}

/// The task process's environment.
pub fn task_env(cmd: &TaskRunCommand, id: &AttemptId, host: &Host<'_>) -> BTreeMap<String, String> {
    let mut env = base_env(host);
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };

    let container_env = cmd.task.as_ref().and_then(super::container).map(|c| c.env.as_slice()).unwrap_or(&[]);
    for kv in container_env {
        set(&kv.key, &kv.value);
    }

    let exec = &id.execution;
    set("FLYTE_INTERNAL_EXECUTION_ID", &exec.name);
    set("FLYTE_INTERNAL_EXECUTION_PROJECT", &exec.project);
    set("FLYTE_INTERNAL_EXECUTION_DOMAIN", &exec.domain);
    if let Some(task) = cmd.id.as_ref().and_then(|i| i.task_id.as_ref()) {
        set("FLYTE_INTERNAL_TASK_PROJECT", &task.project);
        set("FLYTE_INTERNAL_TASK_DOMAIN", &task.domain);
        set("FLYTE_INTERNAL_TASK_NAME", &task.name);
        set("FLYTE_INTERNAL_TASK_VERSION", &task.version);
    }
    set("FLYTE_ATTEMPT_NUMBER", &id.attempt.to_string());
    if cmd.array_index >= 0 {
        set("BATCH_JOB_ARRAY_INDEX_VAR_NAME", "FLYTE_K8S_ARRAY_INDEX");
        set("FLYTE_K8S_ARRAY_INDEX", &cmd.array_index.to_string());
    }
    if let Some(admin) = host.admin {
        set("FLYTE_PLATFORM_URL", admin);
        // plaintext, like every other Aloft client; flytekit otherwise starts a TLS handshake
        set("FLYTE_PLATFORM_INSECURE", "True");
    }
    if let Some(s3) = host.s3 {
        if let Some(endpoint) = &s3.endpoint {
            set("FLYTE_AWS_ENDPOINT", endpoint);
        }
        if let Some(key) = &s3.access_key {
            set("FLYTE_AWS_ACCESS_KEY_ID", key);
        }
        if let Some(secret) = &s3.secret_key {
            set("FLYTE_AWS_SECRET_ACCESS_KEY", secret);
        }
    }

    for (k, v) in &cmd.env {
        set(k, v);
    }
    env
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{Container, KeyValuePair, task_template};

    use super::*;
    use crate::domain::ids::tests::command;

    fn host<'a>(s3: Option<&'a S3Access>, passthrough: &'a [(String, String)]) -> Host<'a> {
        Host {
            venv: Some("/opt/venv/"),
            system_path: "/usr/bin:/bin",
            home: "/scratch/a/home",
            tmpdir: "/scratch/a/tmp",
            s3,
            passthrough,
            admin: None,
        }
    }

    #[test]
    fn tasks_learn_the_admin_endpoint_for_eager_workflows() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let env = task_env(&cmd, &id, &Host { admin: Some("metadata:8089"), ..host(None, &[]) });
        assert_eq!(env.get("FLYTE_PLATFORM_URL").map(String::as_str), Some("metadata:8089"));
        assert_eq!(env.get("FLYTE_PLATFORM_INSECURE").map(String::as_str), Some("True"));
        let env = task_env(&cmd, &id, &host(None, &[]));
        assert!(!env.contains_key("FLYTE_PLATFORM_URL"));
    }

    #[test]
    fn derived_variables_follow_the_ids() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let env = task_env(&cmd, &id, &host(None, &[]));
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("FLYTE_INTERNAL_EXECUTION_ID"), Some("exec1"));
        assert_eq!(get("FLYTE_INTERNAL_EXECUTION_PROJECT"), Some("proj"));
        assert_eq!(get("FLYTE_INTERNAL_EXECUTION_DOMAIN"), Some("dev"));
        assert_eq!(get("FLYTE_INTERNAL_TASK_PROJECT"), Some("proj"));
        assert_eq!(get("FLYTE_INTERNAL_TASK_DOMAIN"), Some("dev"));
        assert_eq!(get("FLYTE_INTERNAL_TASK_NAME"), Some("wf.t1"));
        assert_eq!(get("FLYTE_INTERNAL_TASK_VERSION"), Some("v1"));
        assert_eq!(get("FLYTE_ATTEMPT_NUMBER"), Some("1"));
        assert_eq!(get("PATH"), Some("/opt/venv/bin:/usr/bin:/bin"));
        assert_eq!(get("VIRTUAL_ENV"), Some("/opt/venv/"));
        assert_eq!(get("HOME"), Some("/scratch/a/home"));
        assert_eq!(get("TMPDIR"), Some("/scratch/a/tmp"));
        assert_eq!(get("FLYTE_K8S_ARRAY_INDEX"), None, "not an array sub-task");
        assert!(!env.keys().any(|k| k.starts_with("FLYTE_AWS_")), "local store: no S3 settings");
    }

    #[test]
    fn layers_override_in_propeller_order() {
        let mut cmd = command();
        cmd.task.as_mut().unwrap().target = Some(task_template::Target::Container(Container {
            env: vec![
                KeyValuePair { key: "_F_SS_C".into(), value: "abc".into() },
                KeyValuePair { key: "FLYTE_INTERNAL_EXECUTION_ID".into(), value: "from-template".into() },
                KeyValuePair { key: "SHARED".into(), value: "template".into() },
            ],
            ..Default::default()
        }));
        cmd.env.insert("FLYTE_INTERNAL_EXECUTION_WORKFLOW".into(), "wf.my_wf".into());
        cmd.env.insert("SHARED".into(), "execution".into());
        cmd.array_index = 3;
        let passthrough = vec![("AWS_REGION".to_string(), "eu-west-1".to_string()), ("HOME".into(), "/root".into())];
        let id = AttemptId::from_command(&cmd).unwrap();
        let env = task_env(&cmd, &id, &host(None, &passthrough));
        assert_eq!(env["_F_SS_C"], "abc", "template env passes through unchanged");
        assert_eq!(env["FLYTE_INTERNAL_EXECUTION_ID"], "exec1", "derived ids win over the template");
        assert_eq!(env["SHARED"], "execution", "execution envs win over the template");
        assert_eq!(env["FLYTE_INTERNAL_EXECUTION_WORKFLOW"], "wf.my_wf");
        assert_eq!(env["BATCH_JOB_ARRAY_INDEX_VAR_NAME"], "FLYTE_K8S_ARRAY_INDEX");
        assert_eq!(env["FLYTE_K8S_ARRAY_INDEX"], "3");
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["HOME"], "/scratch/a/home", "passthrough is the lowest layer");
    }

    #[test]
    fn s3_store_settings_reach_the_task() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let s3 = S3Access {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some("ak".into()),
            secret_key: Some("sk".into()),
        };
        let env = task_env(&cmd, &id, &host(Some(&s3), &[]));
        assert_eq!(env["FLYTE_AWS_ENDPOINT"], "http://127.0.0.1:9000");
        assert_eq!(env["FLYTE_AWS_ACCESS_KEY_ID"], "ak");
        assert_eq!(env["FLYTE_AWS_SECRET_ACCESS_KEY"], "sk");
        // flytekit 1.16 turns any FLYTE_AWS_ADDRESSING_STYLE into virtual-host addressing, which
        // S3-compatible servers reached by IP cannot serve: it is never set.
        assert!(!env.contains_key("FLYTE_AWS_ADDRESSING_STYLE"));
        let chain = S3Access::default();
        let env = task_env(&cmd, &id, &host(Some(&chain), &[]));
        assert!(!env.keys().any(|k| k.starts_with("FLYTE_AWS_")), "default chain: nothing static to pass");
    }

    #[test]
    fn no_venv_keeps_the_system_path() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let env = task_env(&cmd, &id, &Host { venv: None, ..host(None, &[]) });
        assert_eq!(env["PATH"], "/usr/bin:/bin");
        assert!(!env.contains_key("VIRTUAL_ENV"));
    }
}
