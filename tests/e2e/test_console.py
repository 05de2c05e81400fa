"""The web console in a real browser (headless Chromium from Debian) against the real stack.

The console runs as users start it, `kubectl mysqlbackup ui`, with a kubeconfig: the test's admin
one, or a view-only ServiceAccount's. Each page is screenshotted into docs/console/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import Env
from tests.stackenv import REPO, Stack, eventually

pytestmark = pytest.mark.stack

SHOTS = REPO / "docs" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _require_browser() -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: run `make deps` (hack/install-deps.sh)")


class ConsoleProcess:
    """`kubectl mysqlbackup ui` as a child process; the URL with its token is read from stdout."""

    def __init__(self, stack: Stack, kubeconfig: str, namespace: str) -> None:
        self.log = (stack.state_dir / f"console-{namespace}.log").open("w+")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "KUBECONFIG": "/nonexistent",
        }
        self.proc = subprocess.Popen(
            [stack.kubectl_bin, "mysqlbackup", "ui", f"--kubeconfig={kubeconfig}", "-n", namespace],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
            if m:
                self.url = m.group(1)
        assert self.url, "console did not print its URL"
        self.base = self.url.split("/?")[0]

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.log.close()

    def requests(self, path: str) -> int:
        """How many requests for `path` the console has served (its request log on stderr)."""
        self.log.flush()
        text = Path(self.log.name).read_text()
        return len(re.findall(rf"^console: GET {re.escape(path)} ", text, re.M))


class Browser:
    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
        ):
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.implicitly_wait(0)

    def go(self, url: str) -> None:
        self.driver.get(url)

    def find(self, testid: str, timeout: float = 30) -> Any:
        from selenium.webdriver.common.by import By

        return eventually(
            lambda: next(iter(self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')), None),
            timeout=timeout,
            interval=0.2,
            what=f"element {testid}",
        )

    def all(self, testid: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]'))

    def texts(self, selector: str) -> list[str]:
        """Texts read in the page itself: Vue re-renders never leave us holding a stale element."""
        script = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)"
        return [str(t) for t in self.driver.execute_script(script, selector)]

    def text(self, testid: str) -> str:
        found = self.texts(f'[data-testid="{testid}"]')
        return found[0] if found else ""

    def testids(self, prefix: str) -> list[str]:
        script = (
            "return Array.from(document.querySelectorAll(`[data-testid^='${arguments[0]}']`))"
            ".map(e => e.dataset.testid.slice(arguments[0].length))"
        )
        return [str(t) for t in self.driver.execute_script(script, prefix)]

    def click(self, testid: str, timeout: float = 30) -> None:
        from selenium.common.exceptions import StaleElementReferenceException

        def attempt() -> bool:
            try:
                self.find(testid, timeout=timeout).click()
            except StaleElementReferenceException:
                return False
            return True

        eventually(attempt, timeout=timeout, interval=0.2, what=f"click {testid}")

    def wait_text(self, testid: str, pred: Callable[[str], bool], timeout: float = 180) -> str:
        return str(
            eventually(lambda: (t := self.text(testid)) and pred(t) and t, timeout=timeout, interval=0.2, what=testid)
        )

    def shot(self, name: str, *, settle: float = 0.5) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        # Let the page paint after the last update before capturing it.
        time.sleep(settle)
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser() -> Iterator[Browser]:
    _require_browser()
    b = Browser()
    yield b
    b.quit()


@contextlib.contextmanager
def console(stack: Stack, kubeconfig: str, namespace: str) -> Iterator[ConsoleProcess]:
    c = ConsoleProcess(stack, kubeconfig, namespace)
    try:
        yield c
    finally:
        c.stop()


def view_user_kubeconfig(stack: Stack, api: Any, namespace: str, path: Path) -> str:
    """A kubeconfig for a ServiceAccount bound to the built-in `view` role in the namespace only."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "viewer"}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token("viewer", namespace, {"spec": {"expirationSeconds": 900}})
    cfg = yaml.safe_load(Path(stack.kubeconfig).read_text())
    cluster = cfg["clusters"][0]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "viewer", "user": {"token": token.status.token}}],
        "contexts": [
            {"name": "viewer", "context": {"cluster": cluster["name"], "user": "viewer", "namespace": namespace}}
        ],
        "current-context": "viewer",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


def test_console_admin_flow(stack: Stack, env: Env, browser: Browser) -> None:
    """List, create with progress to Completed, restore with the safety backup, delete refused/allowed, queue."""
    env.policy(schedule="0 3 * * *")
    env.create(
        "backups",
        {
            "kind": "Backup",
            "metadata": {"name": "nightly-1"},
            "spec": {"policyRef": {"name": "pol"}, "trigger": "scheduled"},
        },
    )
    env.wait_phase("backups", "nightly-1", ("Completed",))

    with console(stack, stack.kubeconfig, env.namespace) as c:
        browser.go(c.url)
        # The token in the URL became a cookie; the address bar no longer shows it.
        eventually(lambda: "token" not in browser.driver.current_url, timeout=10, what="token traded for a cookie")
        assert "token=" not in browser.driver.current_url
        browser.wait_text("live", lambda t: t == "live", timeout=30)
        browser.find("backup-row-nightly-1")

        # Create: the dialog, then the details page follows the Backup until Completed (watch-fed).
        browser.click("create-backup")
        browser.find("create-dialog")
        browser.find("create-description").send_keys("before the schema change")
        browser.shot("create-backup")
        browser.click("create-confirm")
        eventually(
            lambda: "#/backups/" in browser.driver.current_url, timeout=30, what="details page of the new backup"
        )
        name = browser.driver.current_url.split("#/backups/")[1]
        seen: list[str] = []

        def completed() -> bool:
            phase = browser.text("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            return phase == "Completed"

        eventually(completed, timeout=240, interval=0.2, what="created backup Completed in the page")
        assert re.fullmatch(r"pol-manual-\d{14}", name), name
        assert "Running" in seen or "Pending" in seen, seen
        assert re.fullmatch(r"[0-9a-f]{64}", browser.text("sha256"))
        assert int(browser.text("tables")) >= 4
        assert env.get("backups", name)["status"]["phase"] == "Completed"
        browser.wait_text("log", lambda t: len(t) > 10, timeout=30)
        browser.find("events")
        browser.shot("backup-details")

        # The list: newest first, filter by trigger.
        browser.go(c.base + "/#/backups")
        names = eventually(lambda: (n := browser.testids("backup-row-")) and len(n) >= 2 and n, timeout=30)
        assert names[:2] == [name, "nightly-1"], names
        browser.shot("backups")
        from selenium.webdriver.support.ui import Select

        Select(browser.find("filter-trigger")).select_by_visible_text("scheduled")
        eventually(lambda: browser.testids("backup-row-") == ["nightly-1"], timeout=20, what="filtered list")

        # Pagination: one per page, newest first.
        browser.go(c.base + "/#/backups?limit=1")
        browser.wait_text("page-info", lambda t: t == "page 1 of 2", timeout=30)
        assert browser.testids("backup-row-") == [name]
        browser.click("page-next")
        browser.wait_text("page-info", lambda t: t == "page 2 of 2", timeout=30)
        assert browser.testids("backup-row-") == ["nightly-1"]

        # Policies: last success and next run from the policy status.
        browser.go(c.base + "/#/policies")
        row = eventually(
            lambda: (t := browser.text("policy-pol")) and (name in t or "nightly-1" in t) and t,
            timeout=60,
            what="last success shown",
        )
        assert "0 3 * * *" in row
        browser.shot("policies")

        # Delete refused for a scheduled Backup: the admission policy's own message is shown (dry run).
        browser.go(c.base + "/#/backups/nightly-1")
        browser.click("delete")
        browser.find("delete-scheduled")
        msg = browser.wait_text("error-message", lambda t: "created by a schedule" in t, timeout=30)
        assert "retention" in msg
        assert not browser.all("delete-confirm")
        browser.shot("delete-scheduled-refused")
        assert env.get("backups", "nightly-1")["metadata"].get("deletionTimestamp") is None

        # Restore: the confirmation explains the safety backup; then progress through every phase.
        browser.go(c.base + f"/#/backups/{name}")
        browser.wait_text("phase", lambda t: t == "Completed", timeout=30)
        browser.click("restore")
        assert "safety backup" in browser.find("restore-dialog").text
        assert "restore starts only if that safety backup completes" in browser.text("safety-explained")
        assert not browser.find("restore-confirm").is_enabled()  # needs the explicit confirmation
        browser.click("restore-understood")
        browser.shot("restore-confirm")
        browser.click("restore-confirm")
        eventually(lambda: "#/restores/" in browser.driver.current_url, timeout=30, what="restore progress page")
        phases: list[str] = []
        safety: list[str] = []
        shot_in: set[str] = set()

        def restored() -> bool:
            p, s = browser.text("restore-phase"), browser.text("safety-phase")
            if p and (not phases or phases[-1] != p):
                phases.append(p)
            if s and (not safety or safety[-1] != s):
                safety.append(s)
            if p in ("BackingUp", "Restoring") and p not in shot_in:
                shot_in.add(p)
                browser.shot(f"restore-{p.lower()}", settle=0)
            return p in ("Completed", "Failed")

        eventually(restored, timeout=300, interval=0.2, what="restore finished in the page")
        rname = browser.driver.current_url.split("#/restores/")[1]
        assert phases[-1] == "Completed", (phases, env.get("restores", rname).get("status"))
        # Watch-fed updates show every phase, the safety backup's included (each lasts seconds: Job pods).
        assert {"BackingUp", "Restoring"} <= set(phases), phases
        assert safety and safety[-1] == "Completed", safety
        pre = env.get("restores", rname)["status"]["preRestoreBackup"]
        assert browser.text("safety-name") == pre
        assert env.get("backups", pre)["spec"]["trigger"] == "pre-restore"
        print("restore phases seen in the page:", phases, "safety backup:", safety)
        browser.shot("restore-done")
        browser.go(c.base + "/#/restores")
        browser.wait_text("restores", lambda t: rname in t and "Completed" in t, timeout=30)
        browser.shot("restores")

        # Delete a manual backup: the dry run allows it, then it is gone.
        env.backup("scratch")
        env.wait_phase("backups", "scratch", ("Completed",))
        browser.go(c.base + "/#/backups/scratch")
        browser.click("delete")
        browser.click("delete-confirm")
        browser.find("deleted")
        eventually(lambda: "scratch" not in [b["metadata"]["name"] for b in env.list("backups")], timeout=60)

        # The queue: three backups at once; one holds the lock, the others wait in order.
        for i in range(3):
            env.backup(f"q{i}")
        browser.go(c.base + "/#/queue")

        def queued() -> bool:
            holder, waiting = browser.text("holder"), browser.texts('[data-testid="waiting"]')
            return bool(holder.startswith(("Backup", "Restore")) and waiting)

        eventually(queued, timeout=60, interval=0.2, what="a lock holder and a waiting backup")
        browser.shot("queue")
        first_waiting = browser.text("waiting")
        assert "DatabaseBusy" in first_waiting or "Queued" in first_waiting, first_waiting
        for i in range(3):
            env.wait_phase("backups", f"q{i}", ("Completed",), timeout=240)
        browser.wait_text("queue-empty", lambda t: "Nothing" in t, timeout=30)

        # Live, not polled: a page whose data does not change re-reads nothing while it stays open.
        time.sleep(3)
        before = c.requests("/api/queue")
        time.sleep(10)
        assert c.requests("/api/queue") - before <= 1, "the queue page polls instead of following the watch"
        assert c.requests("/api/watch") >= 1


def test_console_view_only_user_cannot_restore(
    stack: Stack, api: Any, env: Env, browser: Browser, tmp_path: Path
) -> None:
    env.policy()
    env.backup("b1")
    env.wait_phase("backups", "b1", ("Completed",))
    kubeconfig = view_user_kubeconfig(stack, api, env.namespace, tmp_path / "viewer.kubeconfig")

    with console(stack, kubeconfig, env.namespace) as c:
        browser.go(c.url)
        browser.find("backup-row-b1")  # a viewer may list
        browser.go(c.base + "/#/backups/b1")
        browser.wait_text("phase", lambda t: t == "Completed", timeout=30)
        browser.click("restore")
        assert "restore" in browser.text("restore-no-permission").lower()
        browser.click("restore-understood")
        browser.click("restore-confirm")
        msg = browser.wait_text("error-message", lambda t: "forbidden" in t, timeout=30)
        assert "cannot create resource" in msg and "restores" in msg
        assert "Permission denied" in browser.find("restore-dialog").text
        assert "Traceback" not in browser.driver.page_source
        browser.shot("view-user-restore-denied")
        assert env.list("restores") == []
        # Nor may a viewer delete: the dry run already says so.
        browser.find("restore-dialog").find_element("css selector", "button").click()
        browser.click("delete")
        browser.wait_text("error-message", lambda t: "cannot delete resource" in t, timeout=30)
        assert not browser.all("delete-confirm")
