"""scripts/history-timing: how long ``xferd migrate --history`` takes to move a history.

Two xferd processes on loopback, ``old.localhost`` and ``new.localhost``, each
with its own data directory in a temporary directory. The old account's archive
is filled with N one-to-one messages (default 10,000; alternating directions,
one a second, a body of ~60 characters) straight through the storage API
(``import_archive``, as ``xferd import`` does), before the server starts. Then
``xferd migrate --history`` runs as a user would run it and is timed, wall clock,
from start to exit; the new account's archive is counted afterwards (it must
hold all N), and the run is repeated to show that a second run finds the
history done. Prints one line per run, the peak memory of the migrate process
and the rate.

    scripts/history-timing [N]
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from storage.api import ArchivedMessage  # noqa: E402
from storage.sqlite import SQLiteStorage  # noqa: E402

XFERD = [sys.executable, "-m", "server"]
OLD, NEW, CONTACT = "old@old.localhost", "new@new.localhost", "friend@elsewhere.example"
PASSWORD = "history-pw"
T0 = 1_500_000_000.0


def config(workdir: Path, domain: str) -> Path:
    path = workdir / "xferd.toml"
    path.write_text(f"""# written by scripts/history-timing
[server]
data_dir = "{workdir / 'data'}"
log_level = "info"

[c2s]
port = 0
direct_tls_port = 0

[s2s]
port = 0

[auth]
scram_iterations = 4096

[hosts."{domain}"]
registration = false
""")
    return path


async def count(database: Path, domain: str, user: str) -> int:
    store = SQLiteStorage(database)
    await store.open()
    try:
        return sum([1 async for _ in store.iter_archive(domain, user)])
    finally:
        await store.close()


def start(workdir: Path, conf: Path) -> tuple[subprocess.Popen, int]:
    ports_file = workdir / "ports.json"
    log = open(workdir / "xferd.log", "ab")
    proc = subprocess.Popen([*XFERD, "serve", "-c", str(conf), "--ports-file", str(ports_file)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            status = json.loads(ports_file.read_text())
            if status["pid"] == proc.pid:
                return proc, status["ports"]["c2s"]
        except (OSError, ValueError, KeyError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)             # a poll with a deadline: the file is all there is
    proc.terminate()
    raise SystemExit(f"xferd did not start: see {workdir / 'xferd.log'}")


def main(argv: list[str]) -> int:
    total = int(argv[0]) if argv else 10_000
    with tempfile.TemporaryDirectory(prefix="xferd-history-") as tmp:
        base = Path(tmp)
        servers = {}
        for jid in (OLD, NEW):
            user, domain = jid.split("@")
            workdir = base / domain
            workdir.mkdir()
            conf = config(workdir, domain)
            init = subprocess.run([*XFERD, "adduser", "--init", "-c", str(conf), jid],
                                  input=PASSWORD + "\n", capture_output=True, text=True,
                                  cwd=REPO)
            if init.returncode:
                raise SystemExit(init.stderr)
            servers[jid] = (workdir, conf, domain, user)
        old_dir, _, old_domain, old_user = servers[OLD]
        database = old_dir / "data" / "xferd.sqlite"
        started = time.monotonic()
        asyncio.run(fill(database, old_domain, old_user, total))
        print(f"filled {OLD}'s archive with {total} messages in "
              f"{time.monotonic() - started:.1f} s")
        procs = {}
        try:
            for jid, (workdir, conf, domain, _) in servers.items():
                procs[jid] = start(workdir, conf)
            env = dict(os.environ, XFERD_OLD_PASSWORD=PASSWORD, XFERD_NEW_PASSWORD=PASSWORD,
                       XDG_STATE_HOME=str(base / "state"))
            args = [*XFERD, "migrate", "--from", OLD, "--to", NEW, "--history", "--wait", "0",
                    "--no-statement"]
            for side, jid in (("old", OLD), ("new", NEW)):
                workdir, _, domain, _ = servers[jid]
                args += [f"--{side}-host", "127.0.0.1", f"--{side}-port", str(procs[jid][1]),
                         f"--{side}-cafile", str(workdir / "data" / "certs" / f"{domain}.crt")]
            for run in ("first run", "second run"):
                started = time.monotonic()
                done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
                took = time.monotonic() - started
                lines = [line.split("xferd.migrate: ", 1)[1]
                         for line in done.stderr.splitlines()
                         if "xferd.migrate: history: " in line]
                if done.returncode:
                    raise SystemExit(f"migrate failed ({done.returncode}):\n{done.stderr}")
                print(f"{run}: xferd migrate --history took {took:.2f} s; "
                      f"{lines[-1] if lines else 'no history line'}")
                if run == "first run":
                    rate = total / took
                    # the largest child waited for so far: the migrate run (adduser is smaller)
                    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                    print(f"peak memory (RSS) of xferd migrate: {peak:.0f} MB")
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(10)
        new_dir, _, new_domain, new_user = servers[NEW]
        moved = asyncio.run(count(new_dir / "data" / "xferd.sqlite", new_domain, new_user))
        print(f"{NEW}'s archive holds {moved} messages ({rate:.0f} messages/s end to end, "
              "logins included)")
        return 0 if moved == total else 1


async def fill(database: Path, domain: str, user: str, total: int) -> None:
    """*total* messages into the archive of an account ``xferd adduser`` made."""
    store = SQLiteStorage(database)
    await store.open()
    try:
        for start_at in range(0, total, 500):
            await store.import_archive(domain, user, [
                _message(n, f"{user}@{domain}")
                for n in range(start_at, min(total, start_at + 500))])
    finally:
        await store.close()


def _message(n: int, me: str) -> ArchivedMessage:
    sender, to = (f"{me}/laptop", CONTACT) if n % 2 else (f"{CONTACT}/phone", me)
    return ArchivedMessage(
        "", T0 + n, CONTACT,
        f"<message xmlns='jabber:client' from='{sender}' to='{to}' type='chat' id='msg-{n}'>"
        f"<body>message number {n} of the history that moves along</body></message>")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
