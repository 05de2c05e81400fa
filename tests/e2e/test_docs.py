"""Every YAML example in docs/ is applied to the real apiserver (Helm values go through helm)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.stackenv import REPO, Stack

pytestmark = pytest.mark.stack
BLOCK = re.compile(r"^```(yaml[^\n]*)\n(.*?)^```", re.S | re.M)
ORDER = ["quick-start.md"]  # creates the Secrets the other pages refer to


def doc_pages() -> list[Path]:
    pages = sorted((REPO / "docs").glob("*.md"), key=lambda p: (p.name not in ORDER, p.name))
    return [*pages, REPO / "README.md"]


def test_every_yaml_example_applies(stack: Stack, namespace: str, operator: object) -> None:
    applied = 0
    for page in doc_pages():
        for info, body in BLOCK.findall(page.read_text()):
            if info.strip() == "yaml helm-values":
                values = page.parent / ".values-under-test.yaml"
                values.write_text(body)
                try:
                    r = subprocess.run(
                        [stack.raw["helm"], "template", "x", str(REPO / "helm/mysql-backup-operator"),
                         "--kube-version", "1.35.4", "-f", str(values)],
                        capture_output=True, text=True,
                    )  # fmt: skip
                finally:
                    values.unlink()
                assert r.returncode == 0, f"{page.name}: helm values example rejected: {r.stderr}"
                continue
            docs = [d for d in yaml.safe_load_all(body) if d]
            assert all("apiVersion" in d and "kind" in d for d in docs), f"{page.name}: not a manifest: {body[:80]}"
            r = stack.kubectl("apply", "-n", namespace, "-f", "-", input=body, check=False)
            assert r.returncode == 0, f"{page.name}: example rejected by the apiserver:\n{body}\n{r.stderr}"
            applied += len(docs)
    assert applied >= 15
