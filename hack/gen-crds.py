#!/usr/bin/env python3
"""Renders crds/*.yaml from the typed models in operator/mysql_backup_operator/api/, then what is
derived from them: the chart's copies and manifests/install.yaml (hack/render-manifests.sh) and
docs/api-reference.md (hack/gen-api-docs.py).

`make crds` runs it; `--check` only reports files that differ (exit 1), for CI and review.
How to add a field: docs/design-typed-api.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from mysql_backup_operator.api import crds  # noqa: E402


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in crds.rendered().items():
        path = REPO / "crds" / name
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.write_text(text)
    for path in stale:
        print(f"{'differs' if check else 'wrote'}: {path.relative_to(REPO)}")
    if check:
        return 1 if stale else 0
    subprocess.run(["bash", str(REPO / "hack" / "render-manifests.sh")], check=True)
    subprocess.run([sys.executable, str(REPO / "hack" / "gen-api-docs.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
