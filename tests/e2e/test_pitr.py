"""Point-in-time recovery end to end: the archiver Deployment on the real control plane, MariaDB's
binlogs archived to MinIO (and, for the round trip, to Azurite and fake-gcs-server through the same
storage interface), a Restore to a moment checked row by row, gaps, and a killed archiver."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import backends
from tests.e2e.conftest import Env, InstalledOperator, db_connect
from tests.e2e.test_product import metric, plugin, scrape
from tests.stackenv import eventually

pytestmark = pytest.mark.stack

# Every test runs on each backend: the archiver and the replay use one storage interface.
# Every backend runs the round trip and the killed archiver (the segment store's streaming write,
# abort and re-upload); the window, gap and target logic above the store is the same code on all
# three, so those tests run on S3 only, which keeps the suite's time in bounds.
BACKENDS = ["s3", backends.AZURE, backends.GCS]
PITR = {"enabled": True, "segmentSeconds": 2, "pollSeconds": 1, "checkIntervalSeconds": 5}
ARCHIVER_LABEL = "app.kubernetes.io/component=binlog-archiver"


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Writer:
    """Inserts one row at a time (autocommit) and remembers every committed row."""

    def __init__(self, env: Env, table: str) -> None:
        self.env, self.table = env, table
        self.rows: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = db_connect(self.env.stack, self.env.database)
        conn.autocommit(True)
        try:
            with conn.cursor() as cur:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    payload = f"row-{n}-{hashlib.sha256(str(n).encode()).hexdigest()[:12]}"
                    cur.execute(f"INSERT INTO `{self.table}` (payload) VALUES (%s)", (payload,))
                    self.rows.append((int(cur.lastrowid), payload))
                    time.sleep(0.03)
        except BaseException as e:
            self.error = e
        finally:
            conn.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.error is None, self.error


def _pitr_status(env: Env, policy: str = "pol") -> dict[str, Any]:
    return dict((env.get("backuppolicies", policy).get("status") or {}).get("pointInTimeRecovery") or {})


def _archived_until(env: Env, t: dt.datetime, policy: str = "pol", timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = _pitr_status(env, policy)
        last = st.get("lastArchivedTime")
        return st if last and last >= _iso(t) else None

    return eventually(check, timeout=timeout, interval=1, what=f"binlogs archived past {_iso(t)}")


def _forget_earlier_binlogs(env: Env) -> None:
    """Purges the binlogs that earlier tests left on the shared server, before this policy's
    archiver starts. An archiver first copies every binlog still on the server (docs/pitr.md);
    after the per-table and memory tests that is a few hundred MB of row events, which on
    fake-gcs-server (about 4 MiB/s, see docs/performance.md) alone outlasts the wait for a first
    segment. What each test checks begins with its own full backup, after this."""
    root = db_connect(env.stack)
    try:
        with root.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            _purge_before_current(cur, timeout=60)
    finally:
        root.close()


def _purge_before_current(cur: Any, *, timeout: float) -> None:
    """PURGE BINARY LOGS up to the current file, until it took: a file another binlog reader (an
    archiver) has open is skipped with a warning, so it is tried again."""
    cur.execute("SHOW MASTER STATUS")
    current = cur.fetchone()[0]

    def purged() -> bool:
        cur.execute(f"PURGE BINARY LOGS TO '{current}'")
        cur.execute("SHOW BINARY LOGS")
        return bool(cur.fetchone()[0] == current)

    eventually(purged, timeout=timeout, interval=1, what="binlogs purged")


def _setup(env: Env) -> None:
    _forget_earlier_binlogs(env)
    env.sql("CREATE TABLE ticks (id INT PRIMARY KEY AUTO_INCREMENT, payload VARCHAR(64) NOT NULL)")
    env.sql("CREATE TABLE later (id INT PRIMARY KEY AUTO_INCREMENT, payload VARCHAR(64) NOT NULL)")
    env.sql("CREATE TABLE marks (id INT PRIMARY KEY AUTO_INCREMENT, payload VARCHAR(64) NOT NULL)")
    env.policy(pointInTimeRecovery=PITR)

    # The archiver runs and has archived at least one segment (a write makes the open file due for rotation).
    def archived() -> Any:
        env.sql("INSERT INTO marks (payload) VALUES ('setup')")
        return _pitr_status(env).get("segments")

    eventually(archived, timeout=120, interval=1, what="first archived segment")


def _index(env: Env, policy: str = "pol") -> dict[str, Any]:
    """The archive's index.json, read with the backend's own SDK (not the operator's store)."""
    return dict(json.loads(env.read_object(f"backups/{env.namespace}/{policy}/binlog/index.json")))


# Credential env vars of every backend: each must come from a Secret (secretKeyRef), never a value.
SECRET_ENV = ("PASSWORD", "SECRET", "KEY", "TOKEN", "CONNECTION_STRING", "SERVICE_ACCOUNT")


def _archiver_pods(env: Env) -> list[client.V1Pod]:
    return list(env.core.list_namespaced_pod(env.namespace, label_selector=ARCHIVER_LABEL).items)


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
def test_restore_to_a_moment_brings_back_exactly_the_rows_before_it(env: Env, operator: InstalledOperator) -> None:
    _setup(env)
    dep = client.AppsV1Api(env.api).read_namespaced_deployment("binlog-archiver-pol", env.namespace)
    pod = dep.spec.template.spec
    assert pod.automount_service_account_token is False
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    credentials = [e for e in pod.containers[0].env if any(w in e.name for w in SECRET_ENV)]
    assert len(credentials) >= 2 and all(e.value_from and e.value is None for e in credentials), credentials
    assert dep.metadata.owner_references[0].kind == "BackupPolicy"
    # The segments are in the policy's own bucket or container, on its backend.
    assert any("/binlog/" in k for k in env.objects(f"backups/{env.namespace}/pol/binlog/"))

    with Writer(env, "ticks") as w:
        time.sleep(2)
        env.backup("full")
        assert env.wait_phase("backups", "full", ("Completed", "Failed"))["status"]["phase"] == "Completed"
        time.sleep(4)
    written = list(w.rows)
    assert len(written) > 50
    time.sleep(2.2)  # the last row is now more than two seconds old
    t_drop = _utcnow()
    env.sql("DROP TABLE ticks")
    with Writer(env, "later") as after:
        time.sleep(2)
    assert after.rows
    _archived_until(env, _utcnow())

    target = t_drop - dt.timedelta(seconds=1)
    env.create(
        "restores",
        {
            "kind": "Restore",
            "metadata": {"name": "to-moment"},
            "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"time": _iso(target)}},
        },
    )
    r = env.wait_phase("restores", "to-moment", ("Completed", "Failed"), timeout=300)
    assert r["status"]["phase"] == "Completed", r["status"].get("message")
    assert r["status"]["pointInTime"]["backup"] == "full"
    assert r["status"]["preRestoreBackup"]

    # Every row written before the drop is back, each with its own payload; none written after.
    restored = env.sql("SELECT id, payload FROM ticks ORDER BY id")
    assert [(int(i), p) for i, p in restored] == written
    assert env.sql("SELECT COUNT(*) FROM later")[0][0] == 0

    # The chain, as users see it: the full backup and the segments after it, one window.
    out = plugin(env.stack, "chain", "pol", "-n", env.namespace)
    assert out.returncode == 0, out.stderr
    kinds = [line.split()[1] for line in out.stdout.splitlines()[1:] if line.strip() and "last archived" not in line]
    assert "full" in kinds and "binlogs" in kinds, out.stdout
    # The last archived time is exported.
    ts = metric(scrape(operator), "mysqlbackup_binlog_last_archived_timestamp_seconds", namespace=env.namespace)
    assert ts is not None and ts >= target.timestamp()
    # Retention: segments older than the oldest kept full backup's are removed; the window stays.
    full_file = env.get("backups", "full")["status"]["binlog"]["file"]

    def pruned() -> dict[str, Any] | None:
        st = _pitr_status(env)
        return st if st.get("retainFrom") and st["windows"] and st["windows"][0]["firstFile"] == full_file else None

    pruned_status = eventually(pruned, timeout=60, interval=1, what="segments before the full backup pruned")
    floor = min(s["created"] for s in _index(env)["segments"] if s["file"] == full_file)
    eventually(
        lambda: all(s["created"] >= floor for s in _index(env)["segments"]),
        timeout=60,
        what="index without pruned segments",
    )
    assert pruned_status["windows"][0]["fullBackups"][0] == "full"
    # Pruned means gone from storage too: every segment left has its entry, and is in the index.
    prefix = f"backups/{env.namespace}/pol/binlog/"
    eventually(
        lambda: (
            {k for k in env.objects(prefix) if k[len(prefix) :].split("/")[0].isdigit()}
            == {s["key"] for s in _index(env)["segments"]} | {s["key"] + ".json" for s in _index(env)["segments"]}
        ),
        timeout=60,
        what="storage holds exactly the indexed segments and their entries",
    )


def test_targets_outside_every_window_are_refused_before_anything_runs(env: Env) -> None:
    _setup(env)
    before_any_backup = _utcnow() - dt.timedelta(hours=1)
    env.backup("full")
    assert env.wait_phase("backups", "full", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    for name, when in (("too-early", before_any_backup), ("not-yet", _utcnow() + dt.timedelta(hours=1))):
        env.create(
            "restores",
            {
                "kind": "Restore",
                "metadata": {"name": name},
                "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"time": _iso(when)}},
            },
        )
        r = env.wait_phase("restores", name, ("Completed", "Failed"), timeout=60)
        assert r["status"]["phase"] == "Failed" and r["status"]["reason"] == "TargetNotRecoverable", r["status"]
        assert not r["status"].get("preRestoreBackup")
    assert [b["metadata"]["name"] for b in env.list("backups")] == ["full"]
    assert not [j for j in env.jobs() if j.metadata.name.startswith("restore-")]
    # CEL: at most one of time and gtid.
    with pytest.raises(client.ApiException) as e:
        env.create(
            "restores",
            {
                "kind": "Restore",
                "metadata": {"name": "both"},
                "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"time": _iso(_utcnow()), "gtid": "0-1-5"}},
            },
        )
    assert "exactly one of time and gtid" in str(e.value.body)


def test_purged_binlogs_become_a_gap_and_a_restore_into_it_is_refused(env: Env) -> None:
    _setup(env)
    env.backup("full")
    assert env.wait_phase("backups", "full", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    env.sql("INSERT INTO ticks (payload) VALUES ('archived')")
    _archived_until(env, _utcnow())
    apps = client.AppsV1Api(env.api)
    apps.patch_namespaced_deployment_scale("binlog-archiver-pol", env.namespace, {"spec": {"replicas": 0}})
    eventually(lambda: not _archiver_pods(env), timeout=60, what="archiver stopped")
    in_gap = _utcnow() + dt.timedelta(seconds=1)
    time.sleep(2)
    root = db_connect(env.stack)
    try:
        with root.cursor() as cur:
            cur.execute(f"INSERT INTO `{env.database}`.ticks (payload) VALUES ('lost')")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute(f"INSERT INTO `{env.database}`.ticks (payload) VALUES ('lost too')")
            cur.execute("FLUSH BINARY LOGS")
            _purge_before_current(cur, timeout=30)
    finally:
        root.close()
    apps.patch_namespaced_deployment_scale("binlog-archiver-pol", env.namespace, {"spec": {"replicas": 1}})

    def gap_shown() -> dict[str, Any] | None:
        pol = env.get("backuppolicies", "pol")
        c = next((c for c in pol["status"].get("conditions") or [] if c["type"] == "BinlogGap"), None)
        return pol if c and c["status"] == "True" and c["reason"] == "BinlogsPurged" else None

    pol = eventually(gap_shown, timeout=120, interval=1, what="BinlogGap condition")
    st = pol["status"]["pointInTimeRecovery"]
    # The archive may also show older gaps of the shared server's history (an earlier server id change).
    assert "BinlogsPurged" in [g["reason"] for g in st["gaps"]]
    assert any(w.get("endsAtGap") == "BinlogsPurged" for w in st["windows"]), st
    eventually(
        lambda: any(e.type == "Warning" and e.reason == "BinlogGap" for e in env.events("pol")),
        timeout=30,
        what="BinlogGap warning event",
    )
    env.create(
        "restores",
        {
            "kind": "Restore",
            "metadata": {"name": "into-gap"},
            "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"time": _iso(in_gap)}},
        },
    )
    r = env.wait_phase("restores", "into-gap", ("Completed", "Failed"), timeout=60)
    assert r["status"]["phase"] == "Failed" and r["status"]["reason"] == "TargetNotRecoverable", r["status"]
    assert "BinlogsPurged" in r["status"]["message"]
    assert not r["status"].get("preRestoreBackup")


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
def test_killing_the_archiver_mid_segment_loses_and_duplicates_nothing(env: Env) -> None:
    _setup(env)
    with Writer(env, "ticks"):
        for _ in range(4):
            time.sleep(2.5)
            for p in _archiver_pods(env):
                env.core.delete_namespaced_pod(p.metadata.name, env.namespace, grace_period_seconds=0)
        time.sleep(2)
    # Rotate once more so everything written is in a closed file, then wait for the archive.
    conn = db_connect(env.stack)
    try:
        with conn.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW BINARY LOGS")
            closed = [r[0] for r in cur.fetchall()][:-1]
            cur.execute("SELECT @@server_id")
            server_id = int(cur.fetchone()[0])
    finally:
        conn.close()
    index_key = f"backups/{env.namespace}/pol/binlog/index.json"

    def archived_all() -> dict[str, Any] | None:
        try:
            doc = _index(env)
        except Exception:
            return None
        files = {s["file"] for s in doc["segments"]}
        return doc if closed[-1] in files else None

    doc = eventually(archived_all, timeout=120, interval=1, what="every closed binlog archived")
    segs = [s for s in doc["segments"] if s["serverId"] == server_id]
    files = sorted(s["file"] for s in segs)
    assert len(files) == len(set(files)), "a segment was archived twice"
    numbers = [int(f.rsplit(".", 1)[1]) for f in files]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), f"a segment is missing: {files}"
    assert set(closed) - set(files) == {f for f in closed if int(f.rsplit(".", 1)[1]) < numbers[0]}
    assert not doc["gaps"]
    # Every segment's bytes match its entry; nothing else lies in the archive.
    listed = set(env.objects(f"backups/{env.namespace}/pol/binlog/"))
    expected = {index_key} | {s["key"] for s in segs} | {s["key"] + ".json" for s in segs}
    assert listed == expected
    for s in segs:
        body = env.read_object(s["key"])
        assert hashlib.sha256(body).hexdigest() == s["sha256"] and len(body) == s["size"]
    # The archiver pod came back each time.
    eventually(lambda: _archiver_pods(env), timeout=60, what="archiver pod running again")


def test_a_server_id_change_is_a_gap_that_ends_the_window(env: Env) -> None:
    _setup(env)
    env.backup("full")
    assert env.wait_phase("backups", "full", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    env.sql("INSERT INTO ticks (payload) VALUES ('before')")
    gaps_before = {(g["after"], g["before"]) for g in _archived_until(env, _utcnow()).get("gaps") or []}
    root = db_connect(env.stack)
    try:
        with root.cursor() as cur:
            cur.execute("SET GLOBAL server_id = 2")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute(f"INSERT INTO `{env.database}`.ticks (payload) VALUES ('after')")

            def gap_shown() -> dict[str, Any] | None:
                cur.execute(f"INSERT INTO `{env.database}`.marks (payload) VALUES ('tick')")
                pol = env.get("backuppolicies", "pol")
                c = next((c for c in pol["status"].get("conditions") or [] if c["type"] == "BinlogGap"), None)
                # A gap of this change, not one of the shared server's history (an earlier run of
                # this test on the same MariaDB left ServerChanged gaps in the binlogs it still has).
                gaps = (pol["status"].get("pointInTimeRecovery") or {}).get("gaps") or []
                new = [g for g in gaps if (g["after"], g["before"]) not in gaps_before]
                return pol if new and c and c["status"] == "True" and c["reason"] == "ServerChanged" else None

            pol = eventually(gap_shown, timeout=120, interval=1, what="ServerChanged gap")
    finally:
        with root.cursor() as cur:
            cur.execute("SET GLOBAL server_id = 1")
            cur.execute("FLUSH BINARY LOGS")
        root.close()
    st = pol["status"]["pointInTimeRecovery"]
    # Exactly one new gap for this change (the file open during it still belongs to the old id);
    # the shared server's older history may hold others, recorded before the change.
    new = [g for g in st["gaps"] if (g["after"], g["before"]) not in gaps_before]
    assert [g["reason"] for g in new] == ["ServerChanged"] and "from 1 to 2" in new[0]["message"], new
    (window,) = [w for w in st["windows"] if "full" in w["fullBackups"]]
    assert window["endsAtGap"] == "ServerChanged"
    eventually(
        lambda: any(e.type == "Warning" and e.reason == "BinlogGap" for e in env.events("pol")),
        timeout=30,
        what="BinlogGap warning event",
    )


def test_restore_to_a_gtid_stops_just_before_that_transaction(env: Env) -> None:
    _setup(env)
    env.backup("full")
    assert env.wait_phase("backups", "full", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    with Writer(env, "ticks") as w:
        time.sleep(3)
    written = list(w.rows)
    conn = db_connect(env.stack, env.database)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE ticks")
            cur.execute("SELECT @@last_gtid")
            drop_gtid = str(cur.fetchone()[0])
    finally:
        conn.close()
    env.sql("INSERT INTO later (payload) VALUES ('after the drop')")
    _archived_until(env, _utcnow())
    env.create(
        "restores",
        {
            "kind": "Restore",
            "metadata": {"name": "to-gtid"},
            "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"gtid": drop_gtid}},
        },
    )
    r = env.wait_phase("restores", "to-gtid", ("Completed", "Failed"), timeout=300)
    assert r["status"]["phase"] == "Completed", r["status"].get("message")
    assert r["status"]["pointInTime"]["stopGtid"] == drop_gtid
    restored = env.sql("SELECT id, payload FROM ticks ORDER BY id")
    assert [(int(i), p) for i, p in restored] == written
    assert env.sql("SELECT COUNT(*) FROM later")[0][0] == 0
