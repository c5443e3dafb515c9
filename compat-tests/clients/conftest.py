"""Real-client tests: shared fixtures.

Every test module runs once per metadata backend compiled into the `switchyard` binary
(`switchyard backends`, one line per backend, name first, then `key=value` guarantees).
A new backend is picked up without touching this file.

Fixtures
- `backend`: the `Backend` under test (module scope, parametrized by backend name).
- `broker`: a broker process for the whole module, on a free port and a fresh data dir. It is a
  `BrokerProcess`; `bootstrap, handle = broker` also works. `handle.restart()` kills it with
  SIGKILL and starts it again on the same data dir and port.
- `broker_factory`: starts extra brokers for one test (own env, e.g. the default rebalance
  delay), all stopped when the test ends.
- `topic_name`: a unique topic name for the test.
- `cluster` (in `test_cluster.py`): a `Cluster` of three brokers on one backend that runs on
  several nodes (`nodes=multi`), each with its own data dir, Kafka port and cluster port;
  `cluster_factory` starts a fresh one (optionally with extra settings) for a test that kills
  or pauses nodes.

Environment
- `SWITCHYARD_BIN`: the binary (default `$CARGO_TARGET_DIR/debug/switchyard`, else
  `$HOME/.cache/switchyard-target/debug/switchyard`).
- `SWITCHYARD_TEST_RUST_LOG`: the brokers' `RUST_LOG` (default: unset, the broker's own filter;
  readiness is detected from info-level lines, so keep `info` in it).

A failing test gets the log lines its brokers wrote during the test attached to its report, with
the full log's path.
"""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from client_util import FAST_REBALANCE_ENV


READY_LINE = "broker registered"
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 15.0
LOG_TAIL_LINES = 400


def switchyard_bin() -> Path:
    explicit = os.environ.get("SWITCHYARD_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "switchyard-target"
    )
    return Path(target) / "debug" / "switchyard"


@dataclasses.dataclass(frozen=True)
class Backend:
    """One line of `switchyard backends`: the name and the declared guarantees."""

    name: str
    guarantees: dict

    @property
    def durable(self) -> bool:
        """Acknowledged metadata survives a restart of the process."""
        return self.guarantees.get("durability", "none") != "none"


def parse_backends(text: str) -> list[Backend]:
    backends = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        guarantees = {}
        for word in words[1:]:
            if "=" not in word:
                break  # the free-text description starts here
            key, _, value = word.partition("=")
            guarantees[key] = value
        if "durability" not in guarantees:
            raise ValueError(f"`switchyard backends` line without durability=: {line!r}")
        backends.append(Backend(words[0], guarantees))
    return backends


def list_backends() -> list[Backend]:
    binary = switchyard_bin()
    if not binary.is_file():
        raise pytest.UsageError(
            f"switchyard binary not found at {binary}; build it with "
            "`cargo build -p switchyard --all-targets` or set SWITCHYARD_BIN"
        )
    out = subprocess.run(
        [str(binary), "backends"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    backends = parse_backends(out)
    if not backends:
        raise pytest.UsageError(f"`{binary} backends` listed no backend:\n{out}")
    return backends


BACKENDS = list_backends()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RESERVED: set[int] = set()
# Where `reserve_port` draws from: below the ephemeral range, or one share of that
# (`share_ports`).
_PORTS = range(20000, 32000)


def share_ports(index: int, shares: int) -> None:
    """Draw this process's ports from share `index` (0-based) of `shares` equal shares of the
    range, so that processes running clusters side by side never pick the same port (a port
    of a killed node stays free until it restarts, and another process must not take it)."""
    global _PORTS
    size = (32000 - 20000) // shares
    _PORTS = range(20000 + index * size, 20000 + (index + 1) * size)


def reserve_port() -> int:
    """A free port below the ephemeral range (20000..32000, or this process's share of it),
    not handed out again by this process until released. Cluster ports are dialed by peers
    and restarted nodes bind them again, so an ephemeral port (which an outgoing connection
    may take meanwhile) will not do."""
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in _RESERVED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _RESERVED.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS.start}..{_PORTS.stop}")


def release_port(port: int) -> None:
    """Let `reserve_port` hand out `port` again: whatever had it is gone."""
    _RESERVED.discard(port)


class BrokerProcess:
    """A `switchyard serve` process. Its stderr goes to `log_path`, across restarts."""

    def __init__(self, backend: Backend, workdir: Path, extra_env: dict | None = None,
                 port: int | None = None, args: list[str] | None = None, http: bool = False):
        self.backend = backend
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.port = free_port() if port is None else port
        self.args = list(args or [])
        # With `http`, the admin HTTP listener (/metrics, /health, /ready) runs on `http_port`.
        self.http_port = reserve_port() if http else None
        if self.http_port is not None:
            self.args += ["--http-listen", f"127.0.0.1:{self.http_port}"]
        self.env = dict(FAST_REBALANCE_ENV if extra_env is None else extra_env)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._reader: threading.Thread | None = None
        self._killed = False

    # `bootstrap, handle = broker`
    def __iter__(self):
        return iter((self.bootstrap, self))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_size(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def log_text(self, since: int = 0) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", errors="replace")

    def _child_env(self) -> dict:
        # Only the settings chosen here reach the broker: drop the caller's SWITCHYARD_* vars.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        # The broker's own default filter unless SWITCHYARD_TEST_RUST_LOG says otherwise.
        env.pop("RUST_LOG", None)
        if "SWITCHYARD_TEST_RUST_LOG" in os.environ:
            env["RUST_LOG"] = os.environ["SWITCHYARD_TEST_RUST_LOG"]
        env.update(self.env)
        return env

    def start(self, on_line=None) -> None:
        """Start and wait for the readiness line. `on_line`, if given, is called (from the log
        thread) with every stderr line up to and including the readiness line, the moment it is
        read; `start` returns after the call for the readiness line."""
        self.launch(on_line)
        self.wait_ready()

    def launch(self, on_line=None) -> None:
        """Start the process without waiting for it to be ready (the nodes of a cluster are
        launched together, then waited for: none is ready before a quorum runs)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._killed = False
        self._log.write(f"===== start #{self.starts}: backend={self.backend.name} "
                        f"listen={self.bootstrap} args={self.args} env={self.env} =====\n")
        ready = threading.Event()
        callback_errors = []
        # With kafka.listeners in the environment those are the listeners (`port` is then
        # one of them, the one `bootstrap` names); otherwise `--listen` is the one listener.
        listen = [] if "SWITCHYARD_KAFKA__LISTENERS" in self.env else ["--listen", self.bootstrap]
        # cwd is the work dir, so a switchyard.toml in the caller's directory is not read.
        self.proc = subprocess.Popen(
            [str(switchyard_bin()), "serve",
             "--metadata-backend", self.backend.name,
             "--data-dir", str(self.data_dir),
             *listen, *self.args],
            cwd=self.workdir,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.PIPE,
        )
        proc = self.proc

        def pump():
            # Copies stderr to the log file for the life of the process; the readiness line is
            # seen here, so there is no fixed sleep anywhere in start-up.
            for raw in proc.stderr:
                line = raw.decode("utf-8", errors="replace")
                self._log.write(line)
                if on_line is not None and not ready.is_set():
                    try:
                        on_line(line)
                    except BaseException as e:  # re-raised by wait_ready(); keep pumping
                        callback_errors.append(e)
                if READY_LINE in line:
                    ready.set()
            proc.stderr.close()

        self._reader = threading.Thread(target=pump, name=f"broker-log-{self.port}", daemon=True)
        self._reader.start()
        self._ready = ready
        self._callback_errors = callback_errors

    def wait_ready(self) -> None:
        """Wait for the readiness line of the last `launch`."""
        proc = self.proc
        deadline = time.monotonic() + START_DEADLINE_S
        while not self._ready.wait(0.05):
            if proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(
                    f"broker ({self.backend.name}) exited with {proc.returncode} before "
                    f"'{READY_LINE}'; log {self.log_path}:\n{self.log_text()[-8000:]}")
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(
                    f"broker ({self.backend.name}) not ready within {START_DEADLINE_S}s; "
                    f"log {self.log_path}:\n{self.log_text()[-8000:]}")
        if self._callback_errors:
            raise self._callback_errors[0]

    def kill9(self) -> None:
        """SIGKILL: no graceful shutdown, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_DEADLINE_S)
            self._killed = True
            self._log.write(f"===== killed with SIGKILL (start #{self.starts}) =====\n")
        self._join_reader()

    def pause(self) -> None:
        """SIGSTOP: the process stays, but answers nothing and sends nothing."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGSTOP)
        self._log.write(f"===== paused with SIGSTOP (start #{self.starts}) =====\n")

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self._log.write(f"===== resumed with SIGCONT (start #{self.starts}) =====\n")

    def restart(self, on_line=None) -> None:
        """kill -9, then start again on the same data dir and port."""
        self.kill9()
        self.start(on_line)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL if it is still running after the deadline. Returns the exit code;
        None if it was not running because `kill9` stopped it."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None and self._killed:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self._log.write(f"===== still running {STOP_DEADLINE_S}s after SIGTERM; "
                                "SIGKILL =====\n")
                self.proc.kill()
                self.proc.wait(STOP_DEADLINE_S)
        self._join_reader()
        return self.proc.returncode

    def close(self) -> None:
        """Stop it and check the shutdown was graceful: exit code 0 after SIGTERM."""
        try:
            code = self.stop()
            assert code in (0, None), (
                f"broker ({self.backend.name}) exited with {code}: crashed, or not gracefully "
                f"on SIGTERM (-9: it needed SIGKILL after {STOP_DEADLINE_S}s); "
                f"log {self.log_path}:\n" + self.log_text()[-4000:])
        finally:
            self._log.close()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(STOP_DEADLINE_S)
            self._reader = None


def close_all(closables) -> None:
    """Close every one, then fail with every close that failed."""
    failures = []
    for closable in closables:
        try:
            closable.close()
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


class BrokerFactory:
    def __init__(self, backend: Backend, base: Path):
        self.backend = backend
        self.base = base
        self.brokers: list[BrokerProcess] = []

    def start(self, extra_env: dict | None = None, args: list[str] | None = None,
              http: bool = False) -> BrokerProcess:
        workdir = self.base / f"broker-{len(self.brokers) + 1}"
        workdir.mkdir(parents=True)
        broker = BrokerProcess(self.backend, workdir, extra_env, args=args, http=http)
        self.brokers.append(broker)
        broker.start()
        return broker

    def close(self) -> None:
        close_all(self.brokers)


# Heartbeats and fencing fast enough that a test sees a killed broker fenced within seconds.
CLUSTER_ENV = {
    **FAST_REBALANCE_ENV,
    "SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS": "250",
    "SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS": "2000",
}


def write_secret(path: Path) -> Path:
    """A fresh cluster secret file (mode 0600) at `path`, which must not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


class Cluster:
    """`size` brokers of one backend on loopback, node ids 1..size; `nodes[i]` is node i."""

    def __init__(self, backend: Backend, base: Path, size: int = 3, env: dict | None = None,
                 http: bool = False):
        self.backend = backend
        cluster_ports = {i: reserve_port() for i in range(1, size + 1)}
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in cluster_ports.items())
        self.secret_file = write_secret(base / "cluster.secret")
        secret_env = {"SWITCHYARD_CLUSTER_SECRET_FILE": str(self.secret_file)}
        self.nodes: dict[int, BrokerProcess] = {}
        for i in cluster_ports:
            workdir = base / f"node-{i}"
            workdir.mkdir(parents=True)
            self.nodes[i] = BrokerProcess(
                backend, workdir, {**CLUSTER_ENV, **secret_env, **(env or {})},
                port=reserve_port(), args=["--node-id", str(i), "--peers", self.peers],
                http=http)

    def start(self) -> None:
        """Launch every node, then wait for each to register: none is ready alone."""
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready()

    def bootstrap(self, *ids: int) -> str:
        """Bootstrap servers: the given nodes, or every node."""
        return ",".join(self.nodes[i].bootstrap for i in (ids or self.nodes))

    def running(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.proc is not None and n.proc.poll() is None]

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """`switchyard cluster ARGS` against this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env["SWITCHYARD_CLUSTER_SECRET_FILE"] = str(self.secret_file)
        return subprocess.run(
            [str(switchyard_bin()), "cluster", *args,
             "--metadata-backend", self.backend.name, "--peers", self.peers],
            cwd=next(iter(self.nodes.values())).workdir, env=env,
            capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        close_all(self.nodes.values())


MULTI_NODE = [b for b in BACKENDS if b.guarantees.get("nodes") == "multi"]


class ClusterFactory:
    def __init__(self, backend: Backend, base: Path):
        self.backend = backend
        self.base = base
        self.clusters: list[Cluster] = []

    def start(self, env: dict | None = None, http: bool = False) -> Cluster:
        """A fresh cluster; `env` adds to (or overrides) the nodes' cluster settings; `http`
        runs every node's admin HTTP listener."""
        cluster = self.create(env, http)
        cluster.start()
        return cluster

    def create(self, env: dict | None = None, http: bool = False) -> Cluster:
        """A fresh cluster, not started."""
        cluster = Cluster(self.backend, self.base / f"cluster-{len(self.clusters) + 1}", env=env,
                          http=http)
        self.clusters.append(cluster)
        return cluster

    def close(self) -> None:
        close_all(self.clusters)


@pytest.fixture(scope="module", params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request) -> Backend:
    return request.param


@pytest.fixture(scope="module")
def broker(backend, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"broker-{backend.name}")
    handle = BrokerProcess(backend, workdir)
    try:
        handle.start()
        yield handle
    finally:
        handle.close()


@pytest.fixture
def broker_factory(backend, tmp_path):
    factory = BrokerFactory(backend, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module", params=MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def multi_backend(request):
    return request.param


@pytest.fixture(scope="module")
def cluster(multi_backend, tmp_path_factory):
    handle = Cluster(multi_backend, tmp_path_factory.mktemp(f"cluster-{multi_backend.name}"))
    try:
        handle.start()
        yield handle
    finally:
        handle.close()


@pytest.fixture
def cluster_factory(multi_backend, tmp_path):
    factory = ClusterFactory(multi_backend, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def topic_name(request) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:120]
    return f"{base}-{uuid.uuid4().hex[:8]}"


# ---- broker logs in failure reports -----------------------------------------------------------

def _brokers_of(item) -> list[BrokerProcess]:
    found = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, BrokerProcess):
            found.append(value)
        elif isinstance(value, BrokerFactory):
            found.extend(value.brokers)
        elif isinstance(value, Cluster):
            found.extend(value.nodes.values())
        elif isinstance(value, ClusterFactory):
            for cluster in value.clusters:
                found.extend(cluster.nodes.values())
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # Where each running broker's log stood when the test body began (fixtures are set up).
    item._broker_log_marks = {
        id(b): b.log_size() for b in _brokers_of(item) if not b._log.closed
    }
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    marks = getattr(item, "_broker_log_marks", {})
    for b in _brokers_of(item):
        if b._log.closed:
            continue
        lines = b.log_text(since=marks.get(id(b), 0)).splitlines()
        cut = ""
        if len(lines) > LOG_TAIL_LINES:
            cut = f"[... {len(lines) - LOG_TAIL_LINES} earlier lines in the file ...]\n"
            lines = lines[-LOG_TAIL_LINES:]
        report.sections.append((
            f"broker log ({b.backend.name}, {b.bootstrap}, {b.log_path}) during this test",
            cut + "\n".join(lines),
        ))
