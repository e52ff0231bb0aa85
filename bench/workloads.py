#!/usr/bin/env python3
"""The workload benchmark of issue 10: W1/W2/W3 through the real admin API, against lower bounds.

Run it with scripts/bench.sh (it installs and starts the dependencies, builds the release binaries
and calls this with the flytekit venv's Python). What it does, in order:

1. Lower bounds, without Aloft: the raw tasks' command spawned directly with the executor's
   parallelism; flytekit's local in-process run of the same workflows; `pyflyte run` of W1 as a
   fresh process; a cold `pyflyte-execute` of one task spawned directly.
2. For each mode (embedded: one `aloft up` process with SQLite and a local store; separate: the
   five service binaries as their own processes with Postgres, SeaweedFS S3 and NATS from
   scripts/dev-deps.sh): start, register bench/flows with `pyflyte register`, measure each
   workload (one warm-up, then --repeat timed runs), read the stage histograms from every
   service's /metrics and the RSS of every process when idle, stop.
3. Peers (bench/peers), when their venvs exist.
4. Writes everything to target/bench/workloads.json and the report between the markers in
   docs/benchmarks.md.

Wall time of a run is submit-to-finish: from just before CreateExecution on the client to the
execution's terminal `updated_at`, which the scheduler stamps when it decides the end (same host,
same clock), so polling does not add to it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "bench" / "flows"
REPORT = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- workloads:begin -->", "<!-- workloads:end -->"
DOMAIN = "development"
PROJECT = "bench"
MODULE = "workloads"
CHAIN, FAN = 50, 100
W3_RUNS = 100
SLOTS = 4  # the executor's default `slots`, used by both modes and by the spawn bound
TASKS = {"W1": CHAIN, "W2": FAN + 1, "W3": 3 * W3_RUNS}
# flyteidl WorkflowExecution.Phase values that end an execution (FAILING, ABORTING do not)
TERMINAL = {4: "SUCCEEDED", 6: "FAILED", 7: "ABORTED", 8: "TIMED_OUT"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def med(xs):
    return statistics.median(xs) if xs else None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_port(port: int, proc: subprocess.Popen, what: str, limit: float = 60):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {limit} s")


# ------------------------------------------------------------------------------------ lower bounds


def spawn_bound(repeat: int) -> dict:
    """The raw tasks' command spawned directly: W1 one after another, W2 the fan-out with the
    executor's parallelism then the join, W3 100 chains of 3 on the same pool."""
    true = shutil.which("true")

    def run():
        subprocess.run([true], check=True)

    def w1():
        for _ in range(CHAIN):
            run()

    def w2():
        with cf.ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(lambda _: run(), range(FAN)))
        run()

    def w3():
        def chain(_):
            for _ in range(3):
                run()

        with cf.ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(chain, range(W3_RUNS)))

    out = {}
    for name, f in [("W1", w1), ("W2", w2), ("W3", w3)]:
        f()
        walls = []
        for _ in range(repeat):
            t = time.perf_counter()
            f()
            walls.append(time.perf_counter() - t)
        out[name] = {"wall_s": med(walls), "runs": walls}
    single = []
    for _ in range(200):
        t = time.perf_counter()
        run()
        single.append(time.perf_counter() - t)
    out["spawn_ms_p50"] = med(single) * 1000
    return out


LOCAL_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import workloads as w
repeat = int(sys.argv[2])
out = {}
for key, f in [("W1", w.py_w1), ("W2", w.py_w2), ("W3", w.py_w3)]:
    f()
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        if key == "W3":
            for _ in range(100):
                f()
        else:
            f()
        walls.append(time.perf_counter() - t)
    out[key] = walls
print(json.dumps(out))
"""


def local_bound(py: Path, repeat: int) -> dict:
    """flytekit's own local execution, in one process (no isolation), after one warm-up run. W3 is
    the 100 runs one after another (flytekit runs workflows synchronously)."""
    res = subprocess.run([str(py), "-c", LOCAL_SCRIPT, str(FLOWS), str(repeat)], capture_output=True, text=True,
                         check=True, cwd=FLOWS)
    walls = json.loads(res.stdout.strip().splitlines()[-1])
    return {k: {"wall_s": med(v), "runs": v} for k, v in walls.items()}


def pyflyte_run_fresh(venv: Path, repeat: int) -> dict:
    """`pyflyte run workloads.py py_w1` as a fresh process (import and all), the figure the issue
    quotes for flytekit without a platform."""
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pyflyte"), "run", "workloads.py", "py_w1"], cwd=FLOWS, check=True,
                       capture_output=True)
        walls.append(time.perf_counter() - t)
    return {"W1": {"wall_s": med(walls), "runs": walls}}


COLD_INPUTS = r"""
import sys
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
ctx = FlyteContextManager.current_context()
lm = TypeEngine.dict_to_literal_map(ctx, {"x": 0}, {"x": int})
open(sys.argv[1], "wb").write(lm.to_flyte_idl().SerializeToString())
"""


def cold_task_bound(venv: Path, samples: int) -> dict:
    """One Python task (`inc`) run by spawning `pyflyte-execute` directly, the way a cold executor
    would, with local inputs and outputs: the per-task floor of the cold path."""
    with tempfile.TemporaryDirectory() as d:
        inputs = Path(d) / "inputs.pb"
        subprocess.run([str(venv / "bin" / "python"), "-c", COLD_INPUTS, str(inputs)], check=True, cwd=FLOWS)
        walls = []
        for i in range(samples):
            out = Path(d) / f"out{i}"
            cmd = [str(venv / "bin" / "pyflyte-execute"), "--inputs", str(inputs), "--output-prefix", str(out),
                   "--raw-output-data-prefix", str(out / "raw"), "--resolver",
                   "flytekit.core.python_auto_container.default_task_resolver", "--", "task-module", MODULE,
                   "task-name", "inc"]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=FLOWS, capture_output=True)
            walls.append(time.perf_counter() - t)
            if not (out / "outputs.pb").exists():
                raise SystemExit(f"pyflyte-execute wrote no outputs.pb under {out}")
    return {"task_s_p50": med(walls), "runs": walls}


# ------------------------------------------------------------------------------------------ stacks


class Stack:
    """A running Aloft: its admin endpoint, its processes (name -> Popen) and /metrics URLs."""

    mode = ""

    def __init__(self, work: Path):
        self.work = work
        self.procs: dict[str, subprocess.Popen] = {}
        self.metrics: dict[str, str] = {}
        self.endpoint = ""
        self.config = work / "flytekit.yaml"

    def spawn(self, name: str, cmd: list[str], env: dict | None = None):
        logf = open(self.work / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **(env or {})}, start_new_session=True)

    def write_flytekit(self, port: int):
        self.config.write_text(f"admin:\n  endpoint: dns:///127.0.0.1:{port}\n  insecure: true\n")
        self.endpoint = f"127.0.0.1:{port}"

    def rss(self) -> dict:
        out = {}
        for name, p in self.procs.items():
            out[name] = rss_mb(p.pid)
            # aloft up's nats-server child
            for child in children(p.pid):
                out[f"{name}/{child[1]}"] = rss_mb(child[0])
        return out

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 40 s: SIGKILL")
                os.killpg(p.pid, signal.SIGKILL)


CLK_TCK = os.sysconf("SC_CLK_TCK")
INFRA = {"nats-server": "nats", "postgres": "postgres", "weed": "seaweedfs"}


def cpu_snapshot(procs: dict, infra: bool) -> dict[str, float]:
    """CPU seconds (user + system) so far: of each service process, including the children it
    reaped (task processes count under the executor), of their live children, and (`infra`: the
    separate mode, whose NATS, Postgres and SeaweedFS are the shared dev servers) of the
    infrastructure by process name."""
    out: dict[str, float] = {}
    pids = {p.pid: name for name, p in procs.items()}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        f = stat.rsplit(")", 1)[1].split()
        own, reaped = (int(f[11]) + int(f[12])) / CLK_TCK, (int(f[13]) + int(f[14])) / CLK_TCK
        if int(d.name) in pids:
            out[pids[int(d.name)]] = own + reaped
        elif int(f[1]) in pids:  # aloft up's nats-server child, the warm Python runtime
            out[f"{pids[int(f[1])]}/{comm}"] = out.get(f"{pids[int(f[1])]}/{comm}", 0.0) + own
        elif infra and comm in INFRA:
            out[INFRA[comm]] = out.get(INFRA[comm], 0.0) + own
    t = os.times()
    out["bench client"] = t.user + t.system
    return out


def children(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    out.append((int(d.name), stat.split("(", 1)[1].rsplit(")", 1)[0]))
            except (OSError, ValueError, IndexError):
                pass
    return out


class Embedded(Stack):
    mode = "embedded"

    def start(self, aloft: Path, venv: Path):
        port = free_port()
        ports = [free_port() for _ in range(4)]
        self.spawn("aloft", [str(aloft), "up", "--data-dir", str(self.work / "data"), "--port", str(port),
                             "--http-port", str(ports[0]), "--notifier-port", str(ports[1]), "--lineage-port",
                             str(ports[2]), "--nats-port", str(ports[3]), "--python-venv", str(venv)],
                   {"ALOFT_LOG": os.environ.get("ALOFT_BENCH_LOG", "warn")})
        wait_port(port, self.procs["aloft"], "aloft up")
        self.write_flytekit(port)


class Separate(Stack):
    mode = "separate"

    def start(self, release: Path, venv: Path, env: dict):
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.db = f"bench_{tag}"
        subprocess.run(["createdb", self.db], check=True, env={**os.environ, **env})
        db_url = re.sub(r"/[^/]*$", f"/{self.db}", env["DATABASE_URL"])
        self.db_env = env
        storage = (
            "[storage]\nkind = \"s3\"\n"
            f"root = \"s3://{env['S3_BUCKET']}/bench-{tag}\"\n"
            f"endpoint = \"{env['AWS_ENDPOINT_URL']}\"\nregion = \"{env['AWS_REGION']}\"\n"
            f"access_key = \"{env['AWS_ACCESS_KEY_ID']}\"\nsecret_key = \"{env['AWS_SECRET_ACCESS_KEY']}\"\n"
            "force_path_style = true\n"
        )
        bus = f"[bus]\nurl = \"{env['NATS_URL']}\"\nstream_prefix = \"BENCH{tag.upper()}\"\nsubject_prefix = \"bench{tag}\"\n"
        grpc, http = free_port(), free_port()
        ports = {s: (free_port(), free_port()) for s in ["scheduler", "executor", "notifier", "lineage"]}
        configs = {
            "metadata": f"database_url = \"{db_url}\"\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n"
                        f"[http]\nlisten = \"127.0.0.1:{http}\"\n{storage}{bus}",
            "scheduler": f"metadata_endpoint = \"127.0.0.1:{grpc}\"\n{storage}{bus}",
            "executor": f"scratch_dir = \"{self.work / 'scratch'}\"\nadmin_endpoint = \"127.0.0.1:{grpc}\"\n"
                        f"[python]\nvenv = \"{venv}\"\n{storage}{bus}",
            "notifier": f"database_url = \"{db_url}\"\n[metadata]\nendpoint = \"http://127.0.0.1:{grpc}\"\n{bus}",
            "lineage": f"database_url = \"{db_url}\"\n[metadata]\nendpoint = \"http://127.0.0.1:{grpc}\"\n"
                       f"{storage}{bus}",
        }
        for name, (health, metrics) in ports.items():
            configs[name] += f"[health]\nlisten = \"127.0.0.1:{health}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
            self.metrics[name] = f"http://127.0.0.1:{metrics}/metrics"
        self.metrics["metadata"] = f"http://127.0.0.1:{http}/metrics"
        aws = {"FLYTE_AWS_ENDPOINT": env["AWS_ENDPOINT_URL"], "FLYTE_AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
               "FLYTE_AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
               "ALOFT_LOG": os.environ.get("ALOFT_BENCH_LOG", "warn")}
        # metadata first: it creates the streams the others bind to
        for name in ["metadata", "scheduler", "executor", "notifier", "lineage"]:
            path = self.work / f"{name}.toml"
            path.write_text(configs[name])
            self.spawn(name, [str(release / f"aloft-{name}"), "--config", str(path)], aws)
            if name == "metadata":
                wait_port(grpc, self.procs[name], name)
            else:
                wait_port(ports[name][0], self.procs[name], name)
        self.write_flytekit(grpc)

    def stop(self):
        super().stop()
        subprocess.run(["dropdb", "--if-exists", "--force", self.db], env={**os.environ, **self.db_env})
        try:
            gone = delete_streams(self.db_env["NATS_URL"], self.tag)
            log(f"[separate] deleted {gone} NATS streams and buckets of this run")
        except OSError as e:
            log(f"[separate] cannot delete this run's NATS streams: {e}")


def delete_streams(url: str, tag: str) -> int:
    """Deletes every JetStream stream (and so KV bucket) whose name contains `tag`, through the
    JetStream API over the plain NATS protocol (no client library in the venv)."""
    host, port = url.split("://", 1)[-1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    reader = sock.makefile("rb")
    reader.readline()  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
                 b"SUB _INBOX.bench.* 1\r\n")

    def request(subject: str, payload: bytes = b"") -> dict:
        sock.sendall(f"PUB {subject} _INBOX.bench.r {len(payload)}\r\n".encode() + payload + b"\r\n")
        while True:
            line = reader.readline().decode().split()
            if not line:
                raise OSError("connection closed")
            if line[0] == "PING":
                sock.sendall(b"PONG\r\n")
            elif line[0] in ("MSG", "HMSG"):
                body = reader.read(int(line[-1]) + 2)[:-2]
                if line[0] == "HMSG":
                    body = body[int(line[-2]):]
                return json.loads(body or b"{}")

    names, offset = [], 0
    while True:
        page = request("$JS.API.STREAM.NAMES", json.dumps({"offset": offset}).encode())
        names += page.get("streams") or []
        offset += page.get("limit", 1024)
        if offset >= page.get("total", 0):
            break
    mine = [n for n in names if tag.lower() in n.lower()]
    for name in mine:
        request(f"$JS.API.STREAM.DELETE.{name}")
    sock.close()
    return len(mine)


# ----------------------------------------------------------------------------------------- client


class Client:
    def __init__(self, endpoint: str):
        from flytekit.clients.raw import RawSynchronousFlyteClient
        from flytekit.configuration import PlatformConfig

        self.raw = RawSynchronousFlyteClient(PlatformConfig(endpoint=endpoint, insecure=True))

    def submit(self, lp: str, version: str, name: str) -> float:
        from flyteidl.admin import execution_pb2 as ex
        from flyteidl.core import identifier_pb2 as idl
        from flyteidl.core import literals_pb2 as lit

        spec = ex.ExecutionSpec(
            launch_plan=idl.Identifier(resource_type=idl.LAUNCH_PLAN, project=PROJECT, domain=DOMAIN, name=lp,
                                       version=version),
            metadata=ex.ExecutionMetadata(mode=ex.ExecutionMetadata.MANUAL, principal="bench"),
        )
        req = ex.ExecutionCreateRequest(project=PROJECT, domain=DOMAIN, name=name, spec=spec, inputs=lit.LiteralMap())
        t = time.time()
        self.raw.create_execution(req)
        return t

    def get(self, name: str):
        from flyteidl.admin import execution_pb2 as ex
        from flyteidl.core import identifier_pb2 as idl

        return self.raw.get_execution(ex.WorkflowExecutionGetRequest(
            id=idl.WorkflowExecutionIdentifier(project=PROJECT, domain=DOMAIN, name=name)))

    def wait(self, names: list[str], limit: float) -> dict:
        """Polls until every execution is terminal; returns name -> (Execution, when it was seen)."""
        pending, done = set(names), {}
        end = time.time() + limit
        while pending:
            if time.time() > end:
                raise SystemExit(f"{len(pending)} executions not finished after {limit} s, e.g. {sorted(pending)[:3]}")
            for name in list(pending):
                e = self.get(name)
                if e.closure.phase in TERMINAL:
                    done[name] = (e, time.time())
                    pending.discard(name)
                else:
                    break  # the others are unlikely done before this one; poll again soon
            # (the wall time comes from the server's timestamps; polling only finds the end)
            time.sleep(0.01 if len(names) == 1 and time.time() < end - limit + 2 else 0.05)
        return done

    def nodes(self, name: str) -> list:
        from flyteidl.admin import common_pb2
        from flyteidl.admin import node_execution_pb2 as ne
        from flyteidl.core import identifier_pb2 as idl

        req = ne.NodeExecutionListRequest(
            workflow_execution_id=idl.WorkflowExecutionIdentifier(project=PROJECT, domain=DOMAIN, name=name),
            limit=500, sort_by=common_pb2.Sort(key="created_at", direction=common_pb2.Sort.ASCENDING))
        return list(self.raw.list_node_executions_paginated(req).node_executions)

    def tasks(self, node_id) -> list:
        from flyteidl.admin import task_execution_pb2 as te

        req = te.TaskExecutionListRequest(node_execution_id=node_id, limit=10)
        return list(self.raw.list_task_executions_paginated(req).task_executions)


def ts(t) -> float:
    return t.seconds + t.nanos / 1e9


def register(stack: Stack, venv: Path, version: str):
    work = stack.work / "flows"
    shutil.copytree(FLOWS, work, ignore=shutil.ignore_patterns("__pycache__"))
    t = time.perf_counter()
    res = subprocess.run([str(venv / "bin" / "pyflyte"), "--config", str(stack.config), "register", "--project",
                          PROJECT, "--domain", DOMAIN, "--version", version, "workloads.py"], cwd=work,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"pyflyte register failed:\n{res.stdout}\n{res.stderr}")
    return time.perf_counter() - t


def run_workload(client: Client, lp: str, version: str, key: str, tag: str) -> dict:
    n = W3_RUNS if key == "W3" else 1
    names = [f"{tag}-{i}" for i in range(n)]
    if n == 1:
        submits = {names[0]: client.submit(lp, version, names[0])}
    else:
        with cf.ThreadPoolExecutor(16) as pool:
            submits = dict(zip(names, pool.map(lambda nm: client.submit(lp, version, nm), names)))
    first = min(submits.values())
    seen = client.wait(names, limit=600)
    done = {nm: e for nm, (e, _) in seen.items()}
    lat = {nm: ts(done[nm].closure.updated_at) - submits[nm] for nm in names}
    failed = [nm for nm in names if done[nm].closure.phase != 4]
    wall = max(ts(done[nm].closure.updated_at) for nm in names) - first
    # when the client could read the end through the API (the event sink had stored it), polled
    out = {"wall_s": wall, "seen_s": max(at for _, at in seen.values()) - first, "failed": len(failed)}
    if failed:
        e = done[failed[0]].closure
        out["first_failure"] = f"{failed[0]}: {TERMINAL[e.phase]} {e.error.message[:300]}"
    if n > 1:
        out.update(p50_s=pct(lat.values(), 50), p99_s=pct(lat.values(), 99), throughput_per_s=n / wall)
    return out


def breakdown(client: Client, name: str) -> dict:
    """Where the time of a chain's tasks goes, from the timestamps the services stamp on events:
    react = previous task's end (executor) -> this node queued (scheduler);
    dispatch = node queued -> task attempt running (executor, process started);
    task = running -> task terminal (process, outputs, log upload);
    Medians over the chain's nodes."""
    react, dispatch, task = [], [], []
    prev_end = None
    for n in client.nodes(name):
        if n.id.node_id in ("start-node", "end-node"):
            continue
        tes = client.tasks(n.id)
        if not tes:
            continue
        te = tes[-1].closure
        queued = ts(n.closure.created_at)
        started = ts(te.started_at) if te.HasField("started_at") else ts(te.created_at)
        end = ts(te.updated_at)
        if prev_end is not None:
            react.append(queued - prev_end)
        dispatch.append(started - queued)
        task.append(end - started)
        prev_end = end
    ms = lambda xs: round(med(xs) * 1000, 2) if xs else None  # noqa: E731
    return {"react_ms": ms(react), "dispatch_ms": ms(dispatch), "task_ms": ms(task), "nodes": len(task)}


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {series: value} for the stage histograms' _sum and _count."""
    out = {}
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(aloft_\w*stage_seconds_(?:sum|count))(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def stage_means(before: dict, after: dict, tasks: int) -> dict:
    """Mean milliseconds per task of each stage between two scrapes."""
    out = {}
    for key, v in after.items():
        if "_sum" not in key:
            continue
        total = v - before.get(key, 0.0)
        count = after.get(key.replace("_sum", "_count"), 0.0) - before.get(key.replace("_sum", "_count"), 0.0)
        if count > 0:
            out[key.replace("_seconds_sum", "")] = {"per_task_ms": round(total * 1000 / tasks, 3),
                                                    "mean_ms": round(total * 1000 / count, 3),
                                                    "count_per_task": round(count / tasks, 2)}
    return out


def measure_mode(stack: Stack, venv: Path, flavours: list[str], workloads: list[str], repeat: int) -> dict:
    version = "v" + uuid.uuid4().hex[:10]
    out = {"register_s": register(stack, venv, version), "idle_rss_mb_start": None, "results": {}}
    client = Client(stack.endpoint)
    time.sleep(2)
    out["idle_rss_mb_start"] = stack.rss()
    for flavour in flavours:
        for key in workloads:
            lp = f"{MODULE}.{flavour}_{key.lower()}"
            log(f"[{stack.mode}] {flavour} {key}: warm-up")
            warm = run_workload(client, lp, version, key, f"{flavour}-{key.lower()}-warm")
            if warm["failed"]:
                raise SystemExit(f"[{stack.mode}] {flavour} {key} warm-up failed: {warm.get('first_failure')}")
            runs, stages = [], {}
            cpu = {}
            for r in range(repeat):
                before = {s: scrape(u) for s, u in stack.metrics.items()}
                cpu_before = cpu_snapshot(stack.procs, stack.mode == "separate")
                runs.append(run_workload(client, lp, version, key, f"{flavour}-{key.lower()}-{r}"))
                cpu_after = cpu_snapshot(stack.procs, stack.mode == "separate")
                for name, v in cpu_after.items():
                    cpu.setdefault(name, []).append((v - cpu_before.get(name, 0.0)) * 1000 / TASKS[key])
                after = {s: scrape(u) for s, u in stack.metrics.items()}
                for s in stack.metrics:
                    for k, v in stage_means(before[s], after[s], TASKS[key]).items():
                        stages.setdefault(f"{s}:{k}", []).append(v["per_task_ms"])
                log(f"[{stack.mode}] {flavour} {key} run {r}: {runs[-1]}")
            res = {"wall_s": med([x["wall_s"] for x in runs]), "seen_s": med([x["seen_s"] for x in runs]),
                   "failed": sum(x["failed"] for x in runs), "runs": runs,
                   "stages_per_task_ms": {k: med(v) for k, v in sorted(stages.items())},
                   "cpu_ms_per_task": {k: round(med(v), 3) for k, v in sorted(cpu.items())}}
            if key == "W3":
                for f in ["p50_s", "p99_s", "throughput_per_s"]:
                    res[f] = med([x[f] for x in runs])
            if key == "W1":
                res["breakdown"] = breakdown(client, f"{flavour}-w1-{repeat - 1}-0")
            out["results"][f"{flavour}/{key}"] = res
    time.sleep(3)
    out["idle_rss_mb_end"] = stack.rss()
    return out


# ----------------------------------------------------------------------------------------- report


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop: how fast this machine's CPU is right now. Cloud VMs
    are throttled after sustained use (on the build machine the same loop went from 0.15 s to
    0.23 s during an afternoon of builds), so numbers from two runs compare only at similar
    probe values."""
    best = None
    for _ in range(3):
        t = time.perf_counter()
        sum(i * i for i in range(3_000_000))
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    return round(best, 3)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return {"cpu": f"{os.cpu_count()} × {cpu}", "memory_mib": mem, "kernel": platform.release(),
            "cpu_probe_s_at_start": cpu_probe(),
            "load_1m_at_start": os.getloadavg()[0], "rustc": version(["rustc", "--version"]),
            "python": platform.python_version(), "nats": version([os.environ.get("ALOFT_NATS_SERVER", "nats-server"), "--version"]),
            "postgres": version(["postgres", "--version"]) if shutil.which("postgres") else version(
                ["psql", "--version"]), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_report(md: str):
    text = REPORT.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = f"{head}{BEGIN}\n{md}\n{END}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{md}\n{END}\n"
    REPORT.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="embedded,separate")
    ap.add_argument("--flavours", default="raw,py")
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--release", default=str(ROOT / "target" / "release"))
    ap.add_argument("--venv", default=os.environ.get("ALOFT_PYTHON_VENV", ""))
    ap.add_argument("--peers", default="", help="comma-separated peer venv python paths as name=python")
    ap.add_argument("--no-report", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "workloads.json"), help="where the raw results go")
    ap.add_argument("--command", default="scripts/bench.sh", help="the command line to print in the report")
    a = ap.parse_args()
    venv = Path(a.venv)
    release = Path(a.release)
    env = {k: os.environ[k] for k in ["DATABASE_URL", "NATS_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "S3_BUCKET", "PGHOST", "PGPORT",
                                      "PGUSER", "PGPASSWORD"] if k in os.environ}
    modes = [m for m in a.modes.split(",") if m]
    flavours = [f for f in a.flavours.split(",") if f]
    workloads = [w for w in a.workloads.split(",") if w]
    r = {"machine": machine(), "command": a.command, "repeat": a.repeat, "slots": SLOTS, "tasks": TASKS,
         "bounds": {}, "modes": {}, "peers": {}}
    log("lower bounds: direct spawn")
    r["bounds"]["spawn"] = spawn_bound(a.repeat)
    if "py" in flavours:
        log("lower bounds: flytekit local in-process")
        r["bounds"]["flytekit_local"] = local_bound(venv / "bin" / "python", a.repeat)
        log("lower bounds: pyflyte run (fresh process)")
        r["bounds"]["pyflyte_run"] = pyflyte_run_fresh(venv, min(a.repeat, 3))
        log("lower bounds: cold pyflyte-execute")
        r["bounds"]["cold_task"] = cold_task_bound(venv, min(5, a.repeat + 1))
    for mode in modes:
        work = Path(tempfile.mkdtemp(prefix=f"aloft-bench-{mode}-"))
        stack = Embedded(work) if mode == "embedded" else Separate(work)
        try:
            if mode == "embedded":
                stack.start(release / "aloft", venv)
            else:
                stack.start(release, venv, env)
            r["modes"][mode] = measure_mode(stack, venv, flavours, workloads, a.repeat)
        except BaseException:
            log(f"[{mode}] failed; logs in {work}")
            stack.stop()
            raise
        stack.stop()
        if os.environ.get("ALOFT_BENCH_KEEP"):
            log(f"[{mode}] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for spec in [p for p in a.peers.split(",") if p]:
        name, py, script = spec.split("=", 1)[0], *spec.split("=", 1)[1].split(":", 1)
        log(f"peer {name}")
        res = subprocess.run([py, str(ROOT / script)], capture_output=True, text=True,
                             env={**os.environ, "ALOFT_BENCH_REPEAT": str(a.repeat)})
        if res.returncode == 0:
            r["peers"][name] = json.loads(res.stdout.strip().splitlines()[-1])
        else:
            r["peers"][name] = {"error": (res.stderr or res.stdout).strip()[-500:]}
    r["machine"]["cpu_probe_s_at_end"] = cpu_probe()
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    log(f"raw results: {out}")
    sys.path.insert(0, str(Path(__file__).parent))
    from report import render  # bench/report.py: the markdown, kept apart from the measuring

    md = render(r)
    print(md)
    if not a.no_report:
        write_report(md)
        log(f"report written to {REPORT}")
    failed = [f"{mode} {k}" for mode, res in r["modes"].items() for k, x in res["results"].items() if x["failed"]]
    if failed:
        raise SystemExit(f"failed runs in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
