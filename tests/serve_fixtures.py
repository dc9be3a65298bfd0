"""What the service tests share: a Styx stack with short service timings and a load
balancer process, the replica program (a tiny HTTP server naming its replica and version),
a load generator, and killing a replica's node the way a lost VM goes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from styx.providers.local import procs
from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import free_port

#: Service timings for tests: the workflow looks every half second, the autoscaler averages
#: over 3 s, a leaving replica drains 1.5 s; load balancers refresh every 0.3 s.
SERVE_ENV = {
    "STYX_SERVE_TICK_SECONDS": "0.5",
    "STYX_SERVE_QPS_WINDOW_SECONDS": "3",
    "STYX_SERVE_DRAIN_SECONDS": "1.5",
    "STYX_LB_REFRESH_SECONDS": "0.3",
    "STYX_LB_WAIT_SECONDS": "15",
}

#: The replica: answers every GET with its replica id and version (``/health`` too), on its
#: node's address and the service's port.
SERVER = r'''
import http.server, json, os, sys
body = json.dumps({"replica": os.environ["STYX_SERVE_REPLICA_ID"], "version": os.environ["VERSION"]}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
host = os.environ["SKYPILOT_NODE_IPS"].split()[0]
print("serving", host, sys.argv[1], flush=True)
http.server.ThreadingHTTPServer((host, int(sys.argv[1])), H).serve_forever()
'''


def service_task(port: int, version: str = "1", *, replicas: int | None = 2,
                 policy: dict[str, Any] | None = None, initial_delay: int = 60) -> dict[str, Any]:
    service: dict[str, Any] = {"readiness_probe": {"path": "/health", "initial_delay_seconds": initial_delay},
                               "ports": port}
    if policy is not None:
        service["replica_policy"] = policy
    else:
        service["replicas"] = replicas
    return {
        "name": "web",
        "envs": {"VERSION": version},
        "service": service,
        "run": f"cat > server.py <<'PYEOF'\n{SERVER}\nPYEOF\nexec python3 server.py {port}\n",
    }


class ServeStack(StyxStack):
    """A stack with its own load balancer process, and a range of ports of its own."""

    def __init__(self, home: Path, temporal_address: str, extra_env: dict[str, str] | None = None) -> None:
        first = free_port()
        super().__init__(home, temporal_address, extra_env={
            **SERVE_ENV, "STYX_SERVE_PORTS": f"{first}-{first + 4}", **(extra_env or {})})
        self.lb: subprocess.Popen | None = None

    def start_lb(self) -> subprocess.Popen:
        ready = self.home / "run" / f"lb-{uuid.uuid4().hex[:6]}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        self.lb = self._spawn("lb", {"STYX_READY_FILE": str(ready)})
        wait_for(lambda: ready.exists() or self.lb.poll() is not None, 60, "the load balancer to start")
        assert self.lb.poll() is None, (self.home / "logs" / "lb.log").read_text()[-3000:]
        return self.lb

    def kill_lb(self) -> None:
        assert self.lb is not None
        self.lb.send_signal(signal.SIGKILL)
        self.lb.wait()

    def start(self) -> "ServeStack":
        super().start()
        self.start_lb()
        return self

    def stop(self) -> None:
        if self.lb is not None and self.lb.poll() is None:
            self.lb.terminate()
            try:
                self.lb.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.lb.kill()
        super().stop()


@dataclass
class Load:
    """Requests sent in a loop (``threads`` at a time) until stopped; every answer recorded."""

    url: str
    threads: int = 2
    results: list[tuple[float, int | str, dict | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        for _ in range(self.threads):
            t = threading.Thread(target=self._loop, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(30)

    def _loop(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as http:
            while not self._stop.is_set():
                at = time.monotonic()
                try:
                    resp = http.get(self.url)
                    body = resp.json() if resp.status_code == 200 else None
                    self.results.append((at, resp.status_code, body))
                except (httpx.HTTPError, ValueError) as err:
                    self.results.append((at, type(err).__name__, None))

    def failures(self, since: float = 0.0) -> list[tuple[float, int | str, dict | None]]:
        return [r for r in self.results if r[0] >= since and r[1] != 200]

    def count(self) -> int:
        return len(self.results)


def get(url: str) -> dict:
    resp = httpx.get(url, timeout=30, trust_env=False)
    assert resp.status_code == 200, f"{url}: {resp.status_code} {resp.text[:300]}"
    return resp.json()


def kill_node(nodes_root: Path, cluster: str, rank: int = 0) -> int:
    """A VM lost: SIGSTOP the node's server and everything on it (so nothing sees another
    die), then SIGKILL them all. Returns how many processes died."""
    home = str(nodes_root / cluster / f"node-{rank}" / "home")
    servers = [pid for pid, argv in procs.scan_cmdlines()
               if "styx.providers.local.nodeserver" in argv and procs.arg_after(argv, "--home") == home]
    assert servers, f"no server for {home}"
    frozen: set[int] = set()
    found = set(servers)
    for _ in range(100):
        for pid in found - frozen:
            procs.kill(pid, signal.SIGSTOP)
        frozen |= found
        found = set(procs.processes_of([home], procs.job_groups([home])))
        if found <= frozen:
            break
    for pid in frozen:
        procs.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(procs.alive(p) for p in frozen), 10, "the node's processes to die")
    return len(frozen)
