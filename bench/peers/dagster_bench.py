#!/usr/bin/env python3
"""Peer benchmark: Dagster, jobs of no-op ops run with execute_in_process.

Runs the three no-op workloads (W1 chain of 50, W2 fan-out 100 + join,
W3 100 concurrent runs of a 3-op chain) and prints ONE JSON object on stdout.
Progress/diagnostics go to stderr. See README.md in this directory.

Environment:
  ALOFT_BENCH_REPEAT            repetitions per workload (default 3, median reported)
  ALOFT_BENCH_DAGSTER_INSTANCE  ephemeral (default): execute_in_process's default
                                in-memory instance, a fresh one per run;
                                sqlite: one on-disk instance (temporary DAGSTER_HOME,
                                default sqlite run/event storage, local compute logs),
                                as `dagster dev` uses. Slower: ~2-3 min at REPEAT=3.
  ALOFT_BENCH_DAGSTER_W3_POOL   process (default) or thread: how the 100 W3 runs
                                are executed concurrently (thread + sqlite is refused:
                                Dagster's on-disk instance deadlocks in logging setup
                                when several runs start in threads of one process).
  ALOFT_BENCH_DAGSTER_W3_WORKERS  pool size for W3 (default 4)
  ALOFT_BENCH_DAGSTER_LOG_LEVEL   console logger level for runs (default WARNING)
"""

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import W1_LEN, W2_FAN, W3_LEN, W3_RUNS, aggregate, w3_summary  # noqa: E402
from _common import fail as _fail  # noqa: E402
from _common import log as _log  # noqa: E402


def log(msg):
    _log("dagster", msg)


def fail(msg, code=1):
    _fail("dagster", msg, code)


try:
    import dagster
    from dagster import DagsterInstance, In, Nothing, job, op
except Exception as exc:  # pragma: no cover - environment problem
    fail(f"cannot import dagster ({exc}); run bench/peers/setup.sh and use its dagster venv python")


REPEAT = int(os.environ.get("ALOFT_BENCH_REPEAT", "3"))
INSTANCE_MODE = os.environ.get("ALOFT_BENCH_DAGSTER_INSTANCE", "ephemeral")
W3_POOL = os.environ.get("ALOFT_BENCH_DAGSTER_W3_POOL", "process")
W3_WORKERS = int(os.environ.get("ALOFT_BENCH_DAGSTER_W3_WORKERS", "4"))
LOG_LEVEL = os.environ.get("ALOFT_BENCH_DAGSTER_LOG_LEVEL", "WARNING")

RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": LOG_LEVEL}}}}

# ---------------------------------------------------------------------------
# Ops and jobs. Ordering-only dependencies use Nothing-typed inputs, so no
# values flow between ops; every op body is empty. Each execute_in_process
# call is a new run (new run id), so nothing is ever skipped as already done.
# ---------------------------------------------------------------------------


@op
def noop_first():
    pass


@op(ins={"after": In(Nothing)})
def noop_step():
    pass


def chain_job(name, n):
    @job(name=name)
    def _job():
        x = noop_first()
        for _ in range(n - 1):
            x = noop_step(after=x)  # repeated invocations get aliased noop_step_2, ...

    return _job


def fan_job(name, n):
    @job(name=name)
    def _job():
        noop_step.alias("join")(after=[noop_first.alias(f"fan_{i}")() for i in range(n)])

    return _job


W1_JOB = chain_job("w1_chain50", W1_LEN)
W2_JOB = fan_job("w2_fan100", W2_FAN)
W3_JOB = chain_job("w3_chain3", W3_LEN)
WARM_JOB = chain_job("warm_up", 1)

# ---------------------------------------------------------------------------
# Instance handling
# ---------------------------------------------------------------------------
_INSTANCE = None  # (pid, DagsterInstance) in sqlite mode


def _instance():
    """None -> execute_in_process creates a fresh in-memory instance per run."""
    global _INSTANCE
    if INSTANCE_MODE != "sqlite":
        return None
    if _INSTANCE is None or _INSTANCE[0] != os.getpid():
        # In a forked pool worker, open its own handle on the same DAGSTER_HOME.
        _INSTANCE = (os.getpid(), DagsterInstance.get())
    return _INSTANCE[1]


_MAIN_PID = os.getpid()


def _on_term(signum, frame):
    if os.getpid() == _MAIN_PID:
        raise SystemExit(f"terminated by signal {signum}")
    os._exit(1)  # a forked pool worker


def _install_term_handler():
    # Dagster's run execution maps SIGTERM to whatever SIGINT's handler is and
    # leaves it so afterwards; when this script is started in the background
    # SIGINT is ignored, so SIGTERM would end up ignored too. Re-arm ours after
    # every run executed in the main process so the script stays killable.
    if os.getpid() == _MAIN_PID:
        signal.signal(signal.SIGTERM, _on_term)


def _execute(job_def):
    try:
        res = job_def.execute_in_process(run_config=RUN_CONFIG, instance=_instance(), raise_on_error=False)
    finally:
        _install_term_handler()
    return res.success


def _w3_one(_i):
    """One W3 run. Returns (success, finish time on the system-wide monotonic clock)."""
    try:
        ok = _execute(W3_JOB)
    except Exception:
        log(f"W3 run raised:\n{traceback.format_exc()}")
        ok = False
    return ok, time.monotonic()


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


def run_timed(job_def, label):
    t0 = time.perf_counter()
    ok = _execute(job_def)
    wall = time.perf_counter() - t0
    if not ok:
        raise RuntimeError(f"{label} run did not succeed")
    return wall


def run_w3():
    """100 runs of the 3-op chain job, all submitted at t0 to a pool of W3_WORKERS.

    Latency of a run = time its execute_in_process call returned (run finished,
    RUN_SUCCESS recorded) - t0. Pool start-up (fork of the workers) is inside
    the timed region.
    """
    t0 = time.monotonic()
    if W3_POOL == "process":
        ex = cf.ProcessPoolExecutor(W3_WORKERS, mp_context=multiprocessing.get_context("fork"))
    else:
        ex = cf.ThreadPoolExecutor(W3_WORKERS)
    try:
        futs = [ex.submit(_w3_one, i) for i in range(W3_RUNS)]
        fins = []
        for f in futs:
            try:
                ok, fin = f.result()
            except Exception as exc:  # e.g. a pool worker died
                log(f"W3 run lost: {type(exc).__name__}: {exc}")
                ok, fin = False, None
            fins.append(fin if ok else None)
        wall = time.monotonic() - t0
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    res = w3_summary(t0, fins, wall)
    if res["p50_s"] is None:
        raise RuntimeError(f"W3 failed: all {W3_RUNS} runs failed")
    return res


def main():
    if REPEAT < 1:
        fail("ALOFT_BENCH_REPEAT must be >= 1")
    if INSTANCE_MODE not in ("ephemeral", "sqlite"):
        fail("ALOFT_BENCH_DAGSTER_INSTANCE must be 'ephemeral' or 'sqlite'")
    if W3_POOL not in ("process", "thread"):
        fail("ALOFT_BENCH_DAGSTER_W3_POOL must be 'process' or 'thread'")
    if W3_POOL == "thread" and INSTANCE_MODE == "sqlite":
        fail("thread pool with the sqlite instance is not supported (Dagster deadlocks in logging setup)")

    _install_term_handler()

    home = None
    try:
        if INSTANCE_MODE == "sqlite":
            home = tempfile.mkdtemp(prefix="aloft-bench-dagster-")
            with open(os.path.join(home, "dagster.yaml"), "w") as f:
                f.write("telemetry:\n  enabled: false\n")
            os.environ["DAGSTER_HOME"] = home
        # Untimed warm-up: first-use imports; in sqlite mode it also creates the
        # storage schema before any pool worker is forked.
        if not _execute(WARM_JOB):
            raise RuntimeError("warm-up run did not succeed")
        w1 = []
        w2 = []
        w3 = []
        for r in range(REPEAT):
            w1.append(run_timed(W1_JOB, "W1"))
            log(f"W1 repeat {r + 1}/{REPEAT}: {w1[-1]:.3f}s")
        for r in range(REPEAT):
            w2.append(run_timed(W2_JOB, "W2"))
            log(f"W2 repeat {r + 1}/{REPEAT}: {w2[-1]:.3f}s")
        for r in range(REPEAT):
            w3.append(run_w3())
            x = w3[-1]
            log(
                f"W3 repeat {r + 1}/{REPEAT}: wall {x['wall_s']:.3f}s p50 {x['p50_s']:.3f}s "
                f"p99 {x['p99_s']:.3f}s failed {x['failed']}"
            )
    except SystemExit:
        raise
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
    finally:
        if home:
            shutil.rmtree(home, ignore_errors=True)

    instance_desc = (
        "ephemeral in-memory instance per run (execute_in_process default)"
        if INSTANCE_MODE == "ephemeral"
        else "one on-disk sqlite instance (temporary DAGSTER_HOME)"
    )
    out = {
        "peer": "dagster",
        "version": dagster.__version__,
        "mode": (
            f"execute_in_process (in-process executor), {instance_desc}; no-op ops with Nothing deps; "
            f"W3 = 100 job runs submitted at once to a {W3_POOL} pool of {W3_WORKERS}"
            + (" (fork)" if W3_POOL == "process" else "")
        ),
        "instance": INSTANCE_MODE,
        "repeat": REPEAT,
    }
    out.update(aggregate(w1, w2, w3))
    out["W1"].update(tasks=W1_LEN)
    out["W2"].update(tasks=W2_FAN + 1)
    out["W3"].update(runs_per_repeat=W3_RUNS, tasks_per_run=W3_LEN, pool=W3_POOL, workers=W3_WORKERS)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
