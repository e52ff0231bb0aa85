"""Aloft's warm Python runtime: a fork server for flytekit task attempts.

The executor starts this once (per executor, on its first Python task) with the interpreter of the
venv's `pyflyte-execute`. It imports flytekit once, then forks one child per task attempt; the child
becomes exactly what `pyflyte-execute` (or `pyflyte-fast-execute`, `pyflyte-map-execute`) would have
been as a fresh process, minus the ~1 s of imports. Each child is forked from this parent, which never
runs user code, so modules a task imports or state it mutates die with that child.

Protocol: JSON lines. Requests on the stdin this process was started with, replies on its stdout
(both are moved to private descriptors at start; fd 1 is pointed at stderr so a stray print cannot
corrupt the protocol). Requests:

    {"id": 7, "argv": ["/venv/bin/pyflyte-execute", ...], "env": {...}, "cwd": "/scratch/work",
     "log": "/scratch/task.log"}

argv[0] is the console script as the cold path would exec it (resolved on the task's PATH). Replies:

    {"kind": "ready", "pid": .., "python": "3.11.7", "flytekit": "1.16.31", "import_keys": [..],
     "reinit_keys": [..], "start_prefixes": [..]}               once, after the imports
    {"kind": "failed", "message": ".."}                          instead of ready; then exits
    {"kind": "started", "id": 7, "pid": 1234, "start": 98765}    the child runs (pid = its pgid)
    {"kind": "refused", "id": 7, "message": ".."}                not started (log, cwd, bad request)
    {"kind": "exited", "id": 7, "code": 0, "signal": null}       the child ended (reaped here)

`start` is the child's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): the
executor records it with the process group so that a restarted executor recognises the group as its
own (/proc/<pid>/environ of a forked child shows this server's environment, not the task's).

When stdin closes (the executor died or stopped) every running child's process group is killed and
this process exits: warm tasks never outlive their executor.

This parent stays single-threaded: forking a process with threads copies only the forking thread and
can leave locks held. The imports below start none (checked at start: `failed` otherwise).
"""

import os
import signal
import sys

# Signal dispositions of a fresh interpreter, before any import changes them: each child starts
# from these, as a new `pyflyte-execute` process would.
_STARTUP_SIGNALS = {}
for _sig in signal.valid_signals():
    try:
        _STARTUP_SIGNALS[_sig] = signal.getsignal(_sig)
    except (OSError, ValueError):
        pass


def _interpreter_additions():
    """Variables CPython added to its own environment at start (PEP 538 sets LC_CTYPE=C.UTF-8 when
    the locale is C): what a fresh task interpreter adds too, given the same locale variables."""
    try:
        with open("/proc/self/environ", "rb") as f:
            given = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return {}
    return {k: v for k, v in os.environ.items() if os.fsencode(k) not in given}


_ADDED_AT_START = _interpreter_additions()

import json  # noqa: E402
import runpy  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

# What a task's interpreter would have on sys.path besides its script's directory and PYTHONPATH:
# the stdlib and site-packages (this script's own directory is not part of it).
_BASE_PATH = [p for p in sys.path[1:]]

# Console scripts served in-process; anything else runs the cold way.
ENTRIES = ("pyflyte-execute", "pyflyte-fast-execute", "pyflyte-map-execute")

# Modules imported once here. flytekit's entrypoint pulls in flytekit, flyteidl, grpc, fsspec,
# rich, click...; s3fs/botocore are what every task on an S3 store imports next.
PRELOAD = ("flytekit.bin.entrypoint",)
PRELOAD_OPTIONAL = ("s3fs", "botocore.session", "aiobotocore.session")

# Environment variables whose value a child re-reads after its environment is set (see `_reinit`),
# so they may differ between this server and a task. Every other variable read while the modules
# above were imported (recorded, see `_record_env_reads`) must have the same value in the task's
# environment as here, or the executor runs that attempt cold.
REINIT_KEYS = (
    "HOME", "TMPDIR", "TMP", "TEMP", "PYTHONPATH", "TZ",
    "FLYTECTL_CONFIG", "_FLYTECTL_CONFIG_PYFLYTE_OVERRIDE",
    "FLYTE_INTERNAL_EXECUTION_ID", "FLYTE_SDK_LOGGING_LEVEL", "FLYTE_SDK_DEV_LOGGING_LEVEL",
    "FLYTE_SDK_LOGGING_FORMAT", "FLYTE_SDK_RICH_TRACEBACKS", "FLYTE_PYTHON_PACKAGE_ROOT",
    "_F_P_WRITE_CHUNK_SIZE", "_F_TE_MAX_COROS", "FSSPEC_CONFIG_DIR",
    "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
)
# flytekit's configuration entries (`FLYTE_AWS_ENDPOINT`, `FLYTE_PLATFORM_URL`, ...), read at
# import by `Config.auto()`/`DataConfig.auto()`: both are rebuilt by `_reinit`.
REINIT_PREFIXES = ("FLYTE_AWS_", "FLYTE_AZURE_", "FLYTE_GCP_", "FLYTE_CREDENTIALS_", "FLYTE_PLATFORM_",
                   "FLYTE_SECRETS_", "FLYTE_SDK_LOCAL_SANDBOX", "FLYTE_PERSISTENCE_", "FSSPEC_")
# Read by the interpreter or C libraries at process start, invisible to the recorder: must match.
START_PREFIXES = ("PYTHON", "LD_", "LC_", "LANG", "GRPC_", "MALLOC_")


def _record_env_reads(fn):
    """Runs fn() while recording which environment variables are read one by one (get, [], in).
    Reads during a copy of the whole environment (`dict(os.environ)`: a prefix scan such as fsspec's
    FSSPEC_* or a subprocess env) are not counted: those consumers are covered by name above."""
    cls = type(os.environ)
    get, getitem, contains, iterate = cls.get, cls.__getitem__, cls.__contains__, cls.__iter__
    keys, bulk = set(), set()

    def rec_getitem(self, key):
        if key in bulk:
            bulk.discard(key)
        else:
            keys.add(key)
        return getitem(self, key)

    def rec_get(self, key, default=None):
        keys.add(key)
        return get(self, key, default)

    def rec_contains(self, key):
        keys.add(key)
        return contains(self, key)

    def rec_iter(self):
        listed = list(iterate(self))
        bulk.update(listed)
        return iter(listed)

    cls.get, cls.__getitem__, cls.__contains__, cls.__iter__ = rec_get, rec_getitem, rec_contains, rec_iter
    try:
        fn()
    finally:
        cls.get, cls.__getitem__, cls.__contains__, cls.__iter__ = get, getitem, contains, iterate
    return keys


def _preload():
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in PRELOAD_OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _share_botocore_data()


def _share_botocore_data():
    """Loads botocore's S3 model and endpoint data once, here, for every task.

    Each task's first S3 call builds a new botocore session, and each session parses the same JSON
    data files again with its own loader: about 150 ms of the ~285 ms a task on an S3 store spent
    on its first read (measured by bench/workloads.py, separate mode). The loader's cache is data
    only, read and never changed by botocore, so the children forked from here share one
    pre-filled loader. A task that names its own data path (AWS_DATA_PATH) gets a fresh loader."""
    try:
        import botocore.loaders
        import botocore.session
    except ImportError:
        return
    loader = botocore.loaders.create_loader()
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        try:
            loader.load_data(name)
        except Exception:  # noqa: BLE001 - an older botocore without that file: nothing to share
            pass
    for kind in ("service-2", "endpoint-rule-set-1"):
        try:
            loader.load_service_model("s3", kind)
        except Exception:  # noqa: BLE001
            pass
    fresh = botocore.session.create_loader

    def shared(search_path_string=None):
        return loader if search_path_string is None else fresh(search_path_string)

    botocore.session.create_loader = shared


def _reinit():
    """Redoes, in a child whose environment, HOME, TMPDIR and working directory are now the task's,
    what flytekit and its dependencies computed from them at import time in this server."""
    time.tzset()
    tempfile.tempdir = None

    import fsspec.config as fsconf

    fsconf.default_conf_dir = os.path.join(os.path.expanduser("~"), ".config/fsspec")
    fsconf.conf_dir = os.environ.get("FSSPEC_CONFIG_DIR", fsconf.default_conf_dir)
    fsconf.conf.clear()
    fsconf.set_conf_files(fsconf.conf_dir, fsconf.conf)
    fsconf.set_conf_env(fsconf.conf)

    import flytekit.configuration.feature_flags as flags
    import flytekit.configuration.file as cfgfile
    import flytekit.core.context_manager as cm
    import flytekit.core.data_persistence as dp
    import flytekit.core.type_engine as te
    import flytekit.loggers as loggers
    from flytekit.configuration import DataConfig

    flags.FeatureFlags.FLYTE_PYTHON_PACKAGE_ROOT = flags._get("FLYTE_PYTHON_PACKAGE_ROOT", "auto")
    cfgfile.get_config_file.cache_clear()
    dp._WRITE_SIZE_CHUNK_BYTES = int(os.environ.get("_F_P_WRITE_CHUNK_SIZE", "26214400"))
    te._TYPE_ENGINE_COROS_BATCH_SIZE = int(os.environ.get("_F_TE_MAX_COROS", "10"))
    # The default file access (used by fast-execute's bundle download) carries the storage settings
    # (FLYTE_AWS_*) and a sandbox in TMPDIR: the task's, not this server's.
    dp.flyte_tmp_dir = tempfile.mkdtemp(prefix="flyte-")
    dp.default_local_file_access_provider = dp.FileAccessProvider(
        local_sandbox_dir=os.path.join(dp.flyte_tmp_dir, "sandbox"),
        raw_output_prefix=os.path.join(dp.flyte_tmp_dir, "raw"),
        data_config=DataConfig.auto(),
    )
    cm.default_local_file_access_provider = dp.default_local_file_access_provider
    heartbeat = os.path.expanduser("~/.local/share/code-server/heartbeat")
    for name in ("flytekit.interactive.vscode_lib.vscode_constants", "flytekit.interactive.vscode_lib.decorator"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "HEARTBEAT_PATH"):
            module.HEARTBEAT_PATH = heartbeat

    # Logging: a task process gets JSON logs (FLYTE_INTERNAL_EXECUTION_ID is set), this server got
    # rich ones; the handlers are rebuilt from the task's environment.
    for name in ("flytekit", "user_space", "developer"):
        logger = loggers.logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    loggers.initialize_global_loggers()
    if os.environ.get("FLYTE_SDK_RICH_TRACEBACKS") != "0":
        from rich import traceback as rich_traceback

        rich_traceback.install(width=None, extra_lines=0)
    else:
        sys.excepthook = sys.__excepthook__
    cm.FlyteContextManager.initialize()


def _check_hooks():
    """The flytekit internals `_reinit` touches exist (another flytekit version may differ)."""
    import flytekit.configuration.feature_flags as flags
    import flytekit.configuration.file as cfgfile
    import flytekit.core.context_manager as cm
    import flytekit.core.data_persistence as dp
    import flytekit.core.type_engine as te
    import flytekit.loggers as loggers

    required = [
        (flags, "_get"), (flags.FeatureFlags, "FLYTE_PYTHON_PACKAGE_ROOT"), (cfgfile.get_config_file, "cache_clear"),
        (dp, "_WRITE_SIZE_CHUNK_BYTES"), (dp, "flyte_tmp_dir"), (dp, "default_local_file_access_provider"),
        (dp, "FileAccessProvider"), (te, "_TYPE_ENGINE_COROS_BATCH_SIZE"), (cm, "default_local_file_access_provider"),
        (cm.FlyteContextManager, "initialize"), (loggers, "initialize_global_loggers"),
    ]
    missing = [f"{getattr(owner, '__name__', owner)}.{attr}" for owner, attr in required if not hasattr(owner, attr)]
    if missing:
        raise RuntimeError("this flytekit lacks " + ", ".join(missing))


def _pythonpath(env):
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _exit_code(exc):
    """The status `sys.exit(x)` gives a process, as CPython computes it."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _which(program, env):
    if os.sep in program:
        return program
    return shutil.which(program, path=env.get("PATH", os.defpath))


def _served_here(script):
    """A console script this server can run in-process: one of ENTRIES, for this interpreter."""
    if script is None or os.path.basename(script) not in ENTRIES:
        return False
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == b"#!" + os.fsencode(sys.executable)


def _run_script(argv, env):
    """Runs console script argv[0] as `python argv[0] argv[1:]` would, in this process, with env as
    its whole environment; returns its exit status."""
    os.environ.clear()
    os.environ.update(env)
    for key, value in _ADDED_AT_START.items():
        os.environ.setdefault(key, value)
    sys.path[:] = [os.path.dirname(os.path.realpath(argv[0]))] + _pythonpath(env) + _BASE_PATH
    sys.argv = list(argv)
    sys.orig_argv = [sys.executable] + list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as e:
        return _exit_code(e)


def _in_process_subprocess(original):
    """pyflyte-fast-execute downloads the bundle, then runs `pyflyte-execute ...` as a subprocess
    with PYTHONPATH += the bundle directory: a second interpreter and a second flytekit import. Here
    that command runs in this same (already warm) process instead, with that environment, when it
    is a console script served here; anything else still gets a real subprocess."""

    def run(cmd, env=None):
        env = dict(os.environ) if env is None else env
        script = _which(cmd[0], env) if cmd else None
        if not _served_here(script):
            return original(cmd, env)
        return _run_script([script] + list(cmd[1:]), env)

    return run


def _child(request, log_fd, private_fds):
    """In the forked child: become the task process, run it, exit. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig, handler in _STARTUP_SIGNALS.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
        for fd in private_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in _ADDED_AT_START.items():
            os.environ.setdefault(key, value)
        _reinit()
        import flytekit.bin.entrypoint as entrypoint

        entrypoint._run_subprocess = _in_process_subprocess(entrypoint._run_subprocess)
        try:
            code = _run_script(request["argv"], request["env"])
        except KeyboardInterrupt:
            # CPython ends an uncaught KeyboardInterrupt by dying of SIGINT.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        # What interpreter shutdown does before exiting: wait for non-daemon threads, run atexit.
        threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _start_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class Server:
    def __init__(self, proto_in, proto_out):
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.children = {}  # pid -> request id
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    def send(self, message):
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[os.write(self.proto_out, data):]

    def serve(self):
        signal.set_wakeup_fd(self.wake_w)
        # A handler (not SIG_DFL) so that SIGCHLD reaches the wakeup pipe.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.proto_in, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in self.selector.select():
                if key.fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    data = os.read(self.proto_in, 1 << 16)
                    if not data:
                        self.stop()
                        return
                    self.buffer += data
                    while b"\n" in self.buffer:
                        line, self.buffer = self.buffer.split(b"\n", 1)
                        if line.strip():
                            self.handle(line)
            self.reap()

    def handle(self, line):
        try:
            request = json.loads(line)
            rid = request["id"]
        except (ValueError, KeyError, TypeError) as e:
            print(f"aloft forkserver: ignoring an unreadable request: {e}", file=sys.stderr)
            return
        try:
            argv, env, cwd, log = request["argv"], request["env"], request["cwd"], request["log"]
            if not argv or not isinstance(env, dict):
                raise ValueError("argv is empty or env is not an object")
        except (KeyError, TypeError, ValueError) as e:
            self.send({"kind": "refused", "id": rid, "message": f"bad request: {e}"})
            return
        # What makes `spawn` fail on the cold path is checked here, so it is refused the same way.
        try:
            log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as e:
            self.send({"kind": "refused", "id": rid, "message": f"cannot open the task log {log}: {e}"})
            return
        if not os.path.isdir(cwd):
            os.close(log_fd)
            self.send({"kind": "refused", "id": rid, "message": f"cannot start `{argv[0]}`: no directory {cwd}"})
            return
        private = [self.proto_in, self.proto_out, self.wake_r, self.wake_w]
        pid = os.fork()
        if pid == 0:
            self.selector.close()
            _child(request, log_fd, private)
        os.close(log_fd)
        try:
            # Also done by the child; whichever runs first, the group exists before the executor
            # hears the pid and may signal it.
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.children[pid] = rid
        self.send({"kind": "started", "id": rid, "pid": pid, "start": _start_ticks(pid)})

    def reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rid = self.children.pop(pid, None)
            if rid is None:
                continue
            if os.WIFSIGNALED(status):
                self.send({"kind": "exited", "id": rid, "code": None, "signal": os.WTERMSIG(status)})
            else:
                self.send({"kind": "exited", "id": rid, "code": os.waitstatus_to_exitcode(status), "signal": None})

    def stop(self):
        """The executor is gone: its tasks go with it."""
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def main():
    # The protocol moves to private descriptors; fd 0 becomes /dev/null and fd 1 stderr, so that
    # whatever the imports print cannot be taken for a reply.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    server = Server(proto_in, proto_out)
    try:
        import_keys = _record_env_reads(_preload)
        _check_hooks()
        if threading.active_count() != 1:
            raise RuntimeError(f"the imports started threads: {threading.enumerate()}")
    except BaseException as e:
        server.send({"kind": "failed", "message": f"{type(e).__name__}: {e}"})
        return 1
    import flytekit

    server.send({
        "kind": "ready",
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "flytekit": flytekit.__version__,
        "import_keys": sorted(import_keys),
        "reinit_keys": list(REINIT_KEYS),
        "reinit_prefixes": list(REINIT_PREFIXES),
        "start_prefixes": list(START_PREFIXES),
    })
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
