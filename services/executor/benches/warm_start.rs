//! Python task start latency, cold (a fresh `pyflyte-execute` process) against warm (a child forked
//! by the warm runtime's fork server), with the venv of `scripts/dev-deps.sh`:
//!
//! ```sh
//! cargo bench -p aloft-executor --bench warm_start            # ALOFT_BENCH_ITERATIONS=N to change
//! ```
//!
//! Each run starts one real flytekit task through the executor's own start paths
//! (`runner::spawn`, `warm::Server::spawn`) with the environment and arguments the executor gives
//! it. "start" is the time from the start request to the first line of the task function (flytekit
//! has parsed its arguments, set up the execution context and read the inputs); "total" is until
//! the process has exited, with `outputs.pb` written. Attempts run one at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aloft_executor::domain::outcome::ProcessEnd;
use aloft_executor::runner::{self, Process, Stop};
use aloft_executor::warm::Server;
use aloft_proto::flyteidl::core::{Literal, LiteralMap, Primitive, Scalar, literal, primitive, scalar};
use prost::Message as _;

const MODULE: &str = "aloft_bench_tasks";
const TASKS_PY: &str = r#"
import os
import time

from flytekit import task


@task
def first(a: int) -> int:
    with open(os.environ["ALOFT_BENCH_MARK"], "w") as f:
        f.write(repr(time.time()))
    return a + 1
"#;

struct Sample {
    start: Duration,
    total: Duration,
}

struct Bench {
    venv: PathBuf,
    dir: PathBuf,
    inputs: PathBuf,
    bundle: PathBuf,
    runs: usize,
}

impl Bench {
    fn process(&self, fast: bool) -> (Process, PathBuf) {
        let run = self.dir.join(format!("run-{}", self.runs));
        let (work, home, tmp, out) = (run.join("work"), run.join("home"), run.join("tmp"), run.join("out"));
        for d in [&work, &home, &tmp, &out] {
            std::fs::create_dir_all(d).unwrap();
        }
        let venv = self.venv.display().to_string();
        let mark = run.join("mark");
        let mut env: BTreeMap<String, String> = [
            ("PATH", format!("{venv}/bin:/usr/local/bin:/usr/bin:/bin")),
            ("VIRTUAL_ENV", venv.clone()),
            ("HOME", home.display().to_string()),
            ("TMPDIR", tmp.display().to_string()),
            ("PYTHONUNBUFFERED", "1".into()),
            ("FLYTE_INTERNAL_EXECUTION_ID", format!("bench{}", self.runs)),
            ("FLYTE_INTERNAL_EXECUTION_PROJECT", "bench".into()),
            ("FLYTE_INTERNAL_EXECUTION_DOMAIN", "development".into()),
            ("FLYTE_INTERNAL_TASK_PROJECT", "bench".into()),
            ("FLYTE_INTERNAL_TASK_DOMAIN", "development".into()),
            ("FLYTE_INTERNAL_TASK_NAME", format!("{MODULE}.first")),
            ("FLYTE_INTERNAL_TASK_VERSION", "v1".into()),
            ("FLYTE_ATTEMPT_NUMBER", "0".into()),
            ("ALOFT_BENCH_MARK", mark.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut args: Vec<String> = vec![];
        if fast {
            args.extend(["--additional-distribution".into(), self.bundle.display().to_string()]);
            args.extend(["--dest-dir".into(), work.display().to_string(), "--".into(), "pyflyte-execute".into()]);
        } else {
            env.insert("PYTHONPATH".into(), self.dir.join("code").display().to_string());
        }
        args.extend(
            [
                "--inputs",
                &self.inputs.display().to_string(),
                "--output-prefix",
                &out.display().to_string(),
                "--raw-output-data-prefix",
                &run.join("raw").display().to_string(),
                "--resolver",
                "flytekit.core.python_auto_container.default_task_resolver",
                "--",
                "task-module",
                MODULE,
                "task-name",
                "first",
            ]
            .map(String::from),
        );
        let program = if fast { "pyflyte-fast-execute" } else { "pyflyte-execute" };
        let process =
            Process { program: program.into(), args, env, cwd: work, log: run.join("task.log"), groups: None };
        (process, mark)
    }

    async fn once(&mut self, server: Option<&Server>, fast: bool) -> Sample {
        self.runs += 1;
        let (process, mark) = self.process(fast);
        let requested = SystemTime::now();
        let clock = Instant::now();
        let running = match server {
            Some(server) => {
                let script = self.venv.join("bin").join(&process.program);
                server.spawn(&script, &process).await.expect("warm start")
            }
            None => runner::spawn(&process).expect("cold start"),
        };
        let end = running.wait(None, Duration::from_secs(5), std::future::pending::<Stop>()).await;
        let total = clock.elapsed();
        let log = std::fs::read_to_string(&process.log).unwrap_or_default();
        assert_eq!(end, ProcessEnd::Exited(0), "{log}");
        let out = process.args[process.args.iter().position(|a| a == "--output-prefix").unwrap() + 1].clone();
        assert!(Path::new(&out).join("outputs.pb").exists(), "no outputs: {log}");
        let marked: f64 = std::fs::read_to_string(&mark).expect("the task ran").parse().unwrap();
        let since_epoch = requested.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        Sample { start: Duration::from_secs_f64((marked - since_epoch).max(0.0)), total }
    }
}

fn quantiles(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.0), at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, samples: &[Sample]) {
    let (s_min, s_med, s_p90) = quantiles(samples.iter().map(|s| s.start).collect());
    let (_, t_med, t_p90) = quantiles(samples.iter().map(|s| s.total).collect());
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        samples.len(),
        ms(s_med),
        ms(s_p90),
        ms(s_min),
        ms(t_med),
        ms(t_p90)
    );
}

fn main() {
    if !aloft_testkit::benchmark_requested("cargo bench -p aloft-executor --bench warm_start") {
        return;
    }
    let iterations: usize = std::env::var("ALOFT_BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let venv = aloft_testkit::deps().python_venv.clone();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let code = dir.join("code");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join(format!("{MODULE}.py")), TASKS_PY).unwrap();
        let bundle = dir.join("fastbench.tar.gz");
        let tar = std::process::Command::new("tar").arg("-czf").arg(&bundle).arg("-C").arg(&code).arg(".").status();
        assert!(tar.unwrap().success(), "tar failed");
        let one = Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(1)) })),
            }))),
            ..Default::default()
        };
        let inputs = dir.join("inputs.pb");
        let map = LiteralMap { literals: [("a".to_string(), one)].into_iter().collect() };
        std::fs::write(&inputs, map.encode_to_vec()).unwrap();
        let mut bench = Bench { venv: venv.clone(), dir: dir.clone(), inputs, bundle, runs: 0 };

        let interpreter = venv.join("bin").join("python").display().to_string();
        let server_env: BTreeMap<String, String> = [
            ("PATH".to_string(), format!("{}/bin:/usr/local/bin:/usr/bin:/bin", venv.display())),
            ("VIRTUAL_ENV".to_string(), venv.display().to_string()),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ]
        .into_iter()
        .collect();
        let ready = Instant::now();
        let server = Server::start(&interpreter, &dir, &server_env).await.expect("fork server");
        let ready = ready.elapsed();

        // One of each first: page cache, bytecode, the server's first fork.
        bench.once(None, false).await;
        bench.once(Some(&server), false).await;
        let mut results: Vec<(&str, Vec<Sample>)> = Vec::new();
        for (name, warm, fast) in [
            ("cold `pyflyte-execute`", false, false),
            ("warm `pyflyte-execute`", true, false),
            ("cold `pyflyte-fast-execute` (bundle)", false, true),
            ("warm `pyflyte-fast-execute` (bundle)", true, true),
        ] {
            let mut samples = Vec::new();
            for _ in 0..iterations {
                samples.push(bench.once(warm.then_some(&server), fast).await);
            }
            results.push((name, samples));
        }
        println!("fork server ready in {} ms (once per executor)\n", ms(ready));
        println!("| path | runs | start median (ms) | start p90 | start min | total median (ms) | total p90 |");
        println!("|---|---|---|---|---|---|---|");
        for (name, samples) in &results {
            row(name, samples);
        }
        server.stop().await;
    });
}
