"""The repository stands on its own: the README and the code point at nothing
outside it (a sibling directory, a tracker of this project), so a fresh clone
holds everything its text refers to."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: directories that are not the project's text (environments, caches, run data)
SKIPPED = {".git", ".venv", "data", ".cache", ".pytest_cache", ".hypothesis", "__pycache__",
           "bench-results", "build"}
TEXT = {".py", ".md", ".toml", ".sh", ".cfg", ".txt", ".lua", ".yml", ".yaml", ""}

OUTSIDE = re.compile(r"\.\./shared|\.\./\.\./")
#: the word for a ticket followed by its number, unless the line says whose it is
#: (another project's: its bug tracker is a public reference)
TICKET = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
OTHER_PROJECTS = re.compile(r"ejabberd|prosody|slixmpp|github\.com/(?!.*xferd)", re.IGNORECASE)


def project_text_files():
    for top, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.endswith(".egg-info")]
        for name in files:
            path = Path(top) / name
            if path.suffix not in TEXT or path.is_symlink():
                continue
            if path.suffix == "" and path.read_bytes()[:2] != b"#!":
                continue                                # only scripts among the bare names
            yield path


def test_nothing_points_outside_the_repository_or_at_its_tickets():
    found = []
    for path in project_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line) or (TICKET.search(line) and not OTHER_PROJECTS.search(line)):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_readme_names_only_files_that_exist():
    """Paths the README gives as the repository's (`scripts/…`, `conf/…`, …) exist."""
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"`((?:scripts|conf|server|storage|s2s|tests)/[\w./-]+)`", readme))
    missing = sorted(p for p in named if not (REPO / p.rstrip("/")).exists()
                     and not any(c in p for c in "*<>…"))
    assert not missing, missing
