"""Coverage-guided fuzzing of the stream parser with atheris, for long local runs.

Not part of the test suite and atheris is not a dependency: install it in a
virtualenv of its own (it has wheels for CPython 3.11 on x86-64 Linux)::

    python3.11 -m venv /tmp/atheris && /tmp/atheris/bin/pip install atheris lxml
    mkdir -p /tmp/xferd-fuzz/work /tmp/xferd-fuzz/crashes
    cp tests/fuzz/corpus/*.bin /tmp/xferd-fuzz/work/     # libFuzzer writes into it
    PYTHONPATH=. /tmp/atheris/bin/python tests/fuzz/atheris_stream.py \\
        /tmp/xferd-fuzz/work -artifact_prefix=/tmp/xferd-fuzz/crashes/ \\
        -max_total_time=3600 -rss_limit_mb=2048 -timeout=20

Each input is a stream as the peer sends it. The chunking and the parser's
limits are derived from a hash of the input, so a crash file replays the same
way (``... atheris_stream.py /tmp/xferd-fuzz/crashes/crash-…``). Every run
goes through :func:`tests.fuzz.oracle.check`: the same properties as the
hypothesis tests. A crash is a bug: minimise it (``-minimize_crash=1``), add it
to tests/fuzz/corpus/ with a sidecar, and fix it.
"""

from __future__ import annotations

import hashlib
import sys

import atheris

with atheris.instrument_imports(include=["server.xmpp"]):
    from server.xmpp.stream import DEFAULT_MAX_STANZA_SIZE
    from tests.fuzz.oracle import Limits, check


def plan(data: bytes):
    """Chunk sizes and limits for *data*, fixed by its hash."""
    h = hashlib.blake2b(data, digest_size=8).digest()
    sizes = [1 + h[i] % (64 if h[0] & 1 else 9000) for i in range(1, 5)]
    size = (DEFAULT_MAX_STANZA_SIZE, 4096, 600, 100)[h[5] % 4]
    depth = (32, 8, 3)[h[6] % 3]
    return sizes, Limits(max_stanza_size=size, max_depth=depth)


def test_one_input(data: bytes) -> None:
    sizes, limits = plan(data)
    check(data, None, limits)
    check(data, sizes, limits)
    if len(data) <= 4096:
        check(data, [1], limits)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
