"""slixmpp's own integration tests (``itests/`` of its pinned sdist), unchanged, against xferd.

slixmpp runs these against a Prosody in its CI; here they run against one
xferd started for this module (port 0, domain ``localhost``, two accounts
named by ``CI_ACCOUNT1``/``CI_ACCOUNT2`` as the itests expect, contacts of each other). Each itest
runs in its own Python process through ``run_itest.py``, which forwards the
domain's ports 5222/5223 to xferd's and trusts xferd's certificate, and each is
one pytest test here. ``ITESTS`` lists what runs; ``NOT_RUN`` lists every
other itest with the reason, and ``test_every_itest_is_listed`` keeps both
lists equal to what the sdist holds.

The sdist is downloaded once into ``.cache/thirdparty/`` (see ``sdist.py``).
Without network and without that copy the tests skip, except under
``CI=true``, where they fail.

Run only these: ``scripts/test -m thirdparty`` (or ``scripts/test tests/thirdparty``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slixmpp

from tests.harness import XferdProcess
from tests.thirdparty import sdist

pytestmark = pytest.mark.thirdparty

RUNNER = Path(__file__).with_name("run_itest.py")
DOMAIN = "localhost"
ACCOUNTS = {
    "CI_ACCOUNT1": ("itest1@localhost", "itest1-pass"),
    "CI_ACCOUNT2": ("itest2@localhost", "itest2-pass"),
}
#: how long one itest may take (its own waits are 10 or 30 s)
ITEST_TIMEOUT = 100

#: The itests run against xferd: slixmpp's core ones and the optional ones
#: whose XEP xferd serves or only routes between clients.
ITESTS = [
    "test_basic_connect_and_message.TestConnect.test_send_message",
    "test_blocking.TestBlocking.test_blocking",                    # XEP-0191
    "test_bob.TestBOB.test_bob",                                   # XEP-0231, client to client
    "test_chatmarkers.TestMarkers.test_send_marker",               # XEP-0333, client to client
    "test_disco.TestDisco.test_features",                          # XEP-0030
    "test_ibb.TestIBB.test_ibb",                                   # XEP-0047, client to client
    "test_last_activity.TestLastActivity.test_activity",           # XEP-0012
    "test_mam.TestMAM.test_mam_iterate",                           # XEP-0313
    "test_mam.TestMAM.test_mam_retrieve",                          # XEP-0313
    "test_pep.TestPEP.test_pep_private",                           # XEP-0163/0223
    "test_pep.TestPEP.test_pep_public",                            # XEP-0163/0222
    "test_ping.TestPing.test_ping",                                # XEP-0199
    "test_privatestorage.TestPrivateStorage.test_privatestorage",  # XEP-0049
    "test_quickresponse.TestQuickResponse.test_quickresponse",     # XEP-0439, client to client
    "test_reactions.TestReactions.test_send_reaction",             # XEP-0444, client to client
    "test_reconnect.TestReconnect.test_disconnect_connect",
    "test_reconnect.TestReconnect.test_reconnect",
    "test_retract.TestRetract.test_retract_msg",                   # XEP-0424, client to client
    "test_slow_filters.TestSlowFilter.test_filters",
    "test_tls_check.TestTLS.test_connect_custom",
    "test_tls_check.TestTLS.test_connect_custom_fail",
    "test_tls_check.TestTLS.test_connect_custom_fail2",
    "test_tls_check.TestTLS.test_connect_direct_tls",              # XEP-0368
    "test_tls_check.TestTLS.test_connect_starttls",
    "test_tls_check.TestTLS.test_validate_cert_custom",
    "test_user_avatar.TestUserAvatar.test_set_avatar",             # XEP-0084 over PEP
    "test_vcard.TestVcardTemp.test_vcard",                         # XEP-0054
    "test_vcard_avatar.TestVcardAvatar.test_set_avatar",           # XEP-0153
    "test_version.TestVersion.test_version",                       # XEP-0092, client to client
]

_MUC = "needs a MUC service (XEP-0045; CI_MUC_SERVER): xferd has none"

#: Every itest that does not run, and why: each needs a service xferd does not offer.
NOT_RUN = {
    "test_component.SlixComponentIntegration.test_ping":
        "needs an external component connection (XEP-0114, port 5347): xferd has none "
        "(and the itest skips itself unless CI=woodpecker)",
    "test_httpupload.TestHTTPUpload.test_httpupload":
        "needs an HTTP File Upload service (XEP-0363) and aiohttp: xferd has neither",
    "test_moderate.TestModerate.test_moderate_msg":
        "needs a MUC service with moderation (XEP-0045, XEP-0425): xferd has none",
    "test_muc.TestMUC.test_initial_join": _MUC,
    "test_muc.TestMUC.test_join_after_config": _MUC,
    "test_muc.TestMUC.test_kick": _MUC,
    "test_muc.TestMUC.test_nick_change_leave": _MUC,
    "test_muc.TestMUC.test_setup_muc": _MUC,
    "test_selfping.TestSelfPing.test_presence_monitor":
        "needs a MUC service (XEP-0045) for MUC self-ping (XEP-0410): xferd has none",
    "test_sos.TestSos.test_sos":
        "needs service outage status addresses in disco (XEP-0455) served over HTTP "
        "(and aiohttp): xferd has none",
}


@pytest.fixture(scope="module")
def itests_dir(tmp_path_factory) -> Path:
    """The sdist's ``itests/`` extracted into a temporary directory (its parent is returned)."""
    try:
        return sdist.extract_itests(tmp_path_factory.mktemp("slixmpp-itests"))
    except sdist.Unavailable as exc:
        reason = str(exc)
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _accounts_file(path: Path) -> Path:
    """A XEP-0227 file with the two accounts, each in the other's roster with
    subscription ``both``. The itests query each other's resources
    (``test_last_activity`` asks the other account's full JID), which
    XEP-0012 §4 allows only to whoever may see the user's presence: the
    itests take two accounts that are contacts, as people who query each
    other are."""
    users = []
    for jid, password in ACCOUNTS.values():
        other = next(j for j, _ in ACCOUNTS.values() if j != jid)
        users.append(
            f"<user name='{jid.split('@')[0]}' password='{password}'>"
            "<query xmlns='jabber:iq:roster'>"
            f"<item jid='{other}' subscription='both'/></query></user>")
    path.write_text("<server-data xmlns='urn:xmpp:pie:0'>"
                    f"<host jid='{DOMAIN}'>{''.join(users)}</host></server-data>")
    return path


@pytest.fixture(scope="module")
def itest_server(tmp_path_factory):
    """One xferd for all itests, as slixmpp's CI has one Prosody; stanzas traced
    so that a failing itest's report shows what the server saw."""
    workdir = tmp_path_factory.mktemp("xferd")
    proc = XferdProcess(workdir, domains=(DOMAIN,), trace=True)
    imported = proc.cli("import", "--init",                # before the first start
                         str(_accounts_file(workdir / "itest-accounts.xml")))
    assert imported.returncode == 0, imported.stderr
    proc.start()
    yield proc
    proc.stop()


def _runner_env(itests_dir: Path, server: XferdProcess | None, log: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(itests_dir)
    env["ITEST_HOST"] = DOMAIN
    env["ITEST_LOG"] = str(log)
    if server is not None:
        env["ITEST_PORTS"] = f"5222={server.c2s_port},5223={server.direct_tls_port}"
        env["SSL_CERT_FILE"] = str(server.cert(DOMAIN))
        env.pop("SSL_CERT_DIR", None)
    for name, (jid, password) in ACCOUNTS.items():
        env[name] = jid
        env[f"{name}_PASSWORD"] = password
    return env


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_installed_slixmpp_is_the_pinned_version():
    """The itests exercise the slixmpp they import: the installed one must be
    the release they come from."""
    assert slixmpp.__version__ == sdist.VERSION, (
        f"slixmpp {slixmpp.__version__} is installed, the itests are {sdist.VERSION}'s: "
        "install that version, or move VERSION, URL and SHA256 in tests/thirdparty/sdist.py "
        "to the installed one")


def test_every_itest_is_listed(itests_dir, tmp_path):
    """``ITESTS`` and ``NOT_RUN`` together name exactly the sdist's itests, once each."""
    found = subprocess.run([sys.executable, str(RUNNER), "--list"], cwd=tmp_path,
                           env=_runner_env(itests_dir, None, tmp_path / "list.log"),
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    found_ids = {line.removeprefix("itests.") for line in found.stdout.split()}
    assert not set(ITESTS) & set(NOT_RUN)
    assert len(ITESTS) == len(set(ITESTS))
    assert set(ITESTS) | set(NOT_RUN) == found_ids


@pytest.mark.timeout(ITEST_TIMEOUT + 20)
@pytest.mark.parametrize("itest", ITESTS)
def test_itest(itest, itests_dir, itest_server, tmp_path):
    """Run one itest against xferd; on failure show its output, slixmpp's log
    and what xferd logged meanwhile."""
    slixmpp_log = tmp_path / "slixmpp.log"
    server_log_start = len(itest_server.log())
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(RUNNER), f"itests.{itest}"], cwd=tmp_path,
                              env=_runner_env(itests_dir, itest_server, slixmpp_log),
                              capture_output=True, text=True, timeout=ITEST_TIMEOUT)
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = None
        output = f"timed out after {ITEST_TIMEOUT} s\n" + "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout or "", exc.stderr or ""))
    took = time.monotonic() - started
    if returncode == 3:
        pytest.skip(_tail(output, 1))
    if returncode != 0:
        server_log = itest_server.log()[server_log_start:]
        slixmpp_text = slixmpp_log.read_text(errors="replace") if slixmpp_log.exists() else ""
        pytest.fail(f"itest {itest} failed (exit {returncode}, {took:.1f} s):\n{output}\n"
                    f"--- slixmpp log (last 120 lines) ---\n{_tail(slixmpp_text, 120)}\n"
                    f"--- xferd log during the itest (last 200 lines) ---\n"
                    f"{_tail(server_log, 200)}", pytrace=False)
