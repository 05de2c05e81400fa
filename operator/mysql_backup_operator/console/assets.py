"""Which web/ sources the committed console build was made from.

The built assets are committed (so `pip install` and CI need no node); `make console` rebuilds
them and records this digest in static/SOURCES.sha256, and a unit test fails when someone edits
web/ without rebuilding.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_FILE = "SOURCES.sha256"
SOURCE_GLOBS = ("index.html", "vite.config.js", "package.json", "package-lock.json", "src/**/*")


def sources_digest(web: Path) -> str:
    """sha256 over the relative path and bytes of every source file, in a stable order."""
    h = hashlib.sha256()
    files = sorted({p for g in SOURCE_GLOBS for p in web.glob(g) if p.is_file()})
    for p in files:
        rel = p.relative_to(web).as_posix()
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def main() -> None:
    import sys

    web, static = Path(sys.argv[1]), Path(sys.argv[2])
    (static / DIGEST_FILE).write_text(sources_digest(web) + "\n")


if __name__ == "__main__":
    main()
