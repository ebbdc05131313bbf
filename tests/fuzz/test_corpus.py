"""Replay every input in tests/fuzz/corpus/ through the stream parser's properties.

The corpus keeps the inputs that found bugs (and the shapes of bugs found
before the fuzzer existed). Each ``NNN-short-description.bin`` holds the raw
bytes; an optional ``NNN-short-description.json`` next to it says

* ``note``: what went wrong, and when;
* ``sizes``: the chunk sizes that found it (cycled; absent: one piece);
* ``limits``: ``content_ns``, ``max_stanza_size``, ``max_depth`` for the parser;
* ``expect``: ``condition`` (a stream error condition, or null for none),
  ``stanzas`` (how many are handed out before the verdict) and ``closed``.

Every file is fed in its own chunking and in several standard ones (one piece,
a byte at a time, 7 bytes, 8 KiB) and must satisfy everything in
:mod:`tests.fuzz.oracle`; ``expect`` must hold for every chunking.

To add a case: save the input that hypothesis printed as the next number,
write the sidecar, fix the bug, and watch this test go green.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .oracle import Limits, check

pytestmark = pytest.mark.hostile

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(CORPUS.glob("*.bin"))
CHUNKINGS = [None, [1], [7], [8192]]


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}


def test_the_corpus_is_there():
    assert len(CASES) >= 8
    for path in CORPUS.iterdir():
        assert path.suffix in (".bin", ".json"), path
        if path.suffix == ".json":
            assert path.with_suffix(".bin").exists(), f"{path.name} describes nothing"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_input(path):
    data = path.read_bytes()
    side = _sidecar(path)
    limits = Limits(**side.get("limits", {}))
    expect = side.get("expect")
    chunkings = [side["sizes"]] + CHUNKINGS if side.get("sizes") else CHUNKINGS
    for sizes in chunkings:
        out = check(data, sizes, limits)
        if expect is None:
            continue
        where = f"{path.name} in chunks of {sizes or 'all'}"
        assert out.condition == expect.get("condition"), f"{where}: {out.error!r}"
        if "stanzas" in expect:
            assert len(out.elements) == expect["stanzas"], where
        if "closed" in expect:
            assert out.closed == expect["closed"], where
