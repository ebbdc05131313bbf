"""The ``xferd`` command, in the style of prosodyctl.

    xferd serve [-c FILE] [--trace] [--ports-file PATH] [-v]
                                              run the server (SIGHUP: [s2s.routes], certificates)
    xferd adduser JID [--init]                create an account (asks for a password)
    xferd passwd JID                          change a password
    xferd deluser JID                         delete an account and all its data
    xferd users [DOMAIN]                      list accounts
    xferd cert [DOMAIN] [--force] [--new-ca]  certificates signed by the local CA
    xferd migrate --from OLD --to NEW         move an account to another server (XEP-0283)
    xferd transfer --old OLD --new NEW        move an account by XEP-0015 account transfer
    xferd transfer status --old OLD           how the old server's transfer job stands
    xferd export --user JID -o FILE           one account as XEP-0227 XML (SCRAM, no password)
    xferd export --host DOMAIN -o DIR [--force]
                                              a whole host: DIR/main.xml → host → user files
    xferd export ... --dialect ejabberd       the form ejabberd 21.12+ imports (one host file)
    xferd import FILE [--dry-run] [--init]    create the accounts of a XEP-0227 export
    xferd import FILE --as JID [--outreach]   its one account as a new JID, contacts asked
    xferd diagram TRACE... -o FILE.html       stanza traces → one HTML sequence diagram

Every command takes ``-c FILE``; without it ``$XFERD_CONFIG`` or the
checkout's ``conf/xferd.toml`` is used, else the built-in defaults
(``server/config.py``). The commands that work on the server's database say
on stderr which config and database they use, and stop when that database does
not exist rather than start an empty one beside the real one: only ``serve``
creates it, and ``adduser``/``import`` with ``--init``. Passwords are read from
the terminal, or as one line from standard input when it is not a terminal
(for scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import time

from . import config as configuration
from .wording import counted
from .xmpp.jid import JID, JIDError

log = logging.getLogger("xferd")


class CommandError(Exception):
    """Shown to the user as ``xferd: error: …`` with exit status 1."""


def main(argv: list[str] | None = None) -> int:
    # what xferd creates is its owner's alone from the first byte: the database
    # and its -wal/-shm companions hold SCRAM keys, exports and state files too
    os.umask(0o077)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        conf = configuration.load(args.config or configuration.default_config_path())
    except configuration.ConfigError as exc:
        print(f"xferd: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(conf, args)
    try:
        if args.database:
            _check_database(conf, create=getattr(args, "init", False))
        return args.func(conf, args) or 0
    except CommandError as exc:
        print(f"xferd: error: {exc}", file=sys.stderr)
        return 1
    except EOFError:            # Ctrl-D at a prompt
        print("\nxferd: error: input ended (Ctrl-D) before it was complete; nothing done",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check_database(conf, create: bool | None) -> None:
    """Say which config and database an administrative command works on, and
    refuse a database that does not exist: a config not meant (or none found)
    must not end in a second, empty database the running server never sees.
    *create*: ``--init`` was given (True), could have been (False), or the
    command has no such option (None)."""
    source = conf.source if conf.source.startswith("<") else \
        os.path.abspath(conf.source)
    path = conf.storage_path.absolute()
    _stderr(f"xferd: config {source}, database {path}")
    if path.exists() or create:
        return
    init = " (or add --init to create it here)" if create is not None else ""
    raise CommandError(
        f"there is no database at {path}: nothing done. If the server runs elsewhere, "
        "name its config with -c FILE or $XFERD_CONFIG; a new server creates its database "
        f"on its first start (xferd serve){init}")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", type=configuration.caller_path,
                        help="config file (default: $XFERD_CONFIG or conf/xferd.toml)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(prog="xferd", description="xferd XMPP server")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, text: str, description: str | None = None, *,
                database: bool = False, init: bool = False):
        """A subcommand; *database*: it works on the server's database (which must
        exist, or with *init*, may be created by ``--init``)."""
        sub = commands.add_parser(name, parents=[common], help=text, description=description)
        # argparse: a parser's set_defaults wins over an argument's default
        sub.set_defaults(func=func, database=database, init=False if init else None)
        if init:
            sub.add_argument("--init", action="store_true",
                             help="create the database if there is none yet (a new server "
                                  "that has not been started)")
        return sub

    def progress_every(sub) -> None:
        sub.add_argument("--progress-every", type=int, default=1000, metavar="N",
                         help="a progress line on stderr every N users (default 1000)")

    serve = command("serve", cmd_serve, "run the server")
    serve.add_argument("--trace", action="store_true",
                       help="log every stanza in and out (passwords redacted)")
    serve.add_argument("--ports-file", metavar="PATH", type=configuration.caller_path,
                       help="once every listener is bound, write the ports as JSON to PATH "
                            "(useful with port = 0); rewritten after each SIGHUP reload")

    for name, func, text in (("adduser", cmd_adduser, "create an account"),
                             ("passwd", cmd_passwd, "change an account's password"),
                             ("deluser", cmd_deluser, "delete an account and all its data")):
        command(name, func, text, database=True,
                init=name == "adduser").add_argument("jid", help="user@domain")

    users = command("users", cmd_users, "list accounts", database=True)
    users.add_argument("domain", nargs="?", help="only this domain")

    cert = command(
        "cert", cmd_cert, "make certificates signed by the local CA",
        "Make the local certificate authority once (in [server] ca_dir, default DATA_DIR/ca; "
        "restricted by name constraints to localhost, *.localhost and the domains served when "
        "it is made) and certificates it signs in DATA_DIR/certs; print how to trust it.")
    cert.add_argument("domain", nargs="?",
                      help="this domain only (default: every configured domain without a "
                           "cert in the config)")
    cert.add_argument("--force", action="store_true", help="replace existing certificates")
    cert.add_argument("--new-ca", action="store_true",
                      help="make a new CA (for localhost, the configured domains and DOMAIN) "
                           "and sign anew with it; clients must trust the new one")

    from storage import pie_ejabberd

    from .tools.import_as import add_arguments as import_as_arguments
    from .tools.migrate import add_arguments as migrate_arguments
    from .tools.transfer import add_arguments as transfer_arguments
    from .tools.two_accounts import PASSWORDS_HELP
    migrate_arguments(command(
        "migrate", cmd_migrate, "move an account to another server (XEP-0283)",
        "Copy roster, vCard, private XML and PEP data to the new account, publish the moved "
        "statement and ask every contact to follow (XEP-0283). " + PASSWORDS_HELP))

    transfer_arguments(command(
        "transfer", cmd_transfer, "move an account by XEP-0015 account transfer",
        "Pre-authorise the move on the new account, ask the old server to move the old "
        "account there (XEP-0015) and report per contact. Both servers must support "
        "jabber:iq:accountxfer. " + PASSWORDS_HELP))

    export = command(
        "export", cmd_export, "export accounts as XEP-0227 XML",
        "Write accounts with SCRAM credentials (never passwords), roster, pending "
        "subscriptions, offline messages, private XML, vCard and PEP as XEP-0227 "
        "(urn:xmpp:pie:0). Files are created readable by their owner only.", database=True)
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", metavar="JID", help="one account, into FILE")
    which.add_argument("--host", metavar="DOMAIN",
                       help="every account of DOMAIN, into DIR (main.xml and XIncludes)")
    export.add_argument("-o", "--output", required=True, metavar="FILE|DIR",
                        type=configuration.caller_path)
    export.add_argument("--force", action="store_true",
                        help="with --host: write into DIR even if it holds files already")
    export.add_argument(
        "--dialect", choices=pie_ejabberd.DIALECTS, default=pie_ejabberd.STANDARD,
        help="xep0227 (default): XEP-0227 as written, read by Prosody and xferd; ejabberd: "
             "what ejabberd 21.12 and later import (SCRAM values base64-encoded twice, a "
             "host's users inline in one host file), still read by xferd")
    export.add_argument(
        "--ejabberd-hash", choices=sorted(pie_ejabberd.SCRAM_HASHES), default="sha",
        help="with --dialect ejabberd: the target's auth_scram_hash (default sha); ejabberd "
             "reads one set of SCRAM keys per account, so that hash's comes first")
    progress_every(export)

    imp = command(
        "import", cmd_import, "create accounts from a XEP-0227 export",
        "Read a XEP-0227 document (following relative XIncludes) and create each account it "
        "holds, with all its data, in one transaction. The whole file is checked before "
        "anything is written; existing accounts are skipped.", database=True, init=True)
    imp.add_argument("file", type=configuration.caller_path, help="the document (main.xml of a host export, or a single file)")
    imp.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
    imp.add_argument("--history-only", action="store_true",
                     help="add the message archives in the file to the accounts here that "
                          "exist already (e.g. the file of xferd migrate --history); "
                          "nothing else is imported")
    progress_every(imp)
    import_as_arguments(imp)

    from .tools.diagram import add_arguments as diagram_arguments
    diagram_arguments(command(
        "diagram", cmd_diagram, "draw stanza traces as a sequence diagram (HTML)",
        "Read the logs of servers run with --trace (trace = true) and write one "
        "self-contained HTML page: a lifeline per client and per server, an arrow per "
        "stanza in time order (a stanza that went from one traced server to another is "
        "drawn once), its XML on hover or click."))
    return parser


def _setup_logging(conf, args) -> None:
    level = logging.DEBUG if args.verbose else getattr(logging, conf.server.log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if getattr(args, "trace", False) or conf.server.trace:
        from .io.trace import Tracer
        Tracer.enabled = True
        logging.getLogger("xferd.trace").setLevel(logging.INFO)


# -- serve -----------------------------------------------------------------------

def cmd_serve(conf, args) -> int:
    return asyncio.run(_serve(conf, ports_file=args.ports_file))


def _write_status(path: str, server, reloads: int) -> None:
    """The ``--ports-file``: {"pid", "ports": {"c2s", "c2s_direct_tls", "s2s"},
    "reloads"}, written whole or not at all (a temporary file renamed over it),
    readable by its owner only."""
    import json
    import os
    data = json.dumps({"pid": os.getpid(), "ports": dict(server.ports), "reloads": reloads})
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data + "\n")
    os.replace(temp, path)


async def _serve(conf, ports_file: str | None = None) -> int:
    from storage.api import StorageError

    from .core.service import Xferd
    server = Xferd(conf)
    log.info("configuration: %s, database %s", conf.source, conf.storage_path.absolute())
    try:
        await server.start()
    except OSError as exc:
        await server.storage.close()
        raise CommandError(f"cannot listen: {exc.strerror or exc}") from None
    except StorageError as exc:
        raise CommandError(str(exc)) from None
    reloads = 0
    loop = asyncio.get_running_loop()
    stopping = []

    def reload() -> None:
        """SIGHUP: read the config file again and take its [s2s.routes] (new
        outbound connections look the table up when they connect; streams
        already up stay as they are) and the served domains' certificates.
        Nothing else is reloaded."""
        nonlocal reloads
        if conf.source.startswith("<"):
            log.info("SIGHUP received: no config file to reload")
            return
        try:
            fresh = configuration.load(conf.source)
        except configuration.ConfigError as exc:
            log.error("SIGHUP received: config not reloaded: %s", exc)
            return
        server.config.s2s.routes = fresh.s2s.routes
        _reload_certificates(server, fresh)
        reloads += 1
        log.info("SIGHUP received: routes reloaded from %s (%d static routes)",
                 conf.source, len(fresh.s2s.routes))
        if ports_file:
            _write_status(ports_file, server, reloads)

    def request_stop(signame: str) -> None:
        if not stopping:
            log.info("%s received: shutting down", signame)
            stopping.append(asyncio.ensure_future(server.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, reload)
    if ports_file:              # only now: whoever reads it may send SIGHUP at once
        _write_status(ports_file, server, reloads)
    await server.wait_stopped()
    return 0


def _reload_certificates(server, fresh) -> None:
    """Every served domain's certificate read again, from the paths *fresh* names
    (replaced files are also taken without SIGHUP, see server/io/tls.py)."""
    from .io.tls import certificates
    try:
        files = certificates(fresh)
    except (OSError, ValueError) as exc:
        log.error("SIGHUP received: certificates not reloaded: %s", exc)
        return
    problems = server.tls.reload(files) + server.direct_tls.reload(files)
    for problem in dict.fromkeys(problems):
        log.error("SIGHUP received: certificate kept: %s", problem)
    log.info("SIGHUP received: certificates reloaded for %s", ", ".join(server.tls.files))


# -- accounts ------------------------------------------------------------------------

def _user_jid(conf, text: str) -> JID:
    """A bare JID of an account on one of this server's hosts."""
    from .tools.two_accounts import account
    jid = account(text, error=CommandError)
    if jid.domain not in conf.hosts:
        raise CommandError(f"{jid.domain} is not a host of this server "
                           f"(hosts in {conf.source}: {', '.join(conf.hosts)})")
    return jid


def _read_password(prompt: bool) -> str:
    if sys.stdin.isatty():
        try:
            first = getpass.getpass("Password: ")
            if prompt and getpass.getpass("Repeat password: ") != first:
                raise CommandError("the passwords do not match")
        except EOFError:                # Ctrl-D: the prompt's line is still open
            print(file=sys.stderr)
            raise CommandError("no password given (Ctrl-D): nothing done") from None
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        raise CommandError("the password must not be empty")
    return first


async def _with_storage(conf, work):
    from storage.sqlite import SQLiteStorage
    store = SQLiteStorage(conf.storage_path, synchronous=conf.storage.synchronous)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def _credentials(conf, password: str) -> dict:
    from .xmpp.sasl import make_all_credentials
    try:
        return make_all_credentials(password, conf.auth.scram_iterations)
    except ValueError as exc:
        raise CommandError(f"unusable password: {exc}") from None


def cmd_adduser(conf, args) -> int:
    jid = _user_jid(conf, args.jid)
    credentials = _credentials(conf, _read_password(prompt=True))
    async def create(store):
        moved = await store.get_tombstone(jid.domain, jid.local)
        if moved:
            raise CommandError(f"{jid} was deleted after moving to {moved}; the name stays "
                               "taken so that nobody can pose as it")
        return await store.create_user(jid.domain, jid.local, credentials)

    if not asyncio.run(_with_storage(conf, create)):
        raise CommandError(f"{jid} already exists")
    print(f"created {jid}")
    return 0


def cmd_passwd(conf, args) -> int:
    jid = _user_jid(conf, args.jid)
    credentials = _credentials(conf, _read_password(prompt=True))
    changed = asyncio.run(_with_storage(
        conf, lambda s: s.set_credentials(jid.domain, jid.local, credentials)))
    if not changed:
        raise CommandError(f"{jid} does not exist")
    print(f"password changed for {jid}")
    return 0


def cmd_deluser(conf, args) -> int:
    jid = _user_jid(conf, args.jid)
    from .core.accounts import delete_account
    deleted = asyncio.run(_with_storage(conf, lambda s: delete_account(s, jid.domain, jid.local)))
    if not deleted:
        raise CommandError(f"{jid} does not exist")
    print(f"deleted {jid}")
    return 0


def cmd_users(conf, args) -> int:
    domains = list(conf.hosts)
    if args.domain:
        if args.domain.lower() not in conf.hosts:
            raise CommandError(f"{args.domain} is not a host of this server")
        domains = [args.domain.lower()]

    async def listing(store):
        return {d: await store.list_users(d) for d in domains}

    for domain, users in asyncio.run(_with_storage(conf, listing)).items():
        for user in users:
            print(f"{user}@{domain}")
    return 0


def cmd_cert(conf, args) -> int:
    """The local CA (made once) and certificates it signs (server/io/local_ca.py)."""
    from .io import local_ca
    from .io.tls import default_cert_paths
    from .xmpp.jid import nameprep
    if args.domain:
        try:
            domains = [nameprep(args.domain)]
        except JIDError as exc:
            raise CommandError(f"{args.domain!r} is not a valid domain: {exc}") from None
    else:
        domains = [d for d, host in conf.hosts.items() if not (host.cert or host.key)]
    try:
        ca = None if args.new_ca else local_ca.load(conf.ca_dir)
        if ca is not None and not all(ca.covers(d) for d in domains):
            outside = ", ".join(d for d in domains if not ca.covers(d))
            again = " ".join(["xferd cert", *([args.domain] if args.domain else []), "--new-ca"])
            raise CommandError(
                f"the local CA {ca.cert_path} may sign for {', '.join(ca.permitted)} and the "
                f"names below them only, not {outside} (its name constraints are fixed when it "
                f"is made). `{again}` makes a new CA for it and the configured domains; every "
                "device that trusts the old CA must then be given the new one")
        if ca is None:
            ca = local_ca.create(conf.ca_dir, [*conf.hosts, *domains])
            print(f"made a new local CA for {', '.join(ca.permitted)} "
                  "and the names below them:")
        else:
            print(f"local CA for {', '.join(ca.permitted)} and the names below them:")
    except local_ca.CAError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write the local CA in {conf.ca_dir}: "
                           f"{exc.strerror or exc}") from None
    print(f"  certificate: {ca.cert_path.resolve()}\n"
          f"  private key: {ca.key_path.resolve()} (readable by you only)"
          f"\n  SHA-256 fingerprint: {ca.fingerprint}")
    for domain in domains:
        cert, key = default_cert_paths(conf.certs_dir, domain)
        if (cert.exists() or key.exists()) and not (args.force or args.new_ca):
            if args.domain:
                raise CommandError(f"{cert} already exists (use --force to replace it)")
            print(f"{domain}: kept {cert}" + ("" if _signed_by(ca, cert) else
                  " — not signed by this CA: --force replaces it"))
            continue
        try:
            ca.issue(domain, cert, key)
        except OSError as exc:
            raise CommandError(f"cannot write {cert}: {exc.strerror or exc}") from None
        configured = conf.hosts.get(domain)
        print(f"{domain}: certificate {cert.resolve()}, private key {key.resolve()}" +
              (" (not used: the config names another certificate for it)"
               if configured and (configured.cert or configured.key) else ""))
    print("A running server takes replaced certificates at its next TLS handshake.")
    print(local_ca.trust_instructions(ca.cert_path))
    return 0


def _signed_by(ca, cert_path) -> bool:
    from cryptography import x509
    try:
        return ca.signed(x509.load_pem_x509_certificate(cert_path.read_bytes()))
    except (OSError, ValueError):
        return False


# -- migrate ---------------------------------------------------------------------------------

def cmd_migrate(conf, args) -> int:
    from .tools.migrate import run
    args.local_ca_dir = conf.ca_dir     # trusted for the domains it was made for
    return run(args)


# -- transfer --------------------------------------------------------------------------------

def cmd_transfer(conf, args) -> int:
    from .tools.transfer import run
    args.local_ca_dir = conf.ca_dir     # trusted for the domains it was made for
    return run(args)


# -- diagram ----------------------------------------------------------------------------------

def cmd_diagram(conf, args) -> int:
    from .tools.diagram import DiagramError, run
    try:
        return run(args)
    except (DiagramError, OSError) as exc:
        raise CommandError(str(exc)) from None


# -- XEP-0227 export / import ------------------------------------------------------------------

def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_export(conf, args) -> int:
    from pathlib import Path

    from storage import pie, pie_ejabberd
    started = time.monotonic()
    if args.ejabberd_hash != "sha" and args.dialect != pie_ejabberd.DIALECT:
        raise CommandError("--ejabberd-hash needs --dialect ejabberd")
    if args.force and not args.host:
        raise CommandError("--force goes with --host only")
    first = pie_ejabberd.SCRAM_HASHES[args.ejabberd_hash]
    if args.user:
        jid = _user_jid(conf, args.user)

        async def work(store):
            try:
                return await pie.export_user(store, jid.domain, jid.local, Path(args.output),
                                             dialect=args.dialect, first=first,
                                             note=lambda m: _stderr(f"export: {m}"))
            except LookupError as exc:
                raise CommandError(str(exc)) from None
        what = str(jid)
    else:
        host = args.host.lower()
        if host not in conf.hosts:
            raise CommandError(f"{args.host} is not a host of this server")
        _refuse_filled_directory(Path(args.output), args.force)

        def progress(done: int, total: int) -> None:
            _stderr(f"export: {done}/{total} users of {host}")

        async def work(store):
            return await pie.export_host(store, host, Path(args.output), dialect=args.dialect,
                                         first=first, progress=progress,
                                         every=max(1, args.progress_every),
                                         note=lambda m: _stderr(f"export: {m}"))
        what = host
    try:
        summary = asyncio.run(_with_storage(conf, work))
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    for jid, mechanisms in summary.zero_byte_salts:
        _stderr(f"warning: {jid} cannot log in after an import into Prosody with SQL storage: "
                f"its {' and '.join(mechanisms)} salt{'s have' if len(mechanisms) > 1 else ' has'} "
                "a zero byte, where Prosody cuts a salt short; one PLAIN login to xferd (or "
                "xferd passwd) gives it new salts: export it again after that")
    _stderr(f"exported {what}: {summary.text()} to {args.output} "
            f"in {time.monotonic() - started:.1f} s")
    if args.dialect == pie_ejabberd.DIALECT and summary.lacking_first:
        have = "has" if summary.lacking_first == 1 else "have"
        _stderr(f"note: {counted(summary.lacking_first, 'account')} {have} no {first} keys "
                "(imported with other keys only, no PLAIN login since): ejabberd gets keys its "
                f"auth_scram_hash {args.ejabberd_hash} does not use, so they can log in "
                "there with PLAIN only")
    return 0


def _refuse_filled_directory(directory, force: bool) -> None:
    """An export into a directory that holds files already would mix them with
    the old ones (a user deleted since stays in it as a file): only with --force."""
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"{directory} exists and is not a directory")
    if not force and directory.is_dir() and any(directory.iterdir()):
        raise CommandError(f"{directory} is not empty: give another directory, or --force "
                           "to write into it (files of accounts deleted since stay there)")


def cmd_import(conf, args) -> int:
    from storage import pie

    from .tools import import_as
    problem = import_as.check_arguments(args)
    if problem:
        raise CommandError(problem)
    if args.history_only and args.as_jid is not None:
        raise CommandError("--history-only does not go with --as")
    if args.as_jid is not None:
        return _import_as(conf, args)
    started = time.monotonic()
    if args.history_only:
        return _import_history(conf, args, started)

    def progress(done: int) -> None:
        _stderr(f"import: {counted(done, 'user')}")

    async def work(store):
        return await pie.import_file(store, args.file, hosts=list(conf.hosts),
                                     dry_run=args.dry_run,
                                     iterations=conf.auth.scram_iterations,
                                     warn=lambda m: _stderr(f"warning: {m}"),
                                     progress=progress, every=max(1, args.progress_every),
                                     note=_stderr)
    summary = _run_import(conf, args.file, work)
    verb = "would import" if args.dry_run else "imported"
    _stderr(f"{verb} {summary.text()}; {counted(summary.skipped, 'existing account')} "
            f"skipped, {counted(summary.warnings, 'warning')}, "
            f"in {time.monotonic() - started:.1f} s")
    if summary.sha1_only:
        _stderr(f"note: {counted(summary.sha1_only, 'account')} came with SCRAM-SHA-1 keys "
                "only (as "
                "Prosody and ejabberd keep them): they log in with SCRAM-SHA-1 or PLAIN, and "
                "their first PLAIN login (or xferd passwd) adds SCRAM-SHA-256")
    return 0


def _run_import(conf, file, work):
    """Run an import's *work* on the storage; a bad or unreadable *file* is
    the command's error (nothing was imported)."""
    from storage import pie
    try:
        return asyncio.run(_with_storage(conf, work))
    except pie.PieError as exc:
        raise CommandError(f"{exc} (nothing imported)") from None
    except OSError as exc:
        raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None


def _import_history(conf, args, started: float) -> int:
    """``xferd import FILE --history-only``: archives into existing accounts."""
    from storage import pie

    async def work(store):
        return await pie.import_history(store, args.file, hosts=list(conf.hosts),
                                        dry_run=args.dry_run,
                                        warn=lambda m: _stderr(f"warning: {m}"), note=_stderr)
    added, accounts = _run_import(conf, args.file, work)
    verb = "would add" if args.dry_run else "added"
    _stderr(f"{verb} {counted(added, 'archived message')} to "
            f"{counted(len(accounts), 'account')} ({', '.join(accounts) or 'none'}) "
            f"in {time.monotonic() - started:.1f} s")
    return 0


def _import_as(conf, args) -> int:
    """``xferd import FILE --as NEW [--outreach]`` (server/tools/import_as.py)."""
    from storage import pie

    from .tools import import_as
    from .tools.two_accounts import UsageError
    new = _user_jid(conf, args.as_jid)
    try:
        old, data = import_as.read_single_user(args.file, lambda m: _stderr(f"warning: {m}"))
        if old == new:
            raise import_as.ImportAsError(f"--as {new} is the account in the file: "
                                          "import without --as")
        secret = import_as.outreach_password(new) if args.outreach and not args.dry_run \
            else None
        if args.dry_run:
            rehomed = import_as.rehome(data, old, new)
            rehomed.archived = sum(len(item.entries) for item in pie.iter_document(
                args.file, warn=lambda _: None) if isinstance(item, pie.ArchiveBatch))
            for line in import_as.describe(rehomed, old, new, created=True):
                _stderr(line.replace("imported", "would import", 1))
            return 0

        async def work(store):
            return await import_as.import_as(store, old, new, data, args.file, note=_stderr)
        rehomed, created = asyncio.run(_with_storage(conf, work))
    except pie.PieError as exc:
        raise CommandError(f"{exc} (nothing imported)") from None
    except import_as.ImportAsError as exc:
        raise CommandError(str(exc)) from None
    except UsageError as exc:
        _stderr(f"xferd: error: {exc} (nothing imported)")
        return 2
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if not created and not args.outreach:
        raise CommandError(f"{new} already exists: nothing imported (with --outreach, "
                           "the outreach of an earlier import --as is sent again)")
    for line in import_as.describe(rehomed, old, new, created):
        _stderr(line)
    if not args.outreach:
        if rehomed.plan.preapprove or rehomed.plan.subscribe:
            _stderr("the contacts were not told; run again with --outreach (server running) "
                    "or use xferd migrate")
        return 0
    try:
        return import_as.outreach(conf, args, old, new, rehomed, secret)
    except import_as.ImportAsError as exc:
        raise CommandError(str(exc)) from None
