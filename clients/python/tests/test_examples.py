"""The examples in ``examples/`` run as a user would run them (a subprocess with LOOPGATE_URL and
LOOPGATE_TOKEN), against the test server, with a reviewer approving what the policy holds."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, AutoApprover


def run_example(server, name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOOPGATE_URL=server.url, LOOPGATE_TOKEN=server.agent, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name)],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_the_langgraph_agent_refunds_once_a_human_approves(server, ann):
    with AutoApprover(ann) as approver:
        out = run_example(server, "langgraph_agent.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tool issue_refund: refunded 80 GBP on ord_10001" in out.stdout, out.stdout
    assert "agent: Sorted: refunded 80 GBP on ord_10001." in out.stdout
    names = [d["action"]["name"] for d in approver.decided]
    assert names == ["issue_refund"], names  # the look-up ran without a human


def test_the_openai_tools_loop_runs_gated_tools(server, ann):
    with AutoApprover(ann) as approver:
        out = run_example(server, "openai_tools_loop.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tool issue_refund: refunded 120 EUR on ord_20002" in out.stdout, out.stdout
    assert "tool send_email: email to jo@example.com sent" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("agent: Done: refunded 120 EUR")
    assert sorted(d["action"]["name"] for d in approver.decided) == ["issue_refund", "send_email"]
