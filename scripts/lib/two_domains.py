"""scripts/two-domains: two xferd processes, two local domains, routes between them.

    up             write the configs, start a.localhost and b.localhost, create demo accounts
    down           stop both (SIGTERM: clients are told <system-shutdown/>)
    status         which are running, their ports and accounts
    demo-transfer  move alice@a.localhost to alice@b.localhost with ``xferd transfer``
                   (XEP-0015), her contacts bob@b.localhost and carol@a.localhost
                   following without being asked; a second run says she has moved
    demo-move      move dora@a.localhost to dora@b.localhost with ``xferd migrate``
                   (XEP-0283): the same contacts' servers check her moved statement
                   and update their rosters

With TWO_DOMAINS_TRACE=1 in the environment, ``up`` turns on the stanza trace:
every stanza is in the servers' logs (``<dir>/<domain>/xferd.log``).
``demo-move --diagram FILE`` and ``demo-transfer --diagram FILE`` then draw
the move, from the moment the command runs, as a sequence diagram
(``xferd diagram``: one HTML file). With TWO_DOMAINS_INTERFACES=0.0.0.0
(comma-separated addresses) the servers listen for clients there instead of
on 127.0.0.1 only.

One local CA, ``<dir>/ca``, signs both domains' certificates (``xferd cert``);
``up`` prints how to trust it.

State lives in $TWO_DOMAINS_DIR (default data/two-domains; a relative path is
taken from the directory you run the script in); ports are
$TWO_DOMAINS_BASE_PORT (default 15000) + 222/223/269 for a.localhost and
+ 10222/10223/10269 for b.localhost. ``up`` keeps the base port it used in the
pair's directory (``pair.json``), and each running server the ports it bound
(``<domain>/ports.json``): ``status``, ``down`` and the demos find them there,
so only $TWO_DOMAINS_DIR is needed after ``up``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / "data" / "two-domains"
BASE_DIR = Path(os.environ.get("TWO_DOMAINS_DIR") or DEFAULT_DIR).absolute()
DEFAULT_BASE_PORT = 15000
XFERD = [sys.executable, "-m", "server"]

DOMAINS = {
    "a.localhost": {"offset": 0, "user": "alice", "password": "alice-demo"},
    "b.localhost": {"offset": 10000, "user": "bob", "password": "bob-demo"},
}


def base_port() -> int:
    """$TWO_DOMAINS_BASE_PORT, else the one ``up`` used for this pair, else 15000."""
    if os.environ.get("TWO_DOMAINS_BASE_PORT"):
        return int(os.environ["TWO_DOMAINS_BASE_PORT"])
    try:
        return int(json.loads((BASE_DIR / "pair.json").read_text())["base_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_BASE_PORT


def ports(domain: str) -> dict[str, int]:
    """The ports *domain*'s server bound, while it runs; else those it will ask for."""
    bound = bound_ports(domain)
    if bound:
        return bound
    base = base_port() + DOMAINS[domain]["offset"]
    return {"c2s": base + 222, "direct_tls": base + 223, "s2s": base + 269}


def bound_ports(domain: str, pid: int | None = None) -> dict[str, int] | None:
    """What the running server (or process *pid*) wrote in its ``--ports-file``."""
    try:
        status = json.loads((workdir(domain) / "ports.json").read_text())
    except (OSError, ValueError):
        return None
    if status.get("pid") != (pid or pid_of(domain)):
        return None
    bound = status["ports"]
    return {"c2s": bound["c2s"], "direct_tls": bound.get("c2s_direct_tls"), "s2s": bound["s2s"]}


def workdir(domain: str) -> Path:
    return BASE_DIR / domain


#: one local CA signs both domains' certificates: clients trust it once
CA_DIR = BASE_DIR / "ca"
CA_CERT = CA_DIR / "xferd-local-ca.crt"


def certificates(domain: str) -> bool:
    """``xferd cert``: the shared CA (made once) and *domain*'s certificate; one
    that CA did not sign (a self-signed one from an older xferd) is replaced."""
    made = xferd(domain, "cert", domain)
    if made.returncode != 0 and "already exists" in made.stderr:
        kept = xferd(domain, "cert")
        made = xferd(domain, "cert", domain, "--force") if "not signed by this CA" in \
            kept.stdout else kept
    if made.returncode != 0:
        print(f"{domain}: xferd cert failed: {made.stderr.strip()}", file=sys.stderr)
    return made.returncode == 0


def write_config(domain: str) -> Path:
    other = next(d for d in DOMAINS if d != domain)
    p, q = ports(domain), ports(other)
    config = workdir(domain) / "xferd.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    trace = "true" if os.environ.get("TWO_DOMAINS_TRACE") else "false"
    # e.g. TWO_DOMAINS_INTERFACES=0.0.0.0: reachable by a phone on the same network
    listen = [a.strip() for a in os.environ.get("TWO_DOMAINS_INTERFACES", "").split(",")
              if a.strip()]
    interfaces = f"\ninterfaces = {json.dumps(listen)}" if listen else ""
    config.write_text(f"""# written by scripts/two-domains
[server]
data_dir = "{workdir(domain) / 'data'}"
ca_dir = "{CA_DIR}"
trace = {trace}

[c2s]
port = {p['c2s']}
direct_tls_port = {p['direct_tls']}{interfaces}

[s2s]
port = {p['s2s']}

[s2s.routes]
"{other}" = {{ host = "127.0.0.1", port = {q['s2s']} }}

[hosts."{domain}"]
registration = true
""")
    return config


def pid_of(domain: str) -> int | None:
    try:
        pid = int((workdir(domain) / "xferd.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def xferd(domain: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    command, *rest = args
    return subprocess.run([*XFERD, command, "-c", str(workdir(domain) / "xferd.toml"), *rest],
                          cwd=REPO, input=input, capture_output=True, text=True)


def up() -> int:
    if not any(pid_of(domain) for domain in DOMAINS):
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        (BASE_DIR / "pair.json").write_text(json.dumps({"base_port": base_port()}) + "\n")
    for domain in DOMAINS:
        if pid_of(domain):
            print(f"{domain}: already running (pid {pid_of(domain)})")
            continue
        config = write_config(domain)
        if not certificates(domain):
            return 1
        log = open(workdir(domain) / "xferd.log", "ab")
        ports_file = workdir(domain) / "ports.json"
        ports_file.unlink(missing_ok=True)
        proc = subprocess.Popen([*XFERD, "serve", "-c", str(config), "--ports-file",
                                 str(ports_file)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        (workdir(domain) / "xferd.pid").write_text(str(proc.pid))
        # started means: this process bound its ports (not just "someone listens there")
        deadline = time.monotonic() + 20
        while not bound_ports(domain, proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"{domain}: did not start; see {workdir(domain) / 'xferd.log'}",
                      file=sys.stderr)
                return 1
            time.sleep(0.1)     # a poll with a deadline: the ports file gives no notification
        print(f"{domain}: started (pid {proc.pid})")
    for domain, info in DOMAINS.items():
        jid = f"{info['user']}@{domain}"
        done = xferd(domain, "adduser", jid, input=info["password"] + "\n")
        if done.returncode == 0:
            print(f"{domain}: created {jid} (password {info['password']})")
    print()
    for domain, info in DOMAINS.items():
        p = ports(domain)
        print(f"Connect as {info['user']}@{domain} (password {info['password']}) to 127.0.0.1 "
              f"port {p['c2s']} (STARTTLS) or {p['direct_tls']} (direct TLS).")
    print(f"\nBoth certificates are signed by the local CA {CA_CERT}.")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from server.io.local_ca import trust_instructions
    print(trust_instructions(CA_CERT))
    print("\nThe two servers federate over s2s ports "
          f"{ports('a.localhost')['s2s']} and {ports('b.localhost')['s2s']}. "
          f"Stop them with: {this_pair()}scripts/two-domains down")
    return 0


def this_pair() -> str:
    """What names this pair on a command line: nothing for the default directory."""
    return "" if BASE_DIR == DEFAULT_DIR.absolute() else \
        f"TWO_DOMAINS_DIR={shlex.quote(str(BASE_DIR))} "


def down() -> int:
    for domain in DOMAINS:
        pid = pid_of(domain)
        if pid is None:
            print(f"{domain}: not running")
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_of(domain) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_of(domain):
            os.kill(pid, signal.SIGKILL)
        (workdir(domain) / "xferd.pid").unlink(missing_ok=True)
        print(f"{domain}: stopped")
    return 0


def status() -> int:
    running = 0
    for domain in DOMAINS:
        pid, p = pid_of(domain), ports(domain)
        if pid is None:
            print(f"{domain}: not running")
            continue
        running += 1
        users = xferd(domain, "users").stdout.split()
        print(f"{domain}: running (pid {pid}); c2s {p['c2s']}, direct TLS {p['direct_tls']}, "
              f"s2s {p['s2s']}; accounts: {', '.join(users) or 'none'}")
    return 0 if running == len(DOMAINS) else 3


# -- demo-transfer ---------------------------------------------------------------------------

OLD, NEW = "alice@a.localhost", "alice@b.localhost"
#: demo accounts → passwords; demo-transfer adds carol and the new alice
PASSWORDS = {"alice@a.localhost": "alice-demo", "bob@b.localhost": "bob-demo",
             "carol@a.localhost": "carol-demo", "alice@b.localhost": "alice-demo",
             "dora@a.localhost": "dora-demo", "dora@b.localhost": "dora-demo"}
MOVER, MOVED_TO = "dora@a.localhost", "dora@b.localhost"     # demo-move (XEP-0283)
CONTACTS = ("bob@b.localhost", "carol@a.localhost")


def cafile(domain: str) -> Path:
    """What the demo's own clients trust: the local CA, nothing else."""
    return CA_CERT


def demo_transfer() -> int:
    """XEP-0015 from the user's side: contacts, then ``xferd transfer``, then their rosters."""
    stopped = [domain for domain in DOMAINS if not pid_of(domain)]
    if stopped:
        print(f"{', '.join(stopped)} not running: start with scripts/two-domains up",
              file=sys.stderr)
        return 1
    for jid in ("carol@a.localhost", NEW):
        domain = jid.split("@")[1]
        if xferd(domain, "adduser", jid, input=PASSWORDS[jid] + "\n").returncode == 0:
            print(f"created {jid} (password {PASSWORDS[jid]})")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return asyncio.run(_demo_transfer())


async def _demo_transfer() -> int:
    from server.client import ClientError
    try:
        alice = await _connect(OLD)
    except ClientError as exc:
        if exc.condition != "account-disabled":
            raise
        print(f"{OLD} has already moved (a.localhost says: {exc.text}); its server refuses "
              "logins now, so there is nothing left to transfer.")
        await _show_rosters(CONTACTS + (NEW,))
        print(from_scratch())
        return 0
    print(f"\n1. {OLD} and her contacts subscribe to each other")
    try:
        for contact in CONTACTS:
            other = await _connect(contact)
            try:
                await _befriend(alice, other)
            finally:
                await other.close()
    finally:
        await alice.close()
    await _show_rosters(CONTACTS, "before")

    args = transfer_args()
    print(f"\n2. the transfer, as a user would run it:\n"
          f"   XFERD_OLD_PASSWORD={PASSWORDS[OLD]} XFERD_NEW_PASSWORD={PASSWORDS[NEW]} "
          f"scripts/xferd {shlex.join(args)}\n", flush=True)
    env = dict(os.environ, XFERD_OLD_PASSWORD=PASSWORDS[OLD], XFERD_NEW_PASSWORD=PASSWORDS[NEW])
    mark_diagram()
    done = subprocess.run([*XFERD, *args], cwd=REPO, env=env)
    print(f"\n   xferd transfer exited with {done.returncode}")
    await _show_rosters(CONTACTS + (NEW,), "after")
    return done.returncode


def demo_move() -> int:
    """XEP-0283 from the user's side: contacts, then ``xferd migrate``, then their rosters."""
    stopped = [domain for domain in DOMAINS if not pid_of(domain)]
    if stopped:
        print(f"{', '.join(stopped)} not running: start with scripts/two-domains up",
              file=sys.stderr)
        return 1
    for jid in ("carol@a.localhost", MOVER, MOVED_TO):
        domain = jid.split("@")[1]
        if xferd(domain, "adduser", jid, input=PASSWORDS[jid] + "\n").returncode == 0:
            print(f"created {jid} (password {PASSWORDS[jid]})")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from server.client import ClientError
    try:
        return asyncio.run(_demo_move())
    except (ClientError, OSError, RuntimeError, asyncio.TimeoutError) as exc:
        print(f"demo-move: {exc or type(exc).__name__}; the servers' logs are in "
              f"{BASE_DIR}/<domain>/xferd.log", file=sys.stderr)
        return 1


async def _demo_move() -> int:
    dora = await _connect(MOVER)
    try:
        moved_to = await _moved_to(dora)
    finally:
        await dora.close()
    if moved_to:
        # a second run: moving again would subscribe the old account to her contacts
        # again (and fail to: their servers now hold the new one); say what was done
        print(f"{MOVER} has already moved to {moved_to} (her moved statement, XEP-0283, "
              "says so), so there is nothing left to move.")
        await _show_rosters(CONTACTS + (MOVED_TO,))
        print(from_scratch())
        return 0
    print(f"\n1. {MOVER} and her contacts subscribe to each other")
    dora = await _connect(MOVER)
    try:
        for contact in CONTACTS:
            other = await _connect(contact)
            try:
                await _befriend(dora, other)
            finally:
                await other.close()
    finally:
        await dora.close()
    await _show_rosters(CONTACTS, "before")
    args = ["migrate", *local_config(), "--from", MOVER, "--to", MOVED_TO, "--wait", "5",
            "--state", str(BASE_DIR / "demo-move.json")]
    for side, domain in (("old", "a.localhost"), ("new", "b.localhost")):
        args += [f"--{side}-host", "127.0.0.1", f"--{side}-port", str(ports(domain)["c2s"])]
    print(f"\n2. the move, as a user would run it:\n"
          f"   XFERD_OLD_PASSWORD={PASSWORDS[MOVER]} XFERD_NEW_PASSWORD={PASSWORDS[MOVED_TO]} "
          f"scripts/xferd {shlex.join(args)}\n", flush=True)
    env = dict(os.environ, XFERD_OLD_PASSWORD=PASSWORDS[MOVER],
               XFERD_NEW_PASSWORD=PASSWORDS[MOVED_TO])
    mark_diagram()
    done = subprocess.run([*XFERD, *args], cwd=REPO, env=env)
    print(f"\n   xferd migrate exited with {done.returncode}")
    await _show_rosters(CONTACTS + (MOVED_TO,), "after")
    return done.returncode


def from_scratch() -> str:
    return (f"To run the demo again from scratch: {this_pair()}scripts/two-domains down, "
            f"remove {BASE_DIR}, {this_pair()}scripts/two-domains up.")


async def _moved_to(client) -> str | None:
    """The new address in the account's own moved statement (XEP-0283 §4.1), if any."""
    from server.xmpp.namespaces import MOVED_NS
    for _, payload in await client.pep_items(None, MOVED_NS):
        new = payload.findtext(f"{{{MOVED_NS}}}new-jid") if payload is not None else None
        if new:
            return new.strip()
    return None


def transfer_args() -> list[str]:
    """``xferd transfer`` for the demo: both servers on loopback."""
    args = ["transfer", *local_config(), "--old", OLD, "--new", NEW]
    for side, domain in (("old", "a.localhost"), ("new", "b.localhost")):
        args += [f"--{side}-host", "127.0.0.1", f"--{side}-port", str(ports(domain)["c2s"])]
    return args


def local_config() -> list[str]:
    """``-c`` with a.localhost's config: the tools trust its local CA (which
    signed both servers' certificates) for the domains it was made for, so
    they need no certificate option."""
    return ["-c", str(workdir("a.localhost") / "xferd.toml")]


async def _connect(jid: str):
    from server.client import Client
    domain = jid.split("@")[1]
    return await Client.connect(jid, PASSWORDS[jid], host="127.0.0.1", port=ports(domain)["c2s"],
                                cafile=str(cafile(domain)), resource="demo", presence=True)


async def _befriend(a, b, timeout: float = 15.0) -> None:
    """Mutual subscription (RFC 6121 §3): each asks, the other approves."""
    jid_a, jid_b = str(a.jid.bare), str(b.jid.bare)
    if any(i.jid == jid_b and i.subscription == "both" for i in await a.roster()):
        print(f"   {jid_a} ⇄ {jid_b}: already subscribed both ways")
        return
    for asker, approver in ((a, b), (b, a)):
        request = _expect(approver, "subscribe", str(asker.jid.bare))
        asker.presence(to=str(approver.jid.bare), type="subscribe")
        await asyncio.wait_for(request, timeout)
        approver.presence(to=str(asker.jid.bare), type="subscribed")
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(i.jid == jid_b and i.subscription == "both" for i in await a.roster()):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"{jid_a} and {jid_b} did not end up subscribed both ways")
        await asyncio.sleep(0.2)
    print(f"   {jid_a} ⇄ {jid_b}: subscribed both ways")


def _expect(client, kind: str, sender: str) -> asyncio.Future:
    """A future for the next presence of *kind* from *sender* (registered at once)."""
    future = asyncio.get_running_loop().create_future()

    def check(el):
        if el.tag.endswith("}presence") and el.get("type") == kind and \
                (el.get("from") or "").split("/")[0] == sender and not future.done():
            future.set_result(el)
    remove = client.on_stanza(check)
    future.add_done_callback(lambda _: remove())
    return future


async def _show_rosters(jids, when: str = "now") -> None:
    for jid in jids:
        client = await _connect(jid)
        try:
            items = await client.roster()
        finally:
            await client.close()
        shown = ", ".join(f"{i.jid} ({i.subscription})" for i in items) or "empty"
        print(f"   {jid}'s roster {when}: {shown}")


# -- --diagram FILE: the demo as a sequence diagram ---------------------------------------

#: where each server's log stood when the part worth drawing began
_diagram_from: dict[str, int] = {}


def mark_diagram() -> None:
    """The diagram starts here (just before the move's command runs)."""
    for domain in DOMAINS:
        log = workdir(domain) / "xferd.log"
        _diagram_from[domain] = log.stat().st_size if log.exists() else 0


def traced() -> bool:
    return all("trace = true" in (workdir(d) / "xferd.toml").read_text()
               for d in DOMAINS if (workdir(d) / "xferd.toml").exists())


def write_diagram(command: str, output: str) -> int:
    """Both servers' trace since :func:`mark_diagram` → ``xferd diagram``."""
    traces = []
    for domain in DOMAINS:
        trace = workdir(domain) / f"{command}.trace"
        with open(workdir(domain) / "xferd.log", "rb") as log, open(trace, "wb") as out:
            log.seek(_diagram_from.get(domain, 0))
            out.write(log.read())
        # as the page names them: data/two-domains/…, not the whole path
        traces.append(str(trace.relative_to(REPO)) if trace.is_relative_to(REPO) else str(trace))
    output = os.path.join(os.environ.get("TWO_DOMAINS_CALLER_DIR", os.getcwd()), output)
    done = subprocess.run([*XFERD, "diagram", *traces, "-o", output,
                           "--title", f"scripts/two-domains {command}"], cwd=REPO)
    return done.returncode


def main(argv: list[str]) -> int:
    os.umask(0o077)     # configs, logs (stanza traces) and pids: the owner's only
    commands = {"up": up, "down": down, "status": status, "demo-transfer": demo_transfer,
                "demo-move": demo_move}
    diagram = None
    if len(argv) == 3 and argv[0] in ("demo-move", "demo-transfer") and argv[1] == "--diagram":
        argv, diagram = argv[:1], argv[2]
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: scripts/two-domains up|down|status|demo-transfer|demo-move "
              "(demo-…: [--diagram FILE.html])", file=sys.stderr)
        return 2
    if diagram is None:
        return commands[argv[0]]()
    if not traced():
        print("--diagram needs the stanza trace: scripts/two-domains down, then "
              "TWO_DOMAINS_TRACE=1 scripts/two-domains up", file=sys.stderr)
        return 1
    try:
        outcome = commands[argv[0]]()
    finally:        # a move that failed is worth looking at too
        drawn = write_diagram(argv[0], diagram) if _diagram_from else None
    if drawn is None:
        print("no diagram: the demo ran no move", file=sys.stderr)
    return outcome or drawn or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
