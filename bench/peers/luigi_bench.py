#!/usr/bin/env python3
"""Peer benchmark: Luigi with its central scheduler (luigid).

Runs the three no-op workloads (W1 chain of 50, W2 fan-out 100 + join,
W3 100 concurrent 3-task chains) against a luigid started on a fixed local
port for the duration of the script, and prints ONE JSON object on stdout.
Progress/diagnostics go to stderr. See README.md in this directory.

Environment:
  ALOFT_BENCH_REPEAT           repetitions per workload (default 3, median reported)
  ALOFT_BENCH_LUIGI_PORT       luigid port (default 38082)
  ALOFT_BENCH_LUIGI_WORKERS    worker processes for W2/W3 (default 4)
  ALOFT_BENCH_LUIGI_W1_WORKERS worker processes for W1 (default 1: a chain has
                               no parallelism; >1 makes Luigi fork per task)
  ALOFT_BENCH_LUIGI_LOG_LEVEL  luigi interface log level (default WARNING)
"""

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import W1_LEN, W2_FAN, W3_LEN, W3_RUNS, aggregate, w3_summary  # noqa: E402
from _common import fail as _fail  # noqa: E402
from _common import log as _log  # noqa: E402


def log(msg):
    _log("luigi", msg)


def fail(msg, code=1):
    _fail("luigi", msg, code)


try:
    import luigi
    from luigi.execution_summary import LuigiStatusCode
except Exception as exc:  # pragma: no cover - environment problem
    fail(f"cannot import luigi ({exc}); run bench/peers/setup.sh and use its luigi venv python")


REPEAT = int(os.environ.get("ALOFT_BENCH_REPEAT", "3"))
PORT = int(os.environ.get("ALOFT_BENCH_LUIGI_PORT", "38082"))
HOST = "127.0.0.1"
WORKERS = int(os.environ.get("ALOFT_BENCH_LUIGI_WORKERS", "4"))
W1_WORKERS = int(os.environ.get("ALOFT_BENCH_LUIGI_W1_WORKERS", "1"))
LOG_LEVEL = os.environ.get("ALOFT_BENCH_LUIGI_LOG_LEVEL", "WARNING")

# ---------------------------------------------------------------------------
# Completion state.
#
# Tasks have no output targets. Completion is a per-task slot in a shared
# anonymous memory array (multiprocessing.RawArray), registered per benchmark
# run id before luigi.build() is called. A slot holds 0.0 until the task's
# run() stores its finish time (time.monotonic(), a system-wide clock on
# Linux). With workers > 1 Luigi runs each task in a forked child process;
# the child inherits the mapping, so writes made by one task are visible to
# the worker's scheduling loop and to the dependency check of later tasks.
# ---------------------------------------------------------------------------
_STORES = {}


def _new_store(run_id, n):
    arr = multiprocessing.RawArray("d", n)
    _STORES[run_id] = arr
    return arr


class _NoopTask(luigi.Task):
    run_id = luigi.Parameter()

    def slot(self):  # index into the run's completion array
        raise NotImplementedError

    def complete(self):
        return _STORES[self.run_id][self.slot()] != 0.0

    def run(self):
        _STORES[self.run_id][self.slot()] = time.monotonic()


class ChainTask(_NoopTask):
    """Step `idx` of chain `chain`; depends on step idx-1 of the same chain."""

    chain = luigi.IntParameter()
    idx = luigi.IntParameter()
    length = luigi.IntParameter()

    def slot(self):
        return self.chain * self.length + self.idx

    def requires(self):
        if self.idx > 0:
            return ChainTask(run_id=self.run_id, chain=self.chain, idx=self.idx - 1, length=self.length)
        return []


class FanTask(_NoopTask):
    idx = luigi.IntParameter()

    def slot(self):
        return self.idx


class JoinTask(_NoopTask):
    n = luigi.IntParameter()

    def slot(self):
        return self.n

    def requires(self):
        return [FanTask(run_id=self.run_id, idx=i) for i in range(self.n)]


def _build(tasks, workers):
    res = luigi.build(
        tasks,
        workers=workers,
        local_scheduler=False,
        scheduler_host=HOST,
        scheduler_port=PORT,
        detailed_summary=True,
        log_level=LOG_LEVEL,
    )
    return res.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY), res.status


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------

def run_w1():
    run_id = uuid.uuid4().hex
    store = _new_store(run_id, W1_LEN)
    root = ChainTask(run_id=run_id, chain=0, idx=W1_LEN - 1, length=W1_LEN)
    t0 = time.perf_counter()
    ok, status = _build([root], W1_WORKERS)
    wall = time.perf_counter() - t0
    done = sum(1 for v in store if v != 0.0)
    del _STORES[run_id]
    if not ok or done != W1_LEN:
        raise RuntimeError(f"W1 failed: status={status}, {done}/{W1_LEN} tasks done")
    return wall


def run_w2():
    run_id = uuid.uuid4().hex
    store = _new_store(run_id, W2_FAN + 1)
    root = JoinTask(run_id=run_id, n=W2_FAN)
    t0 = time.perf_counter()
    ok, status = _build([root], WORKERS)
    wall = time.perf_counter() - t0
    done = sum(1 for v in store if v != 0.0)
    del _STORES[run_id]
    if not ok or done != W2_FAN + 1:
        raise RuntimeError(f"W2 failed: status={status}, {done}/{W2_FAN + 1} tasks done")
    return wall


def run_w3():
    """100 chain executions handed to one luigi.build() call at the same instant.

    Each root is the last step of its own 3-step chain (unique run_id/chain
    parameters). Latency of a chain = finish time of its last task - t0, where
    t0 is taken just before luigi.build(); so it includes Luigi's dependency
    scan and registration of all 300 tasks with luigid, as a real submission
    of 100 roots would.
    """
    run_id = uuid.uuid4().hex
    store = _new_store(run_id, W3_RUNS * W3_LEN)
    roots = [ChainTask(run_id=run_id, chain=c, idx=W3_LEN - 1, length=W3_LEN) for c in range(W3_RUNS)]
    t0 = time.monotonic()
    ok, status = _build(roots, WORKERS)
    wall = time.monotonic() - t0
    fins = []
    for c in range(W3_RUNS):
        fin = store[c * W3_LEN + W3_LEN - 1]
        fins.append(fin if fin != 0.0 else None)
    del _STORES[run_id]
    if not ok:
        log(f"W3 build status: {status}")
    res = w3_summary(t0, fins, wall)
    if res["p50_s"] is None:
        raise RuntimeError(f"W3 failed: all {W3_RUNS} runs failed (status={status})")
    return res


def warm_up():
    """One untimed single-task build (first-use imports, first scheduler RPCs)."""
    run_id = uuid.uuid4().hex
    _new_store(run_id, 1)
    ok, status = _build([FanTask(run_id=run_id, idx=0)], 1)
    del _STORES[run_id]
    if not ok:
        raise RuntimeError(f"warm-up build failed: status={status}")


# ---------------------------------------------------------------------------
# luigid lifecycle
# ---------------------------------------------------------------------------

def _port_open(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def start_luigid(workdir):
    if _port_open(HOST, PORT):
        fail(f"port {PORT} is already in use; set ALOFT_BENCH_LUIGI_PORT to a free port")
    luigid = shutil.which("luigid", path=os.path.dirname(sys.executable)) or shutil.which("luigid")
    if not luigid:
        fail("luigid executable not found next to this python")
    logf = open(os.path.join(workdir, "luigid.log"), "wb")
    proc = subprocess.Popen(
        [luigid, "--address", HOST, "--port", str(PORT), "--state-path", os.path.join(workdir, "state.pickle")],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _port_open(HOST, PORT):
            log(f"luigid pid {proc.pid} listening on {HOST}:{PORT}")
            return proc
        time.sleep(0.1)
    stop_luigid(proc)
    with open(os.path.join(workdir, "luigid.log"), "rb") as f:
        tail = f.read()[-2000:].decode(errors="replace")
    fail(f"luigid did not start on {HOST}:{PORT}:\n{tail}")


def stop_luigid(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    if REPEAT < 1:
        fail("ALOFT_BENCH_REPEAT must be >= 1")
    # Turn SIGTERM into SystemExit so the finally-block below stops luigid.
    main_pid = os.getpid()

    def _on_term(signum, frame):
        if os.getpid() == main_pid:
            raise SystemExit(f"terminated by signal {signum}")
        os._exit(1)  # a forked task process

    signal.signal(signal.SIGTERM, _on_term)
    workdir = tempfile.mkdtemp(prefix="aloft-bench-luigi-")
    proc = None
    try:
        proc = start_luigid(workdir)
        warm_up()
        w1 = []
        w2 = []
        w3 = []
        for r in range(REPEAT):
            w1.append(run_w1())
            log(f"W1 repeat {r + 1}/{REPEAT}: {w1[-1]:.3f}s")
        for r in range(REPEAT):
            w2.append(run_w2())
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
        stop_luigid(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    out = {
        "peer": "luigi",
        "version": luigi.__version__,
        "mode": (
            f"luigid central scheduler on {HOST}:{PORT}; luigi.build in one process; "
            f"W1 workers={W1_WORKERS}, W2/W3 workers={WORKERS} (fork per task when workers>1); "
            "no-op tasks, shared-memory completion flags, no targets; "
            "W3 = 100 root tasks (3-task chains) in one luigi.build"
        ),
        "repeat": REPEAT,
    }
    out.update(aggregate(w1, w2, w3))
    out["W1"].update(tasks=W1_LEN, workers=W1_WORKERS)
    out["W2"].update(tasks=W2_FAN + 1, workers=WORKERS)
    out["W3"].update(runs_per_repeat=W3_RUNS, tasks_per_run=W3_LEN, workers=WORKERS)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
