"""The test session's Loopgate: the real binary (built by ``cargo build``, never by this suite),
serving a fresh SQLite file with ``policy.toml``, plus helpers that act as human reviewers.

The binary is ``LOOPGATE_BIN`` or ``../../target/debug/loopgate`` relative to the package. When it
is missing the session stops with an error: these tests never skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx
import pytest

import loopgate

PKG = Path(__file__).resolve().parents[1]
REPO = PKG.parents[1]
POLICY = Path(__file__).resolve().parent / "policy.toml"


def binary() -> Path:
    return Path(os.environ.get("LOOPGATE_BIN") or PKG / ".." / ".." / "target" / "debug" / "loopgate").resolve()


def pytest_sessionstart(session: pytest.Session) -> None:
    b = binary()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.exit(
            f"the loopgate binary is missing at {b}: build it first (cargo build), or set LOOPGATE_BIN",
            returncode=1,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    #: Tokens: the agent ``bot``, reviewers ``ann`` and ``bob``, the admin ``root``.
    agent: str
    ann: str
    bob: str
    admin: str
    log: Path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    b = binary()
    if not b.is_file():  # also guarded at session start; never skip
        pytest.fail(f"the loopgate binary is missing at {b}")
    tmp = tmp_path_factory.mktemp("loopgate")
    database = f"sqlite://{tmp / 't.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPGATE_")}

    def key(name: str, role: str) -> str:
        out = subprocess.run(
            [str(b), "--database", database, "keys", "create", "--name", name, "--role", role],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert out.returncode == 0, f"keys create failed: {out.stderr}"
        return out.stdout.strip().splitlines()[-1]

    tokens = {n: key(n, r) for n, r in [("bot", "agent"), ("ann", "reviewer"), ("bob", "reviewer"), ("root", "admin")]}
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(b), "--database", database, "serve", "--listen", f"127.0.0.1:{port}", "--policy", str(POLICY)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"loopgate serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"loopgate serve did not come up:\n{log.read_text()}")
        time.sleep(0.05)
    try:
        yield Server(url, tokens["bot"], tokens["ann"], tokens["bob"], tokens["root"], log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def client(server: Server) -> Iterator[loopgate.Client]:
    with loopgate.Client(server.url, server.agent) as c:
        yield c


class Reviewer:
    """A human reviewer, through the HTTP API."""

    def __init__(self, server: Server, token: str) -> None:
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def review_of(self, match: Callable[[Dict[str, Any]], bool], timeout: float = 15) -> Dict[str, Any]:
        """The first pending approval review whose action ``match`` accepts (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.http.get("/v1/reviews", params={"status": "pending", "kind": "approval"})
            listed.raise_for_status()
            for r in listed.json()["reviews"]:
                detail = self.http.get(f"/v1/reviews/{r['id']}").json()
                if detail.get("action") and match(detail["action"]):
                    return detail
            time.sleep(0.05)
        raise AssertionError("no matching review appeared")

    def decide(self, review_id: str, **body: Any) -> Dict[str, Any]:
        resp = self.http.post(f"/v1/reviews/{review_id}/decision", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def decide_when(self, match: Callable[[Dict[str, Any]], bool], **body: Any) -> "threading.Thread":
        """In the background: wait for the matching review and decide it with ``body``."""
        errors: List[BaseException] = []

        def run() -> None:
            try:
                self.decide(self.review_of(match)["id"], **body)
            except BaseException as e:  # reported by join()
                errors.append(e)

        t = _Joining(target=run, daemon=True, errors=errors)
        t.start()
        return t


class _Joining(threading.Thread):
    """A thread whose ``join`` re-raises what went wrong in it."""

    def __init__(self, *, errors: List[BaseException], **kw: Any) -> None:
        super().__init__(**kw)
        self.errors = errors

    def join(self, timeout: Optional[float] = 20) -> None:
        super().join(timeout)
        assert not self.is_alive(), "the reviewer thread is still running"
        if self.errors:
            raise self.errors[0]


class AutoApprover:
    """Approves every pending approval review until stopped (what a very trusting team does)."""

    def __init__(self, reviewer: Reviewer) -> None:
        self.reviewer = reviewer
        self.decided: List[Dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            listed = self.reviewer.http.get("/v1/reviews", params={"status": "pending", "kind": "approval"})
            for r in listed.json().get("reviews", []):
                resp = self.reviewer.http.post(
                    f"/v1/reviews/{r['id']}/decision", json={"verdict": "approve", "comment": "auto-approved in tests"}
                )
                if resp.status_code == 200:
                    self.decided.append(resp.json())
            self._stop.wait(0.05)

    def __enter__(self) -> "AutoApprover":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def ann(server: Server) -> Reviewer:
    return Reviewer(server, server.ann)


@pytest.fixture
def bob(server: Server) -> Reviewer:
    return Reviewer(server, server.bob)
