"""What the account-moving tools share (``xferd migrate``, ``xferd transfer``):
options to reach two accounts on two servers, their checks, passwords from
the environment or the terminal, and the logins.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..client import Client, ClientError
from ..config import caller_path
from ..io import local_ca
from ..xmpp.jid import JID, JIDError

log = logging.getLogger("xferd.tools")


class UsageError(Exception):
    """Bad options (or state file): exit status 2."""


@dataclass
class TwoAccounts:
    """Where the old and the new account live and how to trust their servers."""
    old: JID
    new: JID | None
    old_host: str | None = None
    old_port: int | None = None
    new_host: str | None = None
    new_port: int | None = None
    direct_tls: bool = False
    old_cafile: str | None = None
    new_cafile: str | None = None
    verify: bool = True
    #: where the local CA is (the config's ca_dir): trusted, with the system
    #: store, for the domains its name constraints cover, when no CA file is given
    local_ca_dir: str | None = None

    @staticmethod
    def connection_fields(args) -> dict:
        """Check and collect the connection options (add_connection_arguments)."""
        if args.cafile and (args.old_cafile or args.new_cafile):
            raise UsageError("use --cafile, or --old-cafile/--new-cafile, not both")
        if args.insecure and (args.cafile or args.old_cafile or args.new_cafile):
            raise UsageError("--insecure does not go with a CA file")
        return dict(old_host=args.old_host, old_port=args.old_port, new_host=args.new_host,
                    new_port=args.new_port, direct_tls=args.direct_tls,
                    old_cafile=args.old_cafile or args.cafile,
                    new_cafile=args.new_cafile or args.cafile, verify=not args.insecure,
                    local_ca_dir=getattr(args, "local_ca_dir", None))


def add_connection_arguments(parser) -> None:
    for side in ("old", "new"):
        parser.add_argument(f"--{side}-host", metavar="HOST",
                            help=f"connect here for the {side} account (default: DNS SRV)")
        parser.add_argument(f"--{side}-port", type=int, metavar="PORT",
                            help="port (default 5222, 5223 with --direct-tls)")
    parser.add_argument("--direct-tls", action="store_true",
                        help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    parser.add_argument("--cafile", metavar="FILE", type=caller_path,
                        help="trust these CA certificates for both servers (default: the "
                        "system store, and for the domains it was made for the local CA of "
                        "the config, see xferd cert)")
    parser.add_argument("--old-cafile", metavar="FILE", type=caller_path,
                        help="CA certificates for the old server")
    parser.add_argument("--new-cafile", metavar="FILE", type=caller_path,
                        help="CA certificates for the new server")
    parser.add_argument("--insecure", action="store_true",
                        help="do not check certificates (tests and development only)")


def account(text: str, option: str | None = None, *, error=UsageError) -> JID:
    """A bare account JID given on the command line, else *error* is raised (its
    message names *option*, the option that gave *text*, if any). The account
    commands of ``server/cli.py`` (adduser …) use it too, with their own error."""
    what = f"{option} {text!r}" if option else repr(text)
    try:
        jid = JID.parse(text)
    except JIDError as exc:
        raise error(f"{what} is not a valid JID: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise error(f"{what} must look like user@domain")
    return jid


def password(variable: str, jid: JID, which: str) -> str:
    """From *variable* in the environment, else asked on the terminal."""
    value = os.environ.get(variable)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise UsageError(f"no password for {jid}: set ${variable} (no terminal to ask on)")
    return getpass.getpass(f"Password for {jid} ({which} account): ")


#: how ``xferd migrate`` and ``xferd transfer`` get the passwords (side_password)
PASSWORDS_HELP = "Passwords: $XFERD_OLD_PASSWORD / $XFERD_NEW_PASSWORD, else asked."


def side_password(opts: TwoAccounts, side: str) -> str:
    """The *side* ("old" or "new") account's password: ``$XFERD_OLD_PASSWORD`` /
    ``$XFERD_NEW_PASSWORD``, else asked on the terminal."""
    return password(f"XFERD_{side.upper()}_PASSWORD", getattr(opts, side), side)


async def login(opts: TwoAccounts, side: str, secret: str, *, resource: str,
                cls=Client) -> Client:
    jid = opts.old if side == "old" else opts.new
    cafile = getattr(opts, f"{side}_cafile")
    if not opts.verify:
        log.warning("not checking the %s server's certificate (--insecure)", side)
    local = None
    if opts.verify and not cafile:
        local = local_ca.trust_for(opts.local_ca_dir and Path(opts.local_ca_dir), jid.domain)
        if local:
            log.info("%s: trusting the local CA %s too", jid.domain, local)
    try:
        return await cls.connect(
            jid, secret, host=getattr(opts, f"{side}_host"), port=getattr(opts, f"{side}_port"),
            direct_tls=opts.direct_tls, cafile=cafile, verify=opts.verify,
            local_ca=local and str(local), resource=resource)
    except ClientError as exc:
        if exc.condition == "tls-failure" and "CERTIFICATE_VERIFY_FAILED" in (exc.text or ""):
            exc.hint = untrusted_hint(side, jid.domain, cafile, local, opts.local_ca_dir)
        raise


def untrusted_hint(side: str, domain: str, cafile: str | None, local: Path | None,
                   local_ca_dir: str | None) -> str:
    """What to do when *side*'s server certificate did not verify."""
    if cafile:
        return (f"the {side} server's certificate is not signed by {cafile} "
                f"(--{side}-cafile / --cafile); name the file of the CA that signed it")
    if local:
        return (f"the local CA {local} is trusted for {domain}, but did not sign its "
                f"certificate: is it one made before the CA? `xferd cert {domain} --force` "
                "on that server replaces it (or give its certificate with "
                f"--{side}-cafile FILE)")
    here = Path(local_ca_dir or "") / local_ca.CA_CERT
    mine = (f"{here.resolve()} if it is this one" if local_ca_dir and here.exists()
            else "DATA_DIR/ca/xferd-local-ca.crt; `xferd cert` there prints it")
    return (f"the {side} server's certificate is not trusted here: --{side}-cafile FILE "
            "trusts the CA in FILE for it, --cafile FILE for both servers. For an xferd of "
            f"yours, FILE is its local CA ({mine}); or give -c its config")


class LoginFailed(Exception):
    """A login of :func:`login_both` failed: which *side*, its *jid*, the client's *error*."""

    def __init__(self, side: str, jid: JID, error: ClientError):
        super().__init__(side, jid, error)
        self.side, self.jid, self.error = side, jid, error


async def login_both(opts: TwoAccounts, old_secret: str, new_secret: str, *, resource: str,
                     new_cls=Client) -> tuple[Client, Client]:
    """Sessions on the old and then the new account (the new one of class *new_cls*).
    LoginFailed if either login fails; the old session is closed again first."""
    try:
        old = await login(opts, "old", old_secret, resource=resource)
    except ClientError as exc:
        raise LoginFailed("old", opts.old, exc) from None
    try:
        new = await login(opts, "new", new_secret, resource=resource, cls=new_cls)
    except ClientError as exc:
        await old.close()
        raise LoginFailed("new", opts.new, exc) from None
    return old, new


def login_failed(side: str, jid: JID, exc: ClientError) -> int:
    print(f"xferd: error: cannot log in to the {side} account {jid}: {exc.condition}"
          + (f" ({exc.text})" if exc.text else ""), file=sys.stderr)
    if exc.hint:
        print(f"xferd: {exc.hint}", file=sys.stderr)
    return 2
