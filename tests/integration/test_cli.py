"""The ``xferd`` command from any directory, as a user runs it: after
``source .venv/bin/activate`` (the venv's ``xferd`` entry point) and through
``scripts/xferd``.

Each test works on a copy of the checkout (``server/``, ``storage/``, ``s2s/``,
``scripts/``, ``conf/``): its ``conf/xferd.toml`` is the config of a real
server started from it, so "the checkout's data" is the test's own, and the
commands run from another directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, XferdProcess, login

#: the venv's console script: what `xferd` is after `source .venv/bin/activate`
XFERD = Path(sys.prefix) / "bin" / "xferd"


def make_checkout(tmp_path: Path, with_conf: bool = True) -> Path:
    """A copy of this checkout's code under *tmp_path*/checkout; its .venv is
    the running one, and pyproject.toml is older than that venv's install stamp
    (scripts/lib/bootstrap.sh installs nothing)."""
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("server", "storage", "s2s", "scripts"):
        shutil.copytree(REPO / part, checkout / part, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    os.utime(checkout / "pyproject.toml", (0, 0))
    (checkout / ".venv").symlink_to(sys.prefix)
    if with_conf:
        (checkout / "conf").mkdir()
    return checkout


def checkout_server(checkout: Path) -> XferdProcess:
    """The checkout's own server: its conf/xferd.toml (data_dir "data", so
    conf/data/), started like scripts/serve starts it."""
    return XferdProcess(checkout / "conf").start()


def env_for(checkout: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XFERD_CONFIG", "XFERD_CALLER_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(checkout)   # the venv's xferd runs the checkout's code
    env.update(extra)
    return env


def run(command: list, cwd: Path, env: dict, input: str | None = None):
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, input=input,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working directory outside the checkout."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


async def test_admin_commands_from_another_directory_act_on_the_servers_data(
        tmp_path, elsewhere):
    checkout = make_checkout(tmp_path)
    server = checkout_server(checkout)
    try:
        env = env_for(checkout)
        config = checkout / "conf" / "xferd.toml"
        database = server.data_dir / "xferd.sqlite"
        for xferd in ([XFERD], [checkout / "scripts" / "xferd"]):
            user = "zz@localhost" if xferd == [XFERD] else "yy@localhost"
            added = run([*xferd, "adduser", user], elsewhere, env, input="zz-pass\n")
            assert added.returncode == 0, added.stderr
            assert f"xferd: config {config}, database {database}" in added.stderr
            assert f"created {user}" in added.stdout
            # the running server sees the account at once
            client = await login(server, f"{user}/here", "zz-pass")
            await client.close()
            users = run([*xferd, "users"], elsewhere, env)
            assert user in users.stdout.split() and str(database) in users.stderr
        assert list(elsewhere.iterdir()) == [], "nothing is created where the command runs"
        # and the copy's scripts/xferd installed nothing into the venv it shares: the
        # venv's own `xferd` still runs this checkout (scripts/lib/bootstrap.sh)
        where = subprocess.run([sys.executable, "-c", "import server; print(server.__file__)"],
                               cwd=elsewhere, capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert where.stdout.strip().startswith(str(REPO)), where
    finally:
        server.stop()


def test_no_config_and_no_database_is_said_and_nothing_is_created(tmp_path, elsewhere):
    """An installed xferd without a config file: the built-in defaults name
    ./data/xferd.sqlite, which does not exist; no command makes it silently."""
    checkout = make_checkout(tmp_path, with_conf=False)
    env = env_for(checkout)
    for command, stdin in ((["adduser", "zz@localhost"], "pw\n"), (["users"], None),
                           (["passwd", "zz@localhost"], "pw\n"), (["deluser", "zz@localhost"], None),
                           (["export", "--user", "zz@localhost", "-o", "zz.xml"], None)):
        done = run([XFERD, *command], elsewhere, env, input=stdin)
        assert done.returncode == 1, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"database {elsewhere / 'data' / 'xferd.sqlite'}" in done.stderr
        assert "config <built-in defaults>" in done.stderr
        assert "there is no database" in done.stderr and "-c FILE" in done.stderr
        assert not (elsewhere / "data").exists(), command
    # asked for, it is made
    made = run([XFERD, "adduser", "--init", "zz@localhost"], elsewhere, env, input="pw\n")
    assert made.returncode == 0, made.stderr
    assert (elsewhere / "data" / "xferd.sqlite").exists()


async def test_paths_typed_are_taken_from_the_callers_directory(tmp_path, elsewhere):
    """-o FILE, import FILE and $XFERD_CONFIG, relative, through both entry points."""
    checkout = make_checkout(tmp_path)
    server = checkout_server(checkout)
    try:
        env = env_for(checkout)
        assert run([XFERD, "adduser", "ann@localhost"], elsewhere, env,
                   input="ann-pass\n").returncode == 0
        for n, xferd in enumerate(([XFERD], [checkout / "scripts" / "xferd"])):
            out = f"ann{n}.xml"
            done = run([*xferd, "export", "--user", "ann@localhost", "-o", out], elsewhere, env)
            assert done.returncode == 0, done.stderr
            assert (elsewhere / out).is_file() and not (checkout / out).exists()
            new = f"ann{n}@localhost"
            done = run([*xferd, "import", out, "--as", new], elsewhere, env)
            assert done.returncode == 0, done.stderr
            client = await login(server, f"{new}/x", "ann-pass")
            await client.close()
        # a relative $XFERD_CONFIG names a file below the caller's directory
        (elsewhere / "mine").mkdir()
        shutil.copy(server.config, elsewhere / "mine" / "xferd.toml")
        (elsewhere / "mine" / "data").symlink_to(server.data_dir)
        for xferd in ([XFERD], [checkout / "scripts" / "xferd"]):
            listed = run([*xferd, "users"], elsewhere,
                         {**env, "XFERD_CONFIG": "mine/xferd.toml"})
            assert listed.returncode == 0, listed.stderr
            assert f"config {elsewhere / 'mine' / 'xferd.toml'}" in listed.stderr
            assert "ann0@localhost" in listed.stdout.split()
    finally:
        server.stop()
