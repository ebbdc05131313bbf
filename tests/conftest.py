"""Shared fixtures: real xferd servers on free loopback ports, and an open storage."""

import pytest

from tests.harness import XferdProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One xferd per test module, with alice and bob already registered."""
    proc = XferdProcess(tmp_path_factory.mktemp("xferd"))
    proc.adduser("alice@localhost", "alice-pass")
    proc.adduser("bob@localhost", "bob-pass")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path):
    """Start a dedicated xferd with config overrides: make_server(c2s={...})."""
    started = []

    def make(*, trace=False, domains=("localhost",), start=True, **overrides):
        proc = XferdProcess(tmp_path / f"xferd{len(started)}", domains=domains,
                            overrides=overrides, trace=trace)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def new_user(server):
    """Create a fresh account on the module's server: new_user('ann') → 'ann7@localhost'."""
    def make(prefix: str = "user", password: str = "pw") -> str:
        jid = f"{prefix}{next(_counter)}@localhost"
        server.adduser(jid, password)
        return jid
    return make


@pytest.fixture
async def store(tmp_path):
    """An empty SQLite storage, opened (the schema made), closed after the test."""
    from storage.sqlite import SQLiteStorage
    s = SQLiteStorage(tmp_path / "x.sqlite")
    await s.open()
    yield s
    await s.close()
