"""What the ``xferd`` command says and leaves behind: Ctrl-D at a prompt,
refusals that exit non-zero, files private whatever the umask, state files
out of the working directory, plurals and step numbers."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.harness import REPO, XferdProcess, login


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XFERD_CONFIG", "XFERD_CALLER_DIR")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def in_terminal(args: list[str], env: dict, cwd, answer_to: bytes, keys: bytes,
                timeout: float = 30) -> tuple[int, str]:
    """Run ``python -m server ARGS`` on a pseudo-terminal of its own (so getpass
    prompts on it, as for a user at a shell); type *keys* once *answer_to* is on
    the screen. (exit status, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:                                            # the child: become xferd
        try:
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "server", *args], env)
        finally:
            os._exit(127)
    shown, typed = b"", False
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"xferd did not finish; the terminal shows {shown!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:                                 # EIO: the child is gone
                break
            if not chunk:
                break
            shown += chunk
            if not typed and answer_to in shown:
                os.write(fd, keys)
                typed = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


@pytest.fixture
def srv(make_server):
    server = make_server()
    server.adduser("alice@localhost", "alice-pass")
    return server


CTRL_D = b"\x04"


def test_ctrl_d_at_a_password_prompt_is_said_without_a_traceback(srv, tmp_path):
    for args, prompt in ((["adduser", "-c", str(srv.config), "zoe@localhost"], b"Password: "),
                         (["passwd", "-c", str(srv.config), "alice@localhost"], b"Password: "),
                         (["migrate", "--from", "alice@localhost", "--to", "bob@localhost"],
                          b"Password for alice@localhost")):
        code, shown = in_terminal(args, cli_env(XDG_STATE_HOME=str(tmp_path)), tmp_path,
                                  prompt, CTRL_D)
        assert code == 1, (args, shown)
        assert "Traceback" not in shown and "EOFError" not in shown, shown
        assert "xferd: error:" in shown and "Ctrl-D" in shown, shown
    assert "zoe@localhost" not in srv.cli("users").stdout.split()


def test_import_as_onto_an_existing_account_fails(srv, tmp_path):
    srv.adduser("bob@localhost", "bob-pass")
    export = tmp_path / "alice.xml"
    assert srv.cli("export", "--user", "alice@localhost", "-o", str(export)).returncode == 0
    done = srv.cli("import", str(export), "--as", "bob@localhost")
    assert done.returncode == 1, done.stderr
    assert "xferd: error: bob@localhost already exists: nothing imported" in done.stderr


def test_export_host_refuses_a_directory_that_holds_files(srv, tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    refused = srv.cli("export", "--host", "localhost", "-o", str(target))
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    assert "--force" in refused.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    forced = srv.cli("export", "--host", "localhost", "-o", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "main.xml").is_file() and (target / "notes.txt").read_text() == "mine"
    # an empty (or new) directory needs no --force
    assert srv.cli("export", "--host", "localhost", "-o", str(tmp_path / "new")).returncode == 0


def test_counts_are_worded_in_the_singular_for_one(srv, tmp_path):
    export = tmp_path / "alice.xml"
    done = srv.cli("export", "--user", "alice@localhost", "-o", str(export))
    assert "exported alice@localhost: 1 user (0 roster items," in done.stderr, done.stderr
    again = srv.cli("import", str(export))
    assert again.returncode == 0, again.stderr
    assert "imported 0 users (" in again.stderr
    assert "; 1 existing account skipped, 1 warning, in" in again.stderr
    alone = srv.cli("import", str(export), "--outreach")
    assert alone.returncode == 1 and "--outreach only goes with --as" in alone.stderr
    both = srv.cli("import", str(export), "--outreach", "--insecure")
    assert "--outreach and --insecure only go with --as" in both.stderr


async def test_import_as_outreach_numbers_its_own_steps_and_keeps_state_in_the_data_dir(
        srv, tmp_path):
    export = tmp_path / "alice.xml"
    assert srv.cli("export", "--user", "alice@localhost", "-o", str(export)).returncode == 0
    env = cli_env(XFERD_PASSWORD="alice-pass")
    done = subprocess.run([sys.executable, "-m", "server", "import", "-c", str(srv.config),
                           str(export), "--as", "alice2@localhost", "--outreach", "--wait", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[1/2] sending" in done.stderr and "[2/2]" in done.stderr, done.stderr
    assert "/9]" not in done.stderr
    state = srv.data_dir / "xferd-import-alice@localhost-alice2@localhost.json"
    assert state.is_file() and f"state saved in {state}" in done.stderr
    assert not list(tmp_path.glob("xferd-import-*")) and not list(
        srv.workdir.glob("xferd-import-*"))
    await (await login(srv, "alice2@localhost/x", "alice-pass")).close()


def test_every_file_under_the_data_dir_is_private_with_umask_022(tmp_path):
    """The database holds SCRAM keys and messages: its -wal (which holds the
    newest writes) and -shm must not be readable by others even for an instant,
    whoever opens it: the server, the CLI, or the storage API in a script."""
    server = XferdProcess(tmp_path / "served")
    umask = os.umask(0o022)                     # what the server and the cli inherit
    try:
        server.adduser("alice@localhost", "alice-pass")
        server.start()
    finally:
        os.umask(umask)
    try:
        files = [p for p in server.data_dir.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"xferd.sqlite", "xferd.sqlite-wal",
                                           "xferd.sqlite-shm"}
        # the cli and the server set umask 077; the storage itself does not rely on it:
        for p in files:
            if p.suffix != ".crt":
                assert p.stat().st_mode & 0o077 == 0, (p, oct(p.stat().st_mode))
    finally:
        server.stop()
    script = tmp_path / "script"
    opened = subprocess.run(
        [sys.executable, "-c", """if True:
        import asyncio, os, sys
        from storage.sqlite import SQLiteStorage
        async def main():
            store = SQLiteStorage(sys.argv[1])
            await store.open()
            await store.create_user("localhost", "bob", {})
            data = os.path.dirname(sys.argv[1])
            for name in sorted(os.listdir(data)):     # while open: -wal and -shm exist
                print(name, oct(os.stat(os.path.join(data, name)).st_mode & 0o777))
            print("dir", oct(os.stat(data).st_mode & 0o777))
            await store.close()
        asyncio.run(main())
        """, str(script / "data" / "xferd.sqlite")],
        env=cli_env(), capture_output=True, text=True, timeout=60, umask=0o022)
    assert opened.returncode == 0, opened.stderr
    modes = dict(line.split() for line in opened.stdout.splitlines())
    assert modes == {"xferd.sqlite": "0o600", "xferd.sqlite-wal": "0o600",
                     "xferd.sqlite-shm": "0o600", "dir": "0o700"}
