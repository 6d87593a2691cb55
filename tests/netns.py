"""Several hosts on this machine, for the scale-out tests and benchmarks/hosts.py: each host a
network namespace with a veth link to a bridge in the root namespace, and its own host name
(`unshare --uts`); the shared servers (Redis, a port forwarded to PostgreSQL, the OpenAI
simulator) listen on the bridge's addresses, the way they would on a LAN.

    root namespace: bridge fb<tag>  10.199.<n>.1 (servers)  10.199.<n>.2 (the provider)
    host i:         namespace fh<tag><i>, link fp<tag><i>, 10.199.<n>.<10+i>, host name fleet-host-<i>

A host's link is cut on the root side (`cut`, `restore`: the host is partitioned from
everything); its route to the provider alone is taken away inside its namespace
(`cut_provider`: an `unreachable` route, so its calls fail at once with "no route to host").
Every address is on this machine, made here, and gone when the block ends.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.199"
REPO = Path(__file__).resolve().parents[1]


def unavailable() -> str | None:
    """Why hosts in namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"fleetprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    index: int
    namespace: str
    link: str  # the root side of its veth pair
    address: str

    @property
    def name(self) -> str:
        return f"fleet-host-{self.index}"

    @property
    def prefix(self) -> list[str]:
        """What runs a command inside this host: its namespace, its host name."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                "sh", "-c", f'hostname {self.name} && exec "$@"', "sh"]


class Hosts:
    """`count` hosts on one bridge; a context manager that removes everything it made."""

    def __init__(self, count: int):
        self.tag = os.urandom(2).hex()
        taken = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        third = random.choice([n for n in range(1, 250) if f" {SUBNET}.{n}." not in taken])  # one of ours may run beside
        self.gateway = f"{SUBNET}.{third}.1"
        self.provider = f"{SUBNET}.{third}.2"
        self.bridge = f"fb{self.tag}"
        self.hosts = [Host(i, f"fh{self.tag}{i}", f"fv{self.tag}{i}", f"{SUBNET}.{third}.{10 + i}")
                      for i in range(1, count + 1)]

    def __enter__(self) -> Hosts:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("addr", "add", f"{self.provider}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                peer = f"fp{self.tag}{host.index}"
                _ip("netns", "add", host.namespace)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", host.namespace)
                _ip("link", "set", host.link, "master", self.bridge, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", peer)
                _ip("-n", host.namespace, "link", "set", peer, "up")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)  # takes its veth pair
            subprocess.run(["ip", "link", "delete", host.link], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def cut_provider(self, host: Host) -> None:
        _ip("-n", host.namespace, "route", "add", "unreachable", f"{self.provider}/32")

    def restore_provider(self, host: Host) -> None:
        _ip("-n", host.namespace, "route", "del", "unreachable", f"{self.provider}/32")


class Forwarder:
    """A TCP port on `host` that forwards each connection to `target` (PostgreSQL listens on the
    loopback only; the hosts reach it here, as they would reach a database server on the LAN)."""

    def __init__(self, host: str, target: tuple[str, int], port: int = 0):
        from core.net import free_port

        self.target = target
        self.port = port or free_port()
        self._server = socket.create_server((host, self.port))
        self._thread = threading.Thread(target=self._accept, name="fleet-forwarder", daemon=True)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                for sock in (source, sink):
                    if sock in self._open:
                        self._open.discard(sock)
                        sock.close()


class NetnsFleet:
    """The shared servers on the bridge (a private Redis, PostgreSQL forwarded, the OpenAI
    simulator on the provider's address) and `fleet worker` processes on the hosts.

    `database_url` is a migrated database on the machine's PostgreSQL (the hosts reach it
    through the forwarder); `processes` (tests/helpers.py) starts and stops the workers."""

    def __init__(self, hosts: Hosts, workdir, database_url: str, processes, *, api_key: str,
                 latency_ms: float = 200, env: dict | None = None):
        from urllib.parse import urlparse

        self.hosts, self.workdir, self.processes, self.api_key = hosts, workdir, processes, api_key
        self.database_url = database_url
        self.latency_ms = latency_ms
        self.extra_env = env or {}
        parsed = urlparse(database_url)
        self._postgres = (parsed.hostname or "127.0.0.1", parsed.port or 5432)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> NetnsFleet:
        from core.net import free_port
        from core.simulators.server import SimulatorControl
        from tests.servers import RedisServer

        try:
            self.redis = self._stack.enter_context(RedisServer(self.workdir / "redis", bind=self.hosts.gateway))
            # The forwarder and the simulator run in processes of their own, as the servers of a LAN would.
            port = free_port()
            self.processes.start("forward", self.hosts.gateway, str(port), *map(str, self._postgres),
                                 module="tests.netns", name="forwarder", env=os.environ)
            self.hosts_database_url = self.database_url.replace(
                f"{self._postgres[0]}:{self._postgres[1]}", f"{self.hosts.gateway}:{port}", 1)
            sim_port = free_port()
            self.processes.start("simulate", "openai", "--host", self.hosts.provider, "--port", str(sim_port),
                                 "--latency-ms", str(self.latency_ms), "--api-key", self.api_key, name="openai-sim",
                                 env=os.environ)
            self.openai = SimulatorControl(f"http://{self.hosts.provider}:{sim_port}")
            self.openai.url = f"{self.openai.base_url}/v1"
            _until(lambda: _answers(self.openai) and _accepts(self.hosts.gateway, port), "the forwarder and simulator")
        except BaseException:
            self.processes.stop_all()
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for proc in self.processes.started:  # the hosts are thrown away: no graceful stop to wait for
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.processes.stop_all()
        self._stack.close()

    def env(self, name: str) -> dict:
        """A host's settings: the same for every host but its var/ directory."""
        var = self.workdir / name
        var.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "FLEET_VAR_DIR": str(var), "BROKER_URL": self.redis.url,
                "DATABASE_URL": self.hosts_database_url, "OPENAI_BASE_URL": self.openai.url,
                "OPENAI_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def start_worker(self, host: Host, processes: int = 1, threads: int = 2):
        return self.processes.start("worker", "-p", str(processes), "-t", str(threads), env=self.env(host.name),
                                    name=f"worker-{host.name}", prefix=host.prefix)

    def start_scheduler(self, host: Host, schedule):
        """A scheduler on `host` that knows the test tasks, on the schedule file `schedule`."""
        return self.processes.start("scheduler", module="tests.fleet_with_test_tasks",
                                    env={**self.env(host.name), "FLEET_SCHEDULE": str(schedule)},
                                    name=f"scheduler-{host.name}", prefix=host.prefix)

    def ledger(self, name: str) -> list[tuple]:
        """The schedule ledger's rows of the entry `name`: (slot time, state, scheduler), by slot."""
        return self._query("SELECT slot_time, state, scheduler FROM schedule_runs WHERE name = %s ORDER BY slot_time",
                           (name,))

    def load(self, plans: int) -> tuple[int, int]:
        """`plans` one-day plans queued from the root namespace; their first and last id."""
        done = subprocess.run([sys.executable, "-m", "tests.hosts_load", str(plans)], env=self.env("loader"),
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"loading plans failed: {done.stderr[-2000:]}")
        first, last, _ = map(int, done.stdout.split())
        return first, last

    def _query(self, sql: str, args=()) -> list[tuple]:
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.database_url)) as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()

    def successes(self) -> dict[str, int]:
        """Successful generation jobs so far, by the host that ran them (the JobLog's worker)."""
        rows = self._query("SELECT split_part(worker, '~', 1), count(*) FROM job_log "
                           "WHERE status = 'success' AND job_class = 'generate_user_workout_plan' GROUP BY 1")
        return {host: n for host, n in rows}

    def job_statuses(self) -> dict[str, int]:
        """JobLog rows of the generation jobs by status."""
        return dict(self._query("SELECT status, count(*) FROM job_log WHERE job_class = 'generate_user_workout_plan' "
                                "GROUP BY 1"))

    def provider_calls(self) -> int:
        """Requests the OpenAI simulator received."""
        return self.openai.stats()["requests"]

    def days(self) -> dict[str, int]:
        """Workout days by status."""
        return dict(self._query("SELECT status, count(*) FROM workout_plan GROUP BY 1"))

    def state_redis(self):
        import redis

        return redis.Redis.from_url(self.redis.url)

    def fleet_breaker(self, service: str = "openai") -> str:
        state = self.state_redis().get(f"fleet:breaker:{service}:pybreaker:state")
        return state.decode() if state else "closed"


def _answers(simulator) -> bool:
    try:
        simulator.stats()
        return True
    except Exception:
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _until(condition, what: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.1)


if __name__ == "__main__":  # python -m tests.netns forward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
    _, verb, host, port, target_host, target_port = sys.argv
    assert verb == "forward", verb
    forwarder = Forwarder(host, (target_host, int(target_port)), port=int(port))
    forwarder._accept()  # until SIGTERM ends the process
