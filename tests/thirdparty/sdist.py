"""slixmpp's own integration tests (``itests/``), taken from its pinned sdist on PyPI.

The sdist is downloaded once into ``.cache/thirdparty/`` at the repository
root (git-ignored, so nothing of slixmpp is ever committed here), checked
against its pinned SHA-256 every time it is used, and only its ``itests/``
directory is extracted, into a temporary directory of the test session.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "1.17.0"
URL = ("https://files.pythonhosted.org/packages/6c/ff/"
       "aac46de291c29162da5f1ef45d68a6f649a538942da28b514c866b909e35/"
       f"slixmpp-{VERSION}.tar.gz")
SHA256 = "05257ee0f2aecb42d6479f6071c89ad3c734fda0ee753eb4625ecdc6114d90b1"

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "thirdparty"
ARCHIVE = CACHE / f"slixmpp-{VERSION}.tar.gz"
TOP = f"slixmpp-{VERSION}/"


class Unavailable(Exception):
    """The sdist could not be downloaded (no network…): the message says why."""


class Mismatch(Exception):
    """The downloaded bytes are not the pinned sdist: never a reason to skip."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive(timeout: float = 60) -> Path:
    """The pinned sdist, from the cache or downloaded into it; its hash checked."""
    if ARCHIVE.exists():
        if _sha256(ARCHIVE) == SHA256:
            return ARCHIVE
        ARCHIVE.unlink()                 # a truncated or altered copy: fetch it again
    CACHE.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=CACHE, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(URL, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        got = _sha256(Path(partial))
        if got != SHA256:
            raise Mismatch(f"{URL}: sha256 {got}, expected {SHA256}")
        os.replace(partial, ARCHIVE)
    except OSError as exc:               # URLError and timeouts are OSErrors
        raise Unavailable(f"could not download {URL}: {exc}") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return ARCHIVE


def extract_itests(into: Path) -> Path:
    """Extract ``itests/`` of the sdist under *into*; returns *into* (the
    directory to run them from: they are imported as the package ``itests``)."""
    with tarfile.open(archive()) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(TOP + "itests/") and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name[len(TOP):]
        if hasattr(tarfile, "data_filter"):      # Python 3.11.4+: refuse odd paths and modes
            tar.extractall(into, members=members, filter="data")
        else:
            tar.extractall(into, members=members)
    return into
