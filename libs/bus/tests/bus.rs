//! Integration tests against the real nats-server (JetStream) started by `scripts/dev-deps.sh`.
//!
//! Every test gets its own stream prefix and subject prefix from `unique_name`, so tests run in
//! parallel on one server without seeing each other's streams or messages.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aloft_bus::{Bus, BusConfig, Error, EventKind, StreamKind, TraceContext};
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::{Envelope, ExecuteCommand, TaskRunCommand};
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use aloft_proto::flyteidl::event::WorkflowExecutionEvent;
use anyhow::{Context as _, Result, ensure};

/// Long enough for a message that is there to arrive; short enough to keep "nothing arrives"
/// checks quick.
const SHORT: Duration = Duration::from_millis(300);

fn config(tag: &str) -> BusConfig {
    let ns = aloft_testkit::unique_name(tag);
    BusConfig {
        url: aloft_testkit::deps().nats_url.clone(),
        stream_prefix: ns.to_uppercase(),
        subject_prefix: ns,
        ack_wait: Duration::from_secs(1),
        max_deliver: 5,
        ..Default::default()
    }
}

async fn bus(config: BusConfig) -> Result<Bus> {
    let bus = Bus::connect(config).await?;
    bus.ensure().await?;
    Ok(bus)
}

fn exec_id(project: &str, domain: &str, name: &str) -> WorkflowExecutionIdentifier {
    WorkflowExecutionIdentifier {
        project: project.into(),
        domain: domain.into(),
        name: name.into(),
        org: String::new(),
    }
}

fn execute(id: &str) -> Envelope {
    Envelope {
        id: id.into(),
        created_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        source: "metadata".into(),
        body: Some(Body::Execute(ExecuteCommand {
            execution_id: Some(exec_id("flytesnacks", "development", id)),
            closure_uri: format!("s3://bucket/{id}/closure.pb"),
            ..Default::default()
        })),
    }
}

fn task_run(id: &str, queue: &str) -> Envelope {
    Envelope {
        id: id.into(),
        source: "scheduler".into(),
        body: Some(Body::TaskRun(TaskRunCommand {
            queue: queue.into(),
            inputs_uri: format!("s3://b/{id}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn workflow_event(id: &str, project: &str, domain: &str) -> Envelope {
    Envelope {
        id: id.into(),
        source: "scheduler".into(),
        body: Some(Body::WorkflowEvent(WorkflowExecutionEvent {
            execution_id: Some(exec_id(project, domain, "e1")),
            phase: 2,
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn commands_consumer(bus: &Bus) -> Result<aloft_bus::Consumer> {
    Ok(bus.consumer("scheduler", &[], StreamKind::Commands).await?)
}

#[tokio::test]
async fn publish_and_consume_a_typed_envelope() -> Result<()> {
    let bus = bus(config("rt")).await?;
    let sent = execute("exec-1");
    let published = bus.publish(&sent).await?;
    ensure!(!published.duplicate);
    ensure!(published.subject == bus.topology().execute_subject());
    ensure!(published.stream == bus.topology().stream_name(StreamKind::Commands));

    let consumer = commands_consumer(&bus).await?;
    let started = Instant::now();
    // The wait outlasts ack_wait: fetch must return what it has, not hold it until redelivery.
    let mut got = consumer.fetch(10, Duration::from_secs(5)).await?;
    ensure!(started.elapsed() < Duration::from_secs(1), "fetch held its message for {:?}", started.elapsed());
    ensure!(got.len() == 1, "expected one delivery, got {got:?}");
    let delivery = got.remove(0);
    ensure!(delivery.envelope() == &sent, "decoded envelope differs: {:?}", delivery.envelope());
    ensure!(delivery.delivered() == 1);
    ensure!(delivery.subject() == published.subject);
    ensure!(delivery.stream_sequence() == published.sequence);
    ensure!(delivery.headers().get("Nats-Msg-Id").map(String::as_str) == Some("exec-1"));
    ensure!(delivery.trace().is_empty());
    delivery.ack().await?;

    // Acked on a work queue: gone for good, even after ack_wait.
    ensure!(consumer.fetch(10, Duration::from_millis(1500)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn message_stream_yields_deliveries() -> Result<()> {
    let bus = bus(config("ms")).await?;
    let consumer = bus.consumer("executor", &[], StreamKind::Tasks).await?;
    let mut deliveries = consumer.messages().await?;
    for i in 0..3 {
        bus.publish(&task_run(&format!("run-{i}"), "default")).await?;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(5), deliveries.next())
            .await
            .context("no delivery within 5s")?
            .context("stream ended")??;
        ids.push(d.envelope().id.clone());
        d.ack().await?;
    }
    ensure!(ids == ["run-0", "run-1", "run-2"], "{ids:?}");
    Ok(())
}

#[tokio::test]
async fn duplicate_id_is_dropped() -> Result<()> {
    let bus = bus(config("dup")).await?;
    let first = bus.publish(&execute("exec-dup")).await?;
    let mut retry = execute("exec-dup");
    retry.source = "metadata-retry".into();
    let second = bus.publish(&retry).await?;
    ensure!(!first.duplicate);
    ensure!(second.duplicate, "second publish with the same id must be a duplicate");
    ensure!(second.sequence == first.sequence);

    let consumer = commands_consumer(&bus).await?;
    let got = consumer.fetch(10, Duration::from_secs(1)).await?;
    ensure!(got.len() == 1, "consumer must see one message, got {got:?}");
    ensure!(got[0].envelope().source == "metadata", "the first copy is kept");
    for d in got {
        d.ack().await?;
    }
    Ok(())
}

#[tokio::test]
async fn nak_with_delay_redelivers_later_with_a_higher_count() -> Result<()> {
    let bus = bus(config("nak")).await?;
    bus.publish(&execute("exec-nak")).await?;
    let consumer = commands_consumer(&bus).await?;

    let first = consumer.fetch(1, Duration::from_secs(2)).await?.pop().context("first delivery")?;
    ensure!(first.delivered() == 1);
    let naked_at = Instant::now();
    first.nak_with_delay(Duration::from_millis(800)).await?;

    // Not before the delay...
    ensure!(consumer.fetch(1, SHORT).await?.is_empty(), "redelivered before the nak delay");
    // ...but after it.
    let again = consumer.fetch(1, Duration::from_secs(3)).await?.pop().context("redelivery after nak")?;
    ensure!(naked_at.elapsed() >= Duration::from_millis(700), "redelivered after {:?}", naked_at.elapsed());
    ensure!(again.delivered() == 2, "delivery count {}", again.delivered());
    ensure!(again.envelope().id == "exec-nak");
    again.ack().await?;
    Ok(())
}

#[tokio::test]
async fn unacked_message_is_redelivered_after_ack_wait() -> Result<()> {
    let bus = bus(config("wait")).await?;
    bus.publish(&execute("exec-wait")).await?;
    let consumer = commands_consumer(&bus).await?;
    let first = consumer.fetch(1, Duration::from_secs(2)).await?.pop().context("first delivery")?;
    drop(first);
    let again = consumer.fetch(1, Duration::from_secs(3)).await?.pop().context("redelivery after ack_wait")?;
    ensure!(again.delivered() == 2);
    again.ack().await?;
    Ok(())
}

#[tokio::test]
async fn term_stops_redelivery() -> Result<()> {
    let bus = bus(config("term")).await?;
    bus.publish(&execute("exec-term")).await?;
    let consumer = commands_consumer(&bus).await?;
    let d = consumer.fetch(1, Duration::from_secs(2)).await?.pop().context("delivery")?;
    d.term().await?;
    // Well past ack_wait (1s): a non-terminated message would be back by now.
    ensure!(consumer.fetch(1, Duration::from_millis(2500)).await?.is_empty(), "terminated message came back");
    Ok(())
}

#[tokio::test]
async fn in_progress_extends_ack_wait() -> Result<()> {
    let bus = bus(config("prog")).await?;
    bus.publish(&execute("exec-long")).await?;
    let worker = commands_consumer(&bus).await?;
    // A second process pulling from the same durable: it would get the message if its ack_wait
    // ran out.
    let other = commands_consumer(&bus).await?;

    let d = worker.fetch(1, Duration::from_secs(2)).await?.pop().context("delivery")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        d.in_progress().await?;
        ensure!(other.fetch(1, Duration::from_millis(400)).await?.is_empty(), "redelivered despite heartbeats");
    }
    d.ack().await?;
    ensure!(other.fetch(1, Duration::from_millis(1500)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn keep_alive_heartbeats_until_dropped() -> Result<()> {
    let bus = bus(config("keep")).await?;
    bus.publish(&execute("exec-keep")).await?;
    let worker = commands_consumer(&bus).await?;
    let other = commands_consumer(&bus).await?;

    let d = worker.fetch(1, Duration::from_secs(2)).await?.pop().context("delivery")?;
    let heartbeat = d.keep_alive(Duration::from_millis(300));
    ensure!(other.fetch(1, Duration::from_millis(2500)).await?.is_empty(), "redelivered despite keep_alive");
    // Once the heartbeats stop, ack_wait runs out and the message goes to another worker.
    drop(heartbeat);
    let again = other.fetch(1, Duration::from_secs(3)).await?.pop().context("redelivery after keep_alive stopped")?;
    ensure!(again.delivered() == 2);
    again.ack().await?;
    Ok(())
}

#[tokio::test]
async fn work_queue_consumers_on_one_durable_share_without_duplicates() -> Result<()> {
    let cfg = config("wq");
    let bus_a = bus(cfg.clone()).await?;
    let bus_b = Bus::connect(cfg).await?;
    let total = 30;
    for i in 0..total {
        bus_a.publish(&task_run(&format!("run-{i:02}"), "gpu")).await?;
    }
    let filter = vec![bus_a.topology().task_run_subject("gpu")?];
    let mut workers = Vec::new();
    for b in [bus_a.clone(), bus_b] {
        let consumer = b.consumer("executor-gpu", &filter, StreamKind::Tasks).await?;
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let batch = consumer.fetch(2, Duration::from_millis(700)).await?;
                if batch.is_empty() {
                    return anyhow::Ok(seen);
                }
                for d in batch {
                    // Simulated work, so both workers get a share.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    seen.push(d.envelope().id.clone());
                    d.ack().await?;
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for w in workers {
        let seen = w.await??;
        shares.push(seen.len());
        all.extend(seen);
    }
    let distinct: HashSet<_> = all.iter().collect();
    ensure!(all.len() == total, "{} deliveries for {total} messages: {all:?}", all.len());
    ensure!(distinct.len() == total, "duplicates delivered: {all:?}");
    ensure!(shares.iter().all(|&n| n > 0), "one worker got nothing: {shares:?}");

    // Work-queue retention: acked messages leave the stream.
    let js = async_nats::jetstream::new(bus_a.client());
    let mut stream = js.get_stream(bus_a.topology().stream_name(StreamKind::Tasks)).await?;
    ensure!(stream.info().await?.state.messages == 0, "acked messages remain in the work queue");
    Ok(())
}

#[tokio::test]
async fn max_deliver_bounds_redelivery() -> Result<()> {
    let bus = bus(BusConfig { max_deliver: 2, ..config("maxd") }).await?;
    bus.publish(&execute("exec-fail")).await?;
    let consumer = commands_consumer(&bus).await?;
    for attempt in 1..=2 {
        let d = consumer.fetch(1, Duration::from_secs(2)).await?.pop().with_context(|| format!("attempt {attempt}"))?;
        ensure!(d.delivered() == attempt);
        d.nak().await?;
    }
    ensure!(consumer.fetch(1, Duration::from_millis(2500)).await?.is_empty(), "delivered beyond max_deliver");
    Ok(())
}

#[tokio::test]
async fn poison_message_is_terminated_not_redelivered() -> Result<()> {
    let bus = bus(config("poison")).await?;
    let subject = bus.topology().execute_subject();
    let js = async_nats::jetstream::new(bus.client());
    // Not a protobuf Envelope: a truncated varint tag.
    js.publish(subject, vec![0xff_u8, 0xff, 0xff, 0xff].into()).await?.await?;
    bus.publish(&execute("exec-after-poison")).await?;

    let consumer = commands_consumer(&bus).await?;
    let got = consumer.fetch(10, Duration::from_secs(2)).await?;
    let ids: Vec<_> = got.iter().map(|d| d.envelope().id.clone()).collect();
    ensure!(ids == ["exec-after-poison"], "{ids:?}");
    for d in got {
        d.ack().await?;
    }
    // Past ack_wait: the poison message was terminated, not left to time out.
    ensure!(consumer.fetch(10, Duration::from_millis(2500)).await?.is_empty(), "poison message redelivered");
    let info =
        js.get_stream(bus.topology().stream_name(StreamKind::Commands)).await?.consumer_info("scheduler").await?;
    ensure!(info.num_ack_pending == 0, "ack pending: {}", info.num_ack_pending);
    Ok(())
}

#[tokio::test]
async fn trace_headers_round_trip() -> Result<()> {
    let bus = bus(config("trace")).await?;
    let trace = TraceContext {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("aloft=1,congo=t61rcWkgMzE".into()),
    };
    bus.publish_with_trace(&workflow_event("evt-1", "p", "d"), &trace).await?;
    // A malformed parent is dropped, not fatal.
    bus.publish_with_trace(&workflow_event("evt-2", "p", "d"), &TraceContext::new("garbage")).await?;

    let consumer = bus.consumer("notifier", &[], StreamKind::Events).await?;
    let got = consumer.fetch(10, Duration::from_secs(2)).await?;
    ensure!(got.len() == 2);
    ensure!(got[0].trace() == &trace, "{:?}", got[0].trace());
    ensure!(got[0].headers().get("traceparent") == trace.traceparent.as_ref());
    ensure!(got[1].trace().is_empty(), "{:?}", got[1].trace());
    for d in got {
        d.ack().await?;
    }
    Ok(())
}

#[tokio::test]
async fn events_fan_out_to_every_durable_and_filter_by_project() -> Result<()> {
    let bus = bus(config("fan")).await?;
    for (i, (project, domain)) in [("p1", "dev"), ("p2", "dev"), ("p1", "prod"), ("odd.name", "dev")].iter().enumerate()
    {
        bus.publish(&workflow_event(&format!("evt-{i}"), project, domain)).await?;
    }
    let t = bus.topology();
    // Created after the events were published: deliver-all still gives them everything.
    let metadata = bus.consumer("metadata", &[], StreamKind::Events).await?;
    let lineage = bus.consumer("lineage", &[], StreamKind::Events).await?;
    let p1 = bus
        .consumer("p1-watcher", &[t.events_filter(Some(EventKind::Workflow), Some("p1"), None)], StreamKind::Events)
        .await?;
    let odd = bus.consumer("odd", &[t.events_filter(None, Some("odd.name"), Some("dev"))], StreamKind::Events).await?;

    let ids = |ds: Vec<aloft_bus::Delivery>| ds.iter().map(|d| d.envelope().id.clone()).collect::<Vec<_>>();
    let all = vec!["evt-0", "evt-1", "evt-2", "evt-3"];
    ensure!(ids(metadata.fetch(10, Duration::from_secs(1)).await?) == all);
    ensure!(ids(lineage.fetch(10, Duration::from_secs(1)).await?) == all);
    ensure!(ids(p1.fetch(10, Duration::from_secs(1)).await?) == ["evt-0", "evt-2"]);
    ensure!(ids(odd.fetch(10, Duration::from_secs(1)).await?) == ["evt-3"]);
    Ok(())
}

#[tokio::test]
async fn prefixes_isolate_buses() -> Result<()> {
    let one = bus(config("iso")).await?;
    let two = bus(config("iso")).await?;
    one.publish(&execute("only-in-one")).await?;
    ensure!(commands_consumer(&two).await?.fetch(10, SHORT).await?.is_empty());
    ensure!(commands_consumer(&one).await?.fetch(10, Duration::from_secs(1)).await?.len() == 1);
    Ok(())
}

#[tokio::test]
async fn ensure_and_consumer_are_idempotent() -> Result<()> {
    let cfg = config("idem");
    let bus = bus(cfg.clone()).await?;
    bus.ensure().await?;
    bus.publish(&execute("exec-idem")).await?;
    commands_consumer(&bus).await?;
    commands_consumer(&bus).await?;

    // Another service starting later with a changed ack_wait updates streams and consumer in
    // place; the message published before is still there.
    let later = Bus::connect(BusConfig { ack_wait: Duration::from_secs(2), ..cfg }).await?;
    later.ensure().await?;
    later.ensure().await?;
    let consumer = commands_consumer(&later).await?;
    let js = async_nats::jetstream::new(later.client());
    let info =
        js.get_stream(later.topology().stream_name(StreamKind::Commands)).await?.consumer_info("scheduler").await?;
    ensure!(info.config.ack_wait == Duration::from_secs(2), "ack_wait not updated: {:?}", info.config.ack_wait);
    let got = consumer.fetch(10, Duration::from_secs(1)).await?;
    ensure!(got.len() == 1);
    Ok(())
}

#[tokio::test]
async fn consumer_filters_are_checked() -> Result<()> {
    let bus = bus(config("filt")).await?;
    let err = bus.consumer("x", &["elsewhere.>".into()], StreamKind::Commands).await.unwrap_err();
    ensure!(matches!(err, Error::FilterOutsideStream { .. }), "{err}");
    let err = bus.consumer("bad.name", &[], StreamKind::Commands).await.unwrap_err();
    ensure!(err.to_string().contains("bad.name"), "{err}");
    Ok(())
}

#[tokio::test]
async fn invalid_envelopes_are_refused_before_sending() -> Result<()> {
    let bus = bus(config("inv")).await?;
    let err = bus.publish(&Envelope { id: "x".into(), ..Default::default() }).await.unwrap_err();
    ensure!(err.to_string().contains("no body"), "{err}");
    let err = bus.publish(&execute("")).await.unwrap_err();
    ensure!(err.to_string().contains("id is empty"), "{err}");
    Ok(())
}

#[tokio::test]
async fn kv_compare_and_set() -> Result<()> {
    let bus = bus(config("kv")).await?;
    let kv = bus.kv_bucket("executions").await?;
    // Opening it again is fine (every scheduler replica does).
    let kv2 = bus.kv_bucket("executions").await?;
    let key = "exec/flytesnacks/development/e1";

    ensure!(kv.get(key).await?.is_none());
    let r1 = kv.create(key, "queued".into()).await?;
    let err = kv2.create(key, "other".into()).await.unwrap_err();
    ensure!(matches!(&err, Error::Conflict { expected: None, .. }), "{err}");
    ensure!(err.is_conflict() && err.to_string().contains(key), "{err}");

    let r2 = kv.update(key, "running".into(), r1).await?;
    ensure!(r2 > r1);
    // A replica that read r1 loses the race.
    let err = kv2.update(key, "failed".into(), r1).await.unwrap_err();
    ensure!(matches!(err, Error::Conflict { expected: Some(r), .. } if r == r1), "{err}");
    let entry = kv2.get(key).await?.context("entry")?;
    ensure!(entry.value == "running" && entry.revision == r2);

    ensure!(kv.delete(key, r1).await.unwrap_err().is_conflict());
    kv.delete(key, r2).await?;
    ensure!(kv.get(key).await?.is_none());
    // A deleted key can be created again.
    kv.create(key, "queued-again".into()).await?;
    Ok(())
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_fast_naming_the_url() -> Result<()> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let err = Bus::connect(BusConfig { url: url.clone(), ..Default::default() }).await.unwrap_err();
    ensure!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    ensure!(err.to_string().contains(&url), "{err}");
    Ok(())
}

#[tokio::test]
async fn connect_to_a_silent_server_times_out_naming_the_url() -> Result<()> {
    // Accepts TCP connections but never sends INFO, like a hung server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("nats://{}", listener.local_addr()?);
    let _accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err =
        Bus::connect(BusConfig { url: url.clone(), connect_timeout: Duration::from_millis(500), ..Default::default() })
            .await
            .unwrap_err();
    ensure!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    ensure!(err.to_string().contains(&url), "{err}");
    Ok(())
}

/// Teardown deletes this prefix's streams and buckets and nothing of another prefix.
#[tokio::test]
async fn teardown_deletes_only_its_own_streams_and_buckets() -> Result<()> {
    let (mine, other) = (bus(config("teardown")).await?, bus(config("teardown")).await?);
    mine.kv_bucket("state").await?;
    other.kv_bucket("state").await?;
    assert_eq!(mine.teardown().await?, 4, "three streams and one bucket");
    assert_eq!(mine.teardown().await?, 0, "nothing left");
    // the other deployment still works
    other.kv_bucket("state").await?.create("k", "v".into()).await?;
    assert_eq!(other.teardown().await?, 4);
    Ok(())
}

/// `process_by_key`: one execution's messages in order, different executions side by side, and
/// every message acked once handled.
#[tokio::test]
async fn process_by_key_orders_within_a_key_and_overlaps_keys() -> Result<()> {
    use std::sync::{Arc, Mutex};
    let bus = bus(config("pk")).await?;
    for i in 0..3 {
        for exec in ["a", "b"] {
            let mut env = execute(&format!("{exec}-{i}"));
            if let Some(Body::Execute(cmd)) = env.body.as_mut() {
                cmd.execution_id = Some(exec_id("p", "d", exec));
            }
            bus.publish(&env).await?;
        }
    }
    let consumer = commands_consumer(&bus).await?;
    let log = Arc::new(Mutex::new(Vec::<(String, &'static str)>::new()));
    let shutdown = aloft_runtime::Shutdown::new();
    let started = Instant::now();
    let run = consumer.process_by_key(10, 4, &shutdown, aloft_bus::execution_key, |env| {
        let (log, shutdown) = (log.clone(), shutdown.clone());
        async move {
            log.lock().unwrap().push((env.id.clone(), "start"));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut l = log.lock().unwrap();
            l.push((env.id.clone(), "end"));
            if l.iter().filter(|(_, e)| *e == "end").count() == 6 {
                shutdown.cancel();
            }
            aloft_bus::Handled::Done
        }
    });
    tokio::time::timeout(Duration::from_secs(10), run).await.context("process_by_key did not finish")?;
    let elapsed = started.elapsed();
    let log = log.lock().unwrap().clone();
    for exec in ["a", "b"] {
        let mine: Vec<_> = log.iter().filter(|(id, _)| id.starts_with(exec)).cloned().collect();
        let want: Vec<_> =
            (0..3).flat_map(|i| [(format!("{exec}-{i}"), "start"), (format!("{exec}-{i}"), "end")]).collect();
        ensure!(mine == want, "{exec}'s messages out of order or overlapping: {mine:?}");
    }
    // 3 × 200 ms per key; run one key after the other it would take 1.2 s
    ensure!(elapsed < Duration::from_millis(1100), "keys did not overlap: {elapsed:?}");
    ensure!(consumer.fetch(10, Duration::from_millis(1500)).await?.is_empty(), "something was not acked");
    Ok(())
}
