"""scripts/two-domains works as the README says: up, status, federation
between the demo accounts, down."""

import asyncio
import os
import random
import subprocess
from pathlib import Path

from tests.harness import REPO, login


class Endpoint:
    """What login() needs to reach one of the demo servers."""

    def __init__(self, workdir: Path, domain: str, c2s_port: int):
        self.workdir, self.domain, self.c2s_port = workdir, domain, c2s_port

    def cert(self, domain: str) -> Path:
        return self.workdir / domain / "data" / "certs" / f"{domain}.crt"


def run(command: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / "two-domains"), command], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_two_domains_up_federate_down(tmp_path):
    base = random.randrange(20000, 40000, 10)
    env = dict(os.environ, TWO_DOMAINS_DIR=str(tmp_path), TWO_DOMAINS_BASE_PORT=str(base))
    started = run("up", env)
    try:
        assert started.returncode == 0, started.stderr
        assert "created alice@a.localhost (password alice-demo)" in started.stdout
        assert f"port {base + 222} (STARTTLS)" in started.stdout
        status = run("status", env)
        assert status.returncode == 0 and status.stdout.count("running") == 2
        assert "accounts: bob@b.localhost" in status.stdout

        alice = await login(Endpoint(tmp_path, "a.localhost", base + 222),
                            "alice@a.localhost/demo", "alice-demo")
        bob = await login(Endpoint(tmp_path, "b.localhost", base + 10222),
                          "bob@b.localhost/demo", "bob-demo")
        bob.send_presence()
        alice.send_message(mto="bob@b.localhost", mbody="across domains", mtype="chat")
        msg = await asyncio.wait_for(bob.messages.get(), 15)
        assert msg["body"] == "across domains"
        await alice.close()
        await bob.close()
    finally:
        stopped = run("down", env)
    assert stopped.returncode == 0 and stopped.stdout.count("stopped") == 2
    assert run("status", env).stdout.count("not running") == 2


def test_demo_transfer_moves_alice_and_explains_a_second_run(tmp_path):
    base = random.randrange(20000, 40000, 10)
    env = dict(os.environ, TWO_DOMAINS_DIR=str(tmp_path), TWO_DOMAINS_BASE_PORT=str(base))
    assert "not running" in run("demo-transfer", env).stderr
    started = run("up", env)
    try:
        assert started.returncode == 0, started.stderr
        demo = run("demo-transfer", env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "created carol@a.localhost (password carol-demo)" in out
        assert "bob@b.localhost's roster before: alice@a.localhost (both)" in out
        assert "Transferred alice@a.localhost → alice@b.localhost (XEP-0015)" in out
        assert "  bob@b.localhost    updated" in out and "  carol@a.localhost  updated" in out
        assert "bob@b.localhost's roster after: alice@b.localhost (both)" in out
        assert "carol@a.localhost's roster after: alice@b.localhost (both)" in out
        assert "notified bob@b.localhost" in demo.stderr
        again = run("demo-transfer", env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "alice@a.localhost has already moved" in again.stdout
        assert "bob@b.localhost's roster now: alice@b.localhost (both)" in again.stdout
    finally:
        stopped = run("down", env)
    assert stopped.returncode == 0 and stopped.stdout.count("stopped") == 2


def test_demo_move_moves_dora_with_xep_0283_and_traces_it(tmp_path):
    base = random.randrange(20000, 40000, 10)
    env = dict(os.environ, TWO_DOMAINS_DIR=str(tmp_path), TWO_DOMAINS_BASE_PORT=str(base),
               TWO_DOMAINS_TRACE="1")
    started = run("up", env)
    try:
        assert started.returncode == 0, started.stderr
        demo = run("demo-move", env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "Moved dora@a.localhost → dora@b.localhost" in out
        assert "  bob@b.localhost    auto-updated" in out
        assert "  carol@a.localhost  auto-updated" in out
        assert "bob@b.localhost's roster after: dora@b.localhost (both)" in out
        # the trace the README points to: Bob's server asked the old account, as Bob
        log = (tmp_path / "b.localhost" / "xferd.log").read_text()
        assert 'from="bob@b.localhost"' in log and "urn:xmpp:moved:1" in log
        assert "moved: dora@a.localhost → dora@b.localhost for bob@b.localhost: verified" in log
    finally:
        stopped = run("down", env)
    assert stopped.returncode == 0
