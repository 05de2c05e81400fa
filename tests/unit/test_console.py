"""The web console's pure logic, its committed build, and its loopback server's guards (against a fake cluster)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mysql_backup_operator.console import assets, views
from mysql_backup_operator.console.cluster import ApiError
from mysql_backup_operator.console.server import Console

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "operator" / "mysql_backup_operator" / "console" / "static"


def backup(name: str, created: str, *, policy: str = "pol", trigger: str = "manual", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "labels": {}},
        "spec": {"policyRef": {"name": policy}, "trigger": trigger},
        "status": status,
    }


ITEMS = [
    backup("a", "2026-01-01T10:00:00Z", phase="Completed", sizeBytes=10),
    backup("b", "2026-01-02T10:00:00Z", trigger="scheduled", phase="Failed", reason="DumpFailed"),
    backup("c", "2026-01-03T10:00:00Z", policy="other", phase="Completed"),
    backup("d", "2026-01-03T10:00:00Z", phase="Running"),
]


def names(page: dict[str, Any]) -> list[str]:
    return [r["name"] for r in page["items"]]


def test_backups_newest_first_then_filtered_and_paged() -> None:
    everything = views.backup_page(ITEMS, views.BackupFilter(), page=1, limit=10)
    assert names(everything) == ["d", "c", "b", "a"]  # ties on time: by name, descending
    assert names(views.backup_page(ITEMS, views.BackupFilter(policy="pol"), page=1, limit=10)) == ["d", "b", "a"]
    assert names(views.backup_page(ITEMS, views.BackupFilter(trigger="scheduled"), page=1, limit=10)) == ["b"]
    assert names(views.backup_page(ITEMS, views.BackupFilter(phase="completed"), page=1, limit=10)) == ["c", "a"]
    p2 = views.backup_page(ITEMS, views.BackupFilter(), page=2, limit=3)
    assert names(p2) == ["a"] and p2["pages"] == 2 and p2["total"] == 4
    assert views.backup_page(ITEMS, views.BackupFilter(), page=9, limit=3)["page"] == 2  # clamped
    with pytest.raises(ValueError):
        views.backup_page(ITEMS, views.BackupFilter(), page=0, limit=3)


def test_date_filters_include_the_whole_until_day() -> None:
    flt = views.BackupFilter.from_query({"since": "2026-01-02", "until": "2026-01-02"})
    assert flt.since == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert names(views.backup_page(ITEMS, flt, page=1, limit=10)) == ["b"]
    with pytest.raises(ValueError, match="not a date"):
        views.BackupFilter.from_query({"since": "yesterday"})


def test_backup_row_duration_from_times_when_not_reported() -> None:
    b = backup("x", "2026-01-01T00:00:00Z", startedAt="2026-01-01T00:00:00Z", completedAt="2026-01-01T00:01:30Z")
    assert views.backup_row(b)["durationSeconds"] == 90
    assert views.backup_row(backup("y", "2026-01-01T00:00:00Z"))["phase"] == "Pending"


def test_policy_row_reports_overdue_and_next_run() -> None:
    p = {
        "metadata": {"name": "p"},
        "spec": {"schedule": "0 * * * *", "database": {"databases": ["shop"], "host": "db"}},
        "status": {
            "nextScheduleTime": "2026-01-01T01:00:00Z",
            "lastSuccessfulBackup": "p-1",
            "conditions": [{"type": "BackupOverdue", "status": "True", "message": "late"}],
        },
    }
    row = views.policy_row(p)
    assert row["overdue"] is True and row["overdueMessage"] == "late"
    assert row["nextScheduleTime"] == "2026-01-01T01:00:00Z" and row["databases"] == ["shop"]
    assert views.policy_row({"metadata": {"name": "q"}})["overdue"] is None


def test_queue_names_holder_and_waiters_in_order() -> None:
    key = {"mysqlbackup.dev/database-key": "k1"}
    running = backup("run", "2026-01-01T00:00:00Z", phase="Running")
    w2 = backup("w2", "2026-01-01T00:00:02Z", phase="Pending", queuePosition=2, reason="DatabaseBusy")
    w1 = backup("w1", "2026-01-01T00:00:03Z", phase="Pending", queuePosition=1, reason="DatabaseBusy")
    done = backup("done", "2026-01-01T00:00:00Z", phase="Completed")
    for b in (running, w1, w2, done):
        b["metadata"]["labels"] = key
    restore = {
        "metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:04Z", "labels": key},
        "spec": {"backupRef": {"name": "done"}},
        "status": {"phase": "Pending", "queuePosition": 3},
    }
    (g,) = views.queue([running, w1, w2, done], [restore])
    assert g["holder"] == "Backup ns/run" and g["holderSource"] == "status"
    assert [w["name"] for w in g["waiting"]] == ["w1", "w2", "r"]
    (g2,) = views.queue([running, w1], [], leases={"k1": "Restore/ns/other/uid"})
    assert g2["holder"] == "Restore ns/other" and g2["holderSource"] == "lease"
    assert views.queue([done], []) == []


def test_api_errors_are_messages_not_traces() -> None:
    rbac = json.dumps({"message": 'restores.mysqlbackup.dev is forbidden: User "u" cannot create resource'})
    e = views.api_error(403, rbac, "Forbidden", verb="create", what="Restores")
    assert e["title"] == "Permission denied" and "cannot create" in e["message"] and "create Restores" in e["hint"]
    vap = json.dumps({"message": "ValidatingAdmissionPolicy 'x' denied request: Backup s was created by a schedule"})
    assert views.api_error(403, vap, "Forbidden")["title"] == "Refused by the cluster"
    assert views.api_error(500, "not json", "boom")["message"] == "not json"


def test_committed_build_matches_the_web_sources() -> None:
    """Edit web/ and forget `make console`, and this fails: the shipped assets would be stale."""
    recorded = (STATIC / assets.DIGEST_FILE).read_text().strip()
    assert recorded == assets.sources_digest(REPO / "web"), "web/ changed: run `make console` and commit the build"
    index = (STATIC / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="/(assets/[^"]+)"', index):
        assert (STATIC / ref).is_file(), ref
    assert re.search(r'src="/assets/index-[\w-]+\.js"', index)


class FakeCluster:
    """Stands in for the Kubernetes side; the guards under test never reach it."""

    namespace, context = "ns", "ctx"

    def __init__(self) -> None:
        self.created: list[str] = []

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        return ITEMS if plural == "backups" else []

    def can(self, verb: str, resource: str) -> bool:
        return resource != "restores"

    def create_backup(self, *, policy: str, description: str | None) -> dict[str, Any]:
        self.created.append(policy)
        return backup(f"{policy}-manual-1", "2026-01-01T00:00:00Z")

    def create_restore(self, **kw: Any) -> dict[str, Any]:
        raise ApiError(views.api_error(403, json.dumps({"message": "forbidden"}), "Forbidden", verb="create"))


@pytest.fixture
def console() -> Iterator[Console]:
    c = Console(FakeCluster(), token="secret-token")  # type: ignore[arg-type]
    t = threading.Thread(target=c.serve_forever, daemon=True)
    t.start()
    yield c
    c.shutdown()
    c.server_close()


def request(
    c: Console, method: str, path: str, *, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
    data = None if body is None else json.dumps(body).encode()
    h = {"Host": f"127.0.0.1:{c.port}", **(headers or {})}
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def test_token_in_url_becomes_a_strict_cookie(console: Console) -> None:
    status, headers, _ = request(console, "GET", "/?token=secret-token")
    assert status == 303 and headers["location"] == "/"
    assert "SameSite=Strict" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
    assert request(console, "GET", "/?token=wrong")[0] == 401
    status, headers, body = request(console, "GET", "/")
    assert status == 200 and b'id="app"' in body and "frame-ancestors 'none'" in headers["content-security-policy"]


def test_api_needs_the_cookie_and_a_loopback_host(console: Console) -> None:
    cookie = {"Cookie": "mbo_console=secret-token"}
    assert request(console, "GET", "/api/backups")[0] == 401
    status, _, body = request(console, "GET", "/api/backups?limit=2", headers=cookie)
    assert status == 200 and [r["name"] for r in json.loads(body)["items"]] == ["d", "c"]
    # DNS rebinding: the browser sends the attacker's host name.
    assert request(console, "GET", "/api/backups", headers={**cookie, "Host": f"evil.example:{console.port}"})[0] == 421
    assert request(console, "GET", "/", headers={"Host": "evil.example"})[0] == 421


def test_writes_refuse_cross_origin_and_non_json(console: Console) -> None:
    cookie = {"Cookie": "mbo_console=secret-token"}
    evil = {**cookie, "Origin": "http://evil.example"}
    assert request(console, "POST", "/api/backups", headers=evil, body={"policy": "pol"})[0] == 403
    form = {**cookie, "Content-Type": "application/x-www-form-urlencoded"}
    assert request(console, "POST", "/api/backups", headers=form, body={"policy": "pol"})[0] == 400
    own = {**cookie, "Origin": f"http://localhost:{console.port}"}
    status, _, body = request(console, "POST", "/api/backups", headers=own, body={"policy": "pol"})
    assert status == 201 and json.loads(body)["name"] == "pol-manual-1"
    assert console.cluster.created == ["pol"]  # type: ignore[attr-defined]


def test_restore_needs_confirmation_and_403_is_a_message(console: Console) -> None:
    cookie = {"Cookie": "mbo_console=secret-token"}
    status, _, body = request(console, "POST", "/api/restores", headers=cookie, body={"backup": "a"})
    assert status == 400 and "confirmation" in json.loads(body)["error"]["message"]
    status, _, body = request(console, "POST", "/api/restores", headers=cookie, body={"backup": "a", "confirm": True})
    err = json.loads(body)["error"]
    assert status == 403 and err["title"] == "Permission denied" and "Traceback" not in body.decode()
    status, _, body = request(console, "GET", "/api/context", headers=cookie)
    assert json.loads(body)["can"] == {"createBackup": True, "deleteBackup": True, "createRestore": False}


def test_static_paths_cannot_escape(console: Console) -> None:
    assert request(console, "GET", "/../../pyproject.toml")[0] == 404
    assert request(console, "GET", "/assets/%2e%2e/%2e%2e/views.py")[0] == 404
    assert request(console, "POST", "/")[0] == 405


def test_plugin_ui_subcommand_takes_kubectl_flags() -> None:
    from mysql_backup_operator import plugin
    from mysql_backup_operator.console import server

    args = plugin.parser().parse_args(["ui", "-n", "shop", "--context", "prod", "--port", "8123"])
    assert (args.namespace, args.context, args.port, args.operator_namespace) == (
        "shop",
        "prod",
        8123,
        "mysql-backup-system",
    )
    assert args.run is server.run


def test_a_console_bug_is_a_message_not_a_dropped_connection(console: Console) -> None:
    # FakeCluster has no lease_holders(): the queue handler fails inside the console.
    status, _, body = request(console, "GET", "/api/queue", headers={"Cookie": "mbo_console=secret-token"})
    err = json.loads(body)["error"]
    assert status == 500 and err["title"] == "Console error" and "AttributeError" in err["message"]
