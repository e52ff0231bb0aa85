//! Lineage queries on a graph of 100,000 edges, on SQLite and Postgres (docs/benchmarks.md).
//! Prints median and p95 per query; fails only when a query returns something wrong.
//!
//! `cargo bench -p aloft-lineage --bench graph_queries`; knobs: `ALOFT_BENCH_BACKENDS`
//! (`sqlite,postgres`), `ALOFT_BENCH_SCALE` (1.0 = 1,000 runs x 25 attempts x 4 edges),
//! `ALOFT_BENCH_ITERS` (50).

use std::time::{Duration, Instant};

use aloft_lineage::adapters::store::{Direction, Store};
use aloft_lineage::app::App;
use aloft_lineage::domain::export::Settings;
use aloft_lineage::domain::graph::{Edge, EdgeKind, Node, NodeKind, keys};
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;

const ATTEMPTS: usize = 25;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn node(key: String, kind: NodeKind) -> Node {
    Node { label: key.clone(), key, kind, project: "bench".into(), lookup: String::new(), attrs: Default::default() }
}

fn dataset(run: usize, step: usize) -> String {
    keys::dataset(&format!("s3://bench/raw/r{run}/d{step}.parquet"))
}

/// Runs of 25 chained attempts; each run starts from the previous run's last dataset, every
/// 10th attempt also reads one shared reference table. Each attempt has 4 edges, so 1,000 runs
/// make 100,000 edges.
fn graph(runs: usize) -> (Vec<Node>, Vec<Edge>) {
    let (mut nodes, mut edges) = (Vec::new(), Vec::new());
    let shared = keys::dataset("s3://bench/reference/countries.csv");
    nodes.push(node(shared.clone(), NodeKind::Dataset));
    for t in 0..ATTEMPTS {
        nodes.push(node(keys::entity("task", "bench", "d", &format!("t{t}"), "v1"), NodeKind::TaskVersion));
    }
    for r in 0..runs {
        let run = keys::run("bench", "d", &format!("r{r}"));
        nodes.push(node(run.clone(), NodeKind::Run));
        for a in 0..ATTEMPTS {
            let attempt = keys::attempt("bench", "d", &format!("r{r}"), &format!("n{a}"), 0);
            nodes.push(node(attempt.clone(), NodeKind::TaskAttempt));
            let input = if a == 0 && r > 0 { dataset(r - 1, ATTEMPTS) } else { dataset(r, a) };
            let output = dataset(r, a + 1);
            nodes.push(node(output.clone(), NodeKind::Dataset));
            edges.push(Edge::new(input, EdgeKind::Consumed, attempt.clone()));
            edges.push(Edge::new(attempt.clone(), EdgeKind::Produced, output));
            edges.push(Edge::new(attempt.clone(), EdgeKind::PartOf, run.clone()));
            // the fourth edge: the shared table for every 10th attempt, else its task version
            edges.push(if a % 10 == 5 {
                Edge::new(shared.clone(), EdgeKind::Consumed, attempt)
            } else {
                Edge::new(keys::entity("task", "bench", "d", &format!("t{a}"), "v1"), EdgeKind::Executed, attempt)
            });
        }
    }
    (nodes, edges)
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(samples[(samples.len() * 95 / 100).min(samples.len() - 1)]))
}

async fn measure<F, Fut>(name: &str, iters: usize, mut f: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for i in 0..5 {
        f(i).await;
    }
    let mut samples = Vec::with_capacity(iters);
    let mut size = 0;
    for i in 0..iters {
        let t = Instant::now();
        size = f(i).await;
        samples.push(t.elapsed());
    }
    let (median, p95) = stats(samples);
    println!("  {name:<58} median {median:>8.2} ms   p95 {p95:>8.2} ms   ({size} nodes)");
}

async fn bench(backend: &str, url: &str, runs: usize, iters: usize) {
    let store = Store::connect(url).await.expect("connect");
    let (nodes, edges) = graph(runs);
    let started = Instant::now();
    store.bulk_load(&nodes, &edges, 2000).await.expect("load");
    println!(
        "{backend}: {} nodes, {} edges loaded in {:.1} s",
        nodes.len(),
        edges.len(),
        started.elapsed().as_secs_f64()
    );
    let app = App::new(store.clone(), None, None, Settings::default());
    let mid = runs / 2;
    let last = runs - 1;
    measure("downstream(dataset, depth 5)", iters, |i| {
        let app = app.clone();
        async move {
            let g = app.walk(&dataset((mid + i) % runs, 3), Direction::Downstream, 5, 0, &[]).await.expect("walk");
            assert!(g.nodes.len() > 5, "downstream must find the chain");
            g.nodes.len()
        }
    })
    .await;
    measure("upstream(dataset, depth 20)", iters, |i| {
        let app = app.clone();
        async move {
            let g =
                app.walk(&dataset((last - i) % runs, ATTEMPTS), Direction::Upstream, 20, 0, &[]).await.expect("walk");
            assert!(g.nodes.len() > 20);
            g.nodes.len()
        }
    })
    .await;
    measure("upstream(last dataset, depth 100, max 10,000 nodes)", iters.min(10), |_| {
        let app = app.clone();
        async move {
            let g = app.walk(&dataset(last, ATTEMPTS), Direction::Upstream, 100, 10_000, &[]).await.expect("walk");
            g.nodes.len()
        }
    })
    .await;
    measure("run lineage (25 attempts)", iters, |i| {
        let app = app.clone();
        async move {
            let id = WorkflowExecutionIdentifier {
                project: "bench".into(),
                domain: "d".into(),
                name: format!("r{}", (mid + i) % runs),
                org: String::new(),
            };
            let g = app.run_lineage(&id).await.expect("run lineage");
            assert!(g.nodes.len() > ATTEMPTS * 2);
            g.nodes.len()
        }
    })
    .await;
    measure("runs using a dataset read by every run", iters.min(20), |_| {
        let app = app.clone();
        async move {
            let (_, runs_found, _) = app.runs_using_dataset("s3://bench/reference/countries.csv").await.expect("runs");
            assert_eq!(runs_found.len(), runs);
            runs_found.len()
        }
    })
    .await;
    store.close().await;
}

fn main() {
    if !aloft_testkit::benchmark_requested("cargo bench -p aloft-lineage --bench graph_queries") {
        return;
    }
    let scale = env_f64("ALOFT_BENCH_SCALE", 1.0);
    let iters = env_f64("ALOFT_BENCH_ITERS", 50.0) as usize;
    let runs = ((1000.0 * scale) as usize).max(4);
    let backends = std::env::var("ALOFT_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for backend in backends.split(',').map(str::trim) {
            match backend {
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    bench("sqlite", &format!("sqlite://{}", dir.path().join("bench.db").display()), runs, iters).await;
                }
                "postgres" => {
                    let url = aloft_testkit::fresh_postgres_url("lbench").await;
                    bench("postgres", &url, runs, iters).await;
                }
                other => panic!("ALOFT_BENCH_BACKENDS: unknown backend {other}"),
            }
        }
    });
}
