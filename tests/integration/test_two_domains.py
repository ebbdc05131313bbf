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
        """The clients trust the pair's local CA and nothing else."""
        return self.workdir / "ca" / "xferd-local-ca.crt"


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
        ca = tmp_path / "ca" / "xferd-local-ca.crt"
        assert f"Both certificates are signed by the local CA {ca}" in started.stdout
        assert f"sudo cp {ca} /usr/local/share/ca-certificates/" in started.stdout
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
        # no certificate option: the tool trusts the pair's local CA for its domains
        assert f"scripts/xferd transfer -c {tmp_path / 'a.localhost' / 'xferd.toml'} " in out
        assert "cafile" not in out
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
        assert f"scripts/xferd migrate -c {tmp_path / 'a.localhost' / 'xferd.toml'} " in out
        assert "cafile" not in out
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


def rosters(out: str, when: str) -> dict[str, str]:
    """``   JID's roster WHEN: ITEMS`` lines of a demo's output: JID → ITEMS."""
    shown = {}
    for line in out.splitlines():
        jid, sep, items = line.strip().partition(f"'s roster {when}: ")
        if sep:
            shown[jid] = items
    return shown


def test_demo_move_runs_again_and_the_pair_is_found_by_its_directory_alone(tmp_path):
    """A second demo-move says what the first did and changes nothing (like
    demo-transfer); after `up`, TWO_DOMAINS_DIR alone finds the pair's ports."""
    base = random.randrange(20000, 40000, 10)
    pair = dict(os.environ, TWO_DOMAINS_DIR=str(tmp_path))
    pair.pop("TWO_DOMAINS_BASE_PORT", None)
    started = run("up", dict(pair, TWO_DOMAINS_BASE_PORT=str(base)))
    try:
        assert started.returncode == 0, started.stderr
        assert f"Stop them with: TWO_DOMAINS_DIR={tmp_path} scripts/two-domains down" \
            in started.stdout
        status = run("status", pair)                # no base port: the pair's own record
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"c2s {base + 222}, direct TLS {base + 223}, s2s {base + 269}" in status.stdout
        assert f"c2s {base + 10222}," in status.stdout

        first = run("demo-move", pair)
        assert first.returncode == 0, first.stdout + first.stderr
        after = rosters(first.stdout, "after")
        assert "Moved dora@a.localhost → dora@b.localhost" in first.stdout
        again = run("demo-move", pair)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Traceback" not in again.stderr
        assert "dora@a.localhost has already moved to dora@b.localhost" in again.stdout
        assert rosters(again.stdout, "now") == after
        assert f"TWO_DOMAINS_DIR={tmp_path} scripts/two-domains up" in again.stdout
    finally:
        stopped = run("down", pair)
    assert stopped.returncode == 0 and stopped.stdout.count("stopped") == 2
