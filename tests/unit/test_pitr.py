"""Point-in-time recovery, pure parts: the binlog parser, windows and gaps, restore plans, the
archiver's choice of files, the replay's expected last GTID, specs and the archiver Deployment."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from mysql_backup_operator import pitr
from mysql_backup_operator.agent.binlog import (
    Prepared,
    ServerState,
    binlog_argv,
    expected_last,
    next_files,
    server_change_gap,
)
from mysql_backup_operator.agent.errors import AgentError
from mysql_backup_operator.api.common import SpecError
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.api.restore import parse_restore
from mysql_backup_operator.contract import binlog as bl
from mysql_backup_operator.controllers.pitr import job_config, render_archiver

T0 = 1_800_000_000


# ----------------------------------------------------------------------------- a synthetic binlog


def _event(kind: int, ts: int, body: bytes, server_id: int = 1) -> bytes:
    size = bl.HEADER.size + len(body)
    return bl.HEADER.pack(ts, kind, server_id, size, 0, 0) + body


def _gtid(seq: int, ts: int, domain: int = 0, server_id: int = 1) -> bytes:
    return _event(bl.GTID_EVENT, ts, struct.pack("<QIB", seq, domain, 0) + b"\0" * 6, server_id)


def _table_map(db: str, ts: int) -> bytes:
    return _event(bl.TABLE_MAP_EVENT, ts, b"\1\0\0\0\0\0" + b"\0\0" + bytes([len(db)]) + db.encode() + b"\0t\0")


def _query(db: str, sql: str, ts: int) -> bytes:
    post = struct.pack("<IIBHH", 7, 0, len(db), 0, 0)
    return _event(bl.QUERY_EVENT, ts, post + db.encode() + b"\0" + sql.encode())


def binlog(*txs: tuple[int, int, str], created: int = T0, server_id: int = 1) -> bytes:
    """(seq, time, db) per transaction: a row transaction for "shop*", a DDL for others."""
    out = bl.MAGIC + _event(bl.FORMAT_DESCRIPTION_EVENT, created, b"\4\0" + b"x" * 50, server_id)
    for seq, ts, db in txs:
        out += _gtid(seq, ts, server_id=server_id)
        out += _table_map(db, ts) if db.startswith("shop") else _query(db, "DROP TABLE x", ts)
    return out + _event(bl.ROTATE_EVENT, created + 100, b"\4\0\0\0\0\0\0\0next")


def test_parser_reads_gtids_times_positions_and_databases() -> None:
    data = binlog((5, T0 + 1, "shop"), (6, T0 + 2, "other"), (7, T0 + 3, "shop"))
    p = bl.parse(data)
    assert p.server_id == 1 and p.created == T0
    assert (p.first_gtid, p.last_gtid) == ("0-1-5", "0-1-7")
    assert (p.first_time, p.last_time) == (T0, T0 + 100)
    assert [t.databases for t in p.transactions] == [{"shop"}, {"other"}, {"shop"}]
    assert data[p.transactions[1].position + 4] == bl.GTID_EVENT
    with pytest.raises(bl.BinlogError):
        bl.parse(data[:-3])
    with pytest.raises(bl.BinlogError):
        bl.parse(b"nope")


def test_segment_and_index_round_trip() -> None:
    seg = _seg(3)
    assert bl.Segment.from_dict(seg.to_dict()) == seg
    gap = bl.Gap(after=seg.ident, before="1/mysql-bin.000009", reason="BinlogsPurged", message="m", detected=5)
    idx = bl.Index(segments=(seg,), gaps=(gap,), updated=9)
    again = bl.Index.parse(idx.to_json())
    assert again.segments == (seg,) and again.gaps == (gap,)
    assert bl.segment_key("p/ns/pol", server_id=1, file="mysql-bin.000003", created=T0) == (
        f"p/ns/pol/binlog/1/mysql-bin.000003.{T0}"
    )


# ----------------------------------------------------------------------------- windows and plans


def _seg(n: int, *, server_id: int = 1, created: int | None = None, gtids: tuple[int, int] | None = None) -> bl.Segment:
    start = created if created is not None else T0 + n * 100
    first, last = gtids or (n * 10, n * 10 + 9)
    return bl.Segment(
        key=f"d/binlog/{server_id}/mysql-bin.{n:06d}.{start}",
        file=f"mysql-bin.{n:06d}",
        server_id=server_id,
        created=start,
        size=100,
        sha256="0" * 64,
        first_time=start,
        last_time=start + 99,
        first_gtid=f"0-{server_id}-{first}",
        last_gtid=f"0-{server_id}-{last}",
    )


def _full(name: str, n: int, at: int, gtid_seq: int | None = None) -> pitr.FullBackup:
    return pitr.FullBackup(
        name=name, completed=at, file=f"mysql-bin.{n:06d}", position=400, gtid=f"0-1-{gtid_seq or n * 10 + 2}"
    )


def test_windows_run_from_the_oldest_backup_to_the_end_of_the_unbroken_chain() -> None:
    idx = bl.Index(segments=tuple(_seg(n) for n in (1, 2, 3, 4)))
    b1, b2 = _full("b1", 1, T0 + 150), _full("b2", 3, T0 + 350)
    (w,) = pitr.windows(idx, [b2, b1])
    assert (w.start, w.end, w.backups) == (T0 + 150, T0 + 499, ("b1", "b2"))
    assert w.to_status()["from"] == pitr.iso(T0 + 150)


def test_a_gap_ends_a_window_and_a_backup_after_it_starts_a_new_one() -> None:
    segs = (_seg(1), _seg(2), _seg(5), _seg(6))
    gap = bl.Gap(after=segs[1].ident, before="1/mysql-bin.000005", reason="BinlogsPurged", message="purged")
    idx = bl.Index(segments=segs, gaps=(gap,))
    w1, w2 = pitr.windows(idx, [_full("b1", 1, T0 + 150), _full("b5", 5, T0 + 550)])
    assert (w1.end, w1.ends_at_gap) == (T0 + 299, gap)
    assert (w2.start, w2.end, w2.ends_at_gap) == (T0 + 550, T0 + 699, None)
    # A target in the gap (after b1's window, before b5) is refused with the gap's reason.
    with pytest.raises(pitr.NotRecoverable, match="BinlogsPurged"):
        pitr.plan(idx, [_full("b1", 1, T0 + 150), _full("b5", 5, T0 + 550)], time=T0 + 400)
    # Without a recorded gap a missing file number also breaks the chain.
    (only,) = pitr.windows(bl.Index(segments=segs), [_full("b1", 1, T0 + 150)])
    assert only.end == T0 + 299


def test_a_server_change_breaks_the_chain() -> None:
    segs = (_seg(1), _seg(2, server_id=2))
    (w,) = pitr.windows(bl.Index(segments=segs), [_full("b1", 1, T0 + 150)])
    assert w.end == T0 + 199


def test_plan_for_a_time_picks_the_newest_backup_before_it_and_the_segments_up_to_it() -> None:
    idx = bl.Index(segments=tuple(_seg(n) for n in (1, 2, 3, 4)))
    backups = [_full("b1", 1, T0 + 150), _full("b2", 2, T0 + 250)]
    p = pitr.plan(idx, backups, time=T0 + 320)
    assert p.backup == "b2" and [s.file for s in p.segments] == ["mysql-bin.000002", "mysql-bin.000003"]
    assert (p.start_position, p.stop_time, p.stop_gtid) == (400, T0 + 320, None)
    st = p.to_status()
    assert (st["firstSegment"], st["lastSegment"], st["segmentCount"]) == (_seg(2).key, _seg(3).key, 2)
    assert bl.select_range(
        idx, first=st["firstSegment"], last=st["lastSegment"], count=2, fingerprint=st["segmentsDigest"]
    ) == [_seg(2), _seg(3)]
    # The index changed under the plan (a segment replaced): the run no longer matches.
    other = bl.Index(segments=(_seg(1), _seg(2), dataclasses.replace(_seg(3), sha256="1" * 64), _seg(4)))
    assert (
        bl.select_range(other, first=_seg(2).key, last=_seg(3).key, count=2, fingerprint=st["segmentsDigest"]) is None
    )
    assert pitr.plan(idx, backups, time=T0 + 200, base="b1").backup == "b1"
    with pytest.raises(pitr.NotRecoverable, match="no full backup completed before"):
        pitr.plan(idx, backups, time=T0 + 100)
    with pytest.raises(pitr.NotRecoverable, match="ends at the end of what is archived"):
        pitr.plan(idx, backups, time=T0 + 600)
    with pytest.raises(pitr.NotRecoverable, match="not archived"):
        pitr.plan(bl.Index(segments=(_seg(3),)), backups, time=T0 + 320)


def test_plan_for_a_gtid_stops_in_the_segment_that_holds_it() -> None:
    idx = bl.Index(segments=tuple(_seg(n) for n in (1, 2, 3)))
    backups = [_full("b1", 1, T0 + 150, gtid_seq=12), _full("b2", 2, T0 + 250, gtid_seq=22)]
    p = pitr.plan(idx, backups, gtid="0-1-25")
    assert p.backup == "b1" or p.backup == "b2"
    assert p.backup == "b2" and p.segments[-1].file == "mysql-bin.000002" and p.stop_gtid == "0-1-25"
    assert pitr.plan(idx, backups, gtid="0-1-15").backup == "b1"
    with pytest.raises(pitr.NotRecoverable, match="not in the chain"):
        pitr.plan(idx, backups, gtid="0-1-99")
    with pytest.raises(pitr.NotRecoverable, match="before GTID"):
        pitr.plan(idx, backups, gtid="0-1-5")


def test_retention_keeps_every_segment_a_kept_backup_needs() -> None:
    idx = bl.Index(segments=tuple(_seg(n) for n in (1, 2, 3, 4)))
    kept = [_full("b3", 3, T0 + 350)]
    assert pitr.needed_segments(idx, kept) == {_seg(3).key, _seg(4).key}
    assert [s.file for s in pitr.expendable_segments(idx, kept)] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert pitr.expendable_segments(idx, []) == []


def test_epoch_needs_a_zone() -> None:
    assert pitr.epoch("2027-01-15T08:00:00.9Z") == pitr.epoch("2027-01-15T09:00:00+01:00")
    with pytest.raises(ValueError):
        pitr.epoch("2027-01-15T08:00:00")


# ----------------------------------------------------------------------------- the archiver's choice


def _server(*numbers: int, current: int, server_id: int = 1) -> ServerState:
    files = tuple((f"mysql-bin.{n:06d}", 100) for n in numbers)
    return ServerState(server_id=server_id, files=files, current=f"mysql-bin.{current:06d}", position=400)


def test_next_files_continue_the_chain_and_skip_the_open_file() -> None:
    assert next_files(bl.Index(), _server(1, 2, 3, current=3), T0) == (["mysql-bin.000001", "mysql-bin.000002"], None)
    idx = bl.Index(segments=(_seg(1), _seg(2)))
    assert next_files(idx, _server(1, 2, 3, 4, current=4), T0) == (["mysql-bin.000003"], None)
    assert next_files(idx, _server(1, 2, 3, current=3), T0) == ([], None)


def test_next_files_record_purged_reset_and_server_changes_as_gaps() -> None:
    idx = bl.Index(segments=(_seg(1), _seg(2)))
    files, gap = next_files(idx, _server(5, 6, current=6), T0)
    assert gap is not None and gap.reason == "BinlogsPurged" and gap.after == _seg(2).ident
    assert "mysql-bin.000003" in gap.message and files == ["mysql-bin.000005"]
    _, gap = next_files(idx, _server(1, current=1), T0)
    assert gap is not None and gap.reason == "BinlogReset"
    # A server id change is judged by the files' own ids, not the live one.
    assert next_files(idx, _server(3, 4, current=4, server_id=9), T0) == (["mysql-bin.000003"], None)
    gap = server_change_gap(idx, _seg(3, server_id=9), T0)
    assert gap is not None and gap.reason == "ServerChanged" and gap.after == _seg(2).ident
    assert server_change_gap(idx, _seg(3), T0) is None
    assert server_change_gap(bl.Index(segments=idx.segments, gaps=(gap,)), _seg(3, server_id=9), T0) is None
    # Once recorded, the gap is not recorded again; what the server has is archived.
    with_gap = bl.Index(segments=idx.segments, gaps=(bl.Gap(after=_seg(2).ident, before="x", reason="r", message=""),))
    assert next_files(with_gap, _server(5, 6, 7, current=7), T0) == (["mysql-bin.000005", "mysql-bin.000006"], None)


# ----------------------------------------------------------------------------- replay checks


def test_expected_last_gtid_follows_start_stop_and_the_database_filter() -> None:
    a = bl.parse(binlog((1, T0 + 1, "shop"), (2, T0 + 2, "other"), (3, T0 + 3, "shop")))
    b = bl.parse(binlog((4, T0 + 4, "shop"), (5, T0 + 5, "other"), (6, T0 + 9, "shop"), created=T0 + 4))
    start = a.transactions[1].position
    assert expected_last([a, b], start_position=start, stop_time=T0 + 9, stop_gtid=None, database="shop") == (
        "0-1-4",
        None,
        2,
    )
    assert expected_last([a, b], start_position=start, stop_time=T0 + 9, stop_gtid=None, database=None)[0] == "0-1-5"
    last, pos, n = expected_last([a, b], start_position=4, stop_time=None, stop_gtid="0-1-5", database="shop")
    assert (last, pos, n) == ("0-1-4", b.transactions[1].position, 3)
    assert expected_last([a], start_position=4, stop_time=T0, stop_gtid=None, database=None) == (None, None, 0)
    with pytest.raises(AgentError, match="not found"):
        expected_last([a], start_position=4, stop_time=None, stop_gtid="0-1-77", database=None)


def test_binlog_argv_carries_bounds_and_no_secret() -> None:
    prep = Prepared(
        paths=("/w/a", "/w/b"), start_position=400, stop_time=T0, stop_position=None, expected_last=None, transactions=0
    )
    argv = binlog_argv(prep, database="shop")
    assert argv[1:] == [
        "--start-position=400",
        "--stop-datetime=2027-01-15 08:00:00",
        "--database=shop",
        "/w/a",
        "/w/b",
    ]


# ----------------------------------------------------------------------------- specs and rendering


def _policy_spec(**extra: Any) -> dict[str, Any]:
    return {
        "database": {"host": "db", "user": "u", "passwordSecretRef": {"name": "pw"}, "databases": ["shop"]},
        "storage": {"s3": {"bucket": "b", "prefix": "p", "credentialsSecretRef": {"name": "s3"}}},
        **extra,
    }


def test_policy_and_restore_specs() -> None:
    p = parse_policy(name="pol", namespace="ns", spec=_policy_spec(pointInTimeRecovery={"enabled": True}))
    assert p.pitr is not None and p.pitr.segment_seconds == 60
    assert parse_policy(name="pol", namespace="ns", spec=_policy_spec()).pitr is None
    r = parse_restore({"policyRef": {"name": "pol"}, "pointInTime": {"time": "2027-01-15T08:00:00Z"}})
    assert r.point_in_time and r.backup == "" and r.policy == "pol"
    for bad in (
        {"policyRef": {"name": "pol"}, "pointInTime": {"time": "2027-01-15T08:00:00Z", "gtid": "0-1-2"}},
        {"pointInTime": {"time": "2027-01-15T08:00:00Z"}},
        {"policyRef": {"name": "pol"}, "pointInTime": {"time": "2027-01-15 08:00"}},
        {"policyRef": {"name": "pol"}, "pointInTime": {"gtid": "zero"}},
        {"policyRef": {"name": "pol"}, "pointInTime": {"gtid": "0-1-2"}, "target": "copy"},
        {"policyRef": {"name": "pol"}, "backupRef": {"name": "b"}},
    ):
        with pytest.raises(SpecError):
            parse_restore(bad)


def test_archiver_deployment_is_restricted_owned_and_secret_free() -> None:
    p = parse_policy(name="pol", namespace="ns", spec=_policy_spec(pointInTimeRecovery={"enabled": True}))
    d = render_archiver(p, policy_uid="uid-1")
    assert d["metadata"]["name"] == "binlog-archiver-pol"
    assert d["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    pod = d["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Always"
    c = pod["containers"][0]
    assert c["command"] == ["mysql-backup-agent", "archive"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in c["env"]}
    assert "secretKeyRef" in env["MBO_DB_PASSWORD"]["valueFrom"]
    assert '"directory":"p/ns/pol"' in env["MBO_AGENT_CONFIG"]["value"]
    # The same spec renders the same hash; a changed spec a different one.
    again = render_archiver(p, policy_uid="uid-1")
    assert again["metadata"]["annotations"] == d["metadata"]["annotations"]
    p2 = parse_policy(
        name="pol", namespace="ns", spec=_policy_spec(pointInTimeRecovery={"enabled": True, "segmentSeconds": 5})
    )
    assert render_archiver(p2, policy_uid="uid-1")["metadata"]["annotations"] != d["metadata"]["annotations"]


def test_job_config_from_a_recorded_plan() -> None:
    plan = pitr.Plan(backup="b", segments=(_seg(1), _seg(2)), start_position=400, stop_time=T0, stop_gtid=None)
    p = parse_policy(name="pol", namespace="ns", spec=_policy_spec(pointInTimeRecovery={"enabled": True}))
    cfg = job_config({"pointInTime": {**plan.to_status(), "database": "shop"}}, p)
    assert cfg == {
        "directory": "p/ns/pol",
        "firstSegment": _seg(1).key,
        "lastSegment": _seg(2).key,
        "segmentCount": 2,
        "segmentsDigest": bl.digest([_seg(1), _seg(2)]),
        "startPosition": 400,
        "stopTime": T0,
        "stopGtid": None,
        "database": "shop",
    }
    assert job_config({}, p) is None


class _FakeStore:
    dir = "d"

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.index: bl.Index | None = None

    def load(self) -> bl.Index:
        return bl.Index(segments=tuple(_seg(n) for n in (1, 2, 3)))

    def delete(self, key: str) -> None:
        self.deleted.append(key)

    def put_index(self, index: bl.Index) -> None:
        self.index = index


def test_archiver_prunes_below_the_floor_entry_first_and_keeps_the_newest() -> None:
    from mysql_backup_operator.agent.binlog import Archiver
    from mysql_backup_operator.contract.config import load

    store = _FakeStore()
    cfg = load({"MBO_AGENT_CONFIG": '{"archive": {"directory": "d"}}'})
    a = Archiver(cfg, store, connect=lambda: None, workdir="/nowhere", defaults="/nowhere")  # type: ignore[arg-type]
    assert a.prune(None) == 0 and store.deleted == []
    assert a.prune(_seg(3).created) == 2
    assert store.deleted == [
        bl.entry_key(_seg(1).key),
        _seg(1).key,
        bl.entry_key(_seg(2).key),
        _seg(2).key,
    ]
    assert store.index is not None and [s.file for s in store.index.segments] == ["mysql-bin.000003"]
    assert a.prune(T0 + 10_000) == 0  # the newest segment anchors the chain and is never pruned
    assert pitr.retention_floor(bl.Index(segments=(_seg(1), _seg(2))), [_full("b2", 2, T0 + 250)]) == _seg(2).created


def test_plugin_chain_shows_backups_segments_and_gaps_in_order() -> None:
    from mysql_backup_operator.plugin_chain import chain_rows

    policy = {
        "metadata": {"name": "pol"},
        "status": {
            "pointInTimeRecovery": {
                "windows": [
                    {
                        "from": "2027-01-15T08:01:00Z",
                        "to": "2027-01-15T08:05:00Z",
                        "segments": 3,
                        "firstFile": "mysql-bin.000002",
                        "lastFile": "mysql-bin.000004",
                        "endsAtGap": "BinlogsPurged",
                    }
                ],
                "gaps": [{"reason": "BinlogsPurged", "from": "2027-01-15T08:05:00Z", "message": "purged"}],
            }
        },
    }
    backup = {
        "metadata": {"name": "full"},
        "spec": {"policyRef": {"name": "pol"}},
        "status": {
            "phase": "Completed",
            "completedAt": "2027-01-15T08:01:00Z",
            "binlog": {"file": "mysql-bin.000002", "position": 400},
        },
    }
    other = {**backup, "spec": {"policyRef": {"name": "elsewhere"}}}
    rows = chain_rows(policy, [backup, other])
    assert [r[1] for r in rows[1:]] == ["full", "binlogs", "GAP"]
    assert rows[1][3] == "mysql-bin.000002:400" and "mysql-bin.000002 .. mysql-bin.000004" in rows[2][2]
    assert "ends at a BinlogsPurged gap" in rows[2][3]


def test_the_open_file_is_rotated_once_it_has_been_dirty_for_segment_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from mysql_backup_operator.agent import binlog as agent_binlog
    from mysql_backup_operator.contract.config import load

    clock = [100.0]
    monkeypatch.setattr(agent_binlog.time, "monotonic", lambda: clock[0])
    cfg = load({"MBO_AGENT_CONFIG": '{"archive": {"directory": "d", "segmentSeconds": 2}}'})
    a = agent_binlog.Archiver(cfg, _FakeStore(), connect=lambda: None, workdir="/x", defaults="/x")  # type: ignore[arg-type]
    # A file found at start-up may hold events already: due once, after segmentSeconds.
    assert not a._rotate_due(_server(1, current=1))
    clock[0] += 2.5
    assert a._rotate_due(_server(1, current=1))
    # Right after our own rotation: quiet until something is written, then due 2 s later.
    a._open, a._dirty_since = ("mysql-bin.000002", 400), None
    assert not a._rotate_due(_server(1, 2, current=2))
    clock[0] += 10
    assert not a._rotate_due(_server(1, 2, current=2))
    moved = agent_binlog.ServerState(server_id=1, files=(), current="mysql-bin.000002", position=900)
    assert not a._rotate_due(moved)
    clock[0] += 2
    assert a._rotate_due(moved)


# ----------------------------------------------------------------------------- the controller, on fakes


def _controller_world(pitr_spec: dict[str, Any] | None, index: bl.Index) -> tuple[Any, Any, Any]:
    import datetime as dt

    from mysql_backup_operator.controllers import pitr as ctl
    from mysql_backup_operator.controllers.operation import Context, Settings

    from tests.unit.fakes import FakeKube, build_cache

    class Kube(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.deployments: dict[tuple[str, str], dict[str, Any]] = {}

        def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
            self._call("get_deployment", namespace, name)
            return self.deployments.get((namespace, name))

        def apply_deployment(self, body: dict[str, Any], *, resource_version: str | None) -> None:
            self._call("apply_deployment", resource_version)
            meta = {**body["metadata"], "resourceVersion": "1"}
            self.deployments[(body["metadata"]["namespace"], body["metadata"]["name"])] = {**body, "metadata": meta}

        def delete_deployment(self, namespace: str, name: str) -> None:
            self._call("delete_deployment", namespace, name)
            self.deployments.pop((namespace, name), None)

    kube = Kube()
    spec = _policy_spec(**({"pointInTimeRecovery": pitr_spec} if pitr_spec else {}))
    kube.add("backuppolicies", "ns", {"kind": "BackupPolicy", "metadata": {"name": "pol"}, "spec": spec})
    kube.add(
        "backups",
        "ns",
        {
            "kind": "Backup",
            "metadata": {"name": "b1", "labels": {"mysqlbackup.dev/policy": "pol"}},
            "spec": {"policyRef": {"name": "pol"}},
            "status": {
                "phase": "Completed",
                "completedAt": pitr.iso(T0 + 150),
                "binlog": {"file": "mysql-bin.000001", "position": 400},
            },
        },
    )
    base = Context(kube, Settings(lock_namespace="sys", agent_image="img"), cache=build_cache(kube))  # type: ignore[arg-type]
    c = ctl.PitrController(base)
    c.read_index = lambda policy: index  # type: ignore[method-assign]
    c.write_retention = lambda policy, floor: kube._call("write_retention", floor)  # type: ignore[method-assign]
    return kube, c, dt.datetime.fromtimestamp(T0 + 1000, dt.UTC)


def test_policy_pass_creates_the_archiver_once_and_reports_windows_and_gaps() -> None:
    segs = (_seg(1), _seg(2), _seg(4))
    gap = bl.Gap(after=_seg(2).ident, before="1/mysql-bin.000004", reason="BinlogsPurged", message="gone", detected=9)
    kube, c, now = _controller_world({"enabled": True}, bl.Index(segments=segs, gaps=(gap,)))
    from mysql_backup_operator.api.policy import parse_policy as pp

    pol = kube.get("backuppolicies", "ns", "pol")
    policy = pp(name="pol", namespace="ns", spec=pol["spec"])
    patch, conds, wake = c.policy_pass(pol, policy, [], now)
    assert wake == 30.0 and ("ns", "binlog-archiver-pol") in kube.deployments
    block = patch["pointInTimeRecovery"]
    assert block["windows"][0]["endsAtGap"] == "BinlogsPurged" and block["windows"][0]["to"] == pitr.iso(T0 + 299)
    assert block["retainFrom"] == pitr.iso(_seg(1).created) and block["segments"] == 3
    assert next(x for x in conds if x["type"] == "BinlogGap")["status"] == "True"
    assert ("pol", "BinlogGap", "BinlogsPurged: gone") in kube.events
    # A second pass with nothing new: no Deployment request, no second Warning event.
    kube.calls.clear()
    pol["status"] = {"pointInTimeRecovery": block}
    c.policy_pass(pol, policy, conds, now)
    assert not [k for k, _ in kube.calls if "deployment" in k]
    assert sum(1 for e in kube.events if e[1] == "BinlogGap") == 1
    # Turned off: the archiver goes, the status block and the condition too.
    off = pp(name="pol", namespace="ns", spec=_policy_spec())
    patch, conds, wake = c.policy_pass(pol, off, conds, now)
    assert patch == {"pointInTimeRecovery": None} and wake is None and not kube.deployments
    assert not [x for x in conds if x["type"] == "BinlogGap"]


def test_a_restore_outside_every_window_fails_before_lock_safety_backup_or_job() -> None:
    from mysql_backup_operator.controllers import pitr as ctl
    from mysql_backup_operator.controllers.restore import RestoreController

    kube, c, _ = _controller_world({"enabled": True}, bl.Index(segments=(_seg(1), _seg(2))))
    kube.add(
        "restores",
        "ns",
        {
            "kind": "Restore",
            "metadata": {"name": "r"},
            "spec": {"policyRef": {"name": "pol"}, "pointInTime": {"time": pitr.iso(T0 + 5000)}},
        },
    )
    original = ctl.PitrController.read_index
    ctl.PitrController.read_index = lambda self, policy: bl.Index(segments=(_seg(1), _seg(2)))  # type: ignore[method-assign]
    try:
        RestoreController(c.base).reconcile(kube.get("restores", "ns", "r"))
    finally:
        ctl.PitrController.read_index = original  # type: ignore[method-assign]
    st = kube.objects[("restores", "ns", "r")]["status"]
    assert st["phase"] == "Failed" and st["reason"] == "TargetNotRecoverable", st
    assert "ends at the end of what is archived" in st["message"]
    assert not kube.jobs and not [k for k in kube.objects if k[0] == "backups" and k[2] != "b1"]
    assert not kube.coordination.leases


def _segment_store(bucket: Any = None) -> Any:
    from mysql_backup_operator.agent.binlog import SegmentStore
    from mysql_backup_operator.contract.store_s3 import S3Store

    from tests.unit.fakebucket import FakeS3Bucket

    fake = bucket or FakeS3Bucket("b")
    return fake, SegmentStore(S3Store.from_client(fake, "b"), "d")


def test_segment_store_loads_entries_and_gaps_only() -> None:
    import json as js

    seg = _seg(1)
    gap = bl.Gap(after=None, before="1/x", reason="BinlogsPurged", message="m")
    fake, store = _segment_store()
    for key, data in {
        "d/binlog/1/mysql-bin.000001.1": b"\xfebin",
        "d/binlog/1/mysql-bin.000001.1.json": js.dumps(seg.to_dict()).encode(),
        "d/binlog/gaps/start--1/x.json": js.dumps(gap.to_dict()).encode(),
        "d/binlog/index.json": b"{}",
        "d/binlog/retention.json": b'{"before": 5}',
    }.items():
        fake.add(key, data)
    idx = store.load()
    assert idx.segments == (seg,) and idx.gaps == (gap,)
    assert store.retention_floor() == 5


def test_segment_store_round_trip_through_the_storage_interface(tmp_path: Any) -> None:
    """Segments stream through ObjectStore.writer/iter (several parts, SSE-C under the customer
    key like dumps); entries and the index are small documents any reader can GET."""
    from mysql_backup_operator.contract.s3 import SseParams

    fake, store = _segment_store()
    c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": bytes(32)}
    store.store.sse = SseParams(create=c, part=c, read=c)
    assert store.retention_floor() is None  # nothing written yet: no floor, not an error
    data = bytes(range(256)) * 5000  # 1.25 MB: more than one read chunk
    src = tmp_path / "mysql-bin.000001"
    src.write_bytes(data)
    seg = dataclasses.replace(_seg(1), key="d/binlog/1/mysql-bin.000001.1", size=len(data))
    store.put_segment(str(src), seg)
    store.put_index(bl.Index(segments=(seg,)))
    assert fake.objects[seg.key] == data and fake.customer_keys[seg.key] == bytes(32)
    assert bl.entry_key(seg.key) not in fake.customer_keys  # documents stay readable without the key
    assert store.read_index().segments == (seg,) and store.load().segments == (seg,)
    out = tmp_path / "copy"
    store.download(seg.key, str(out))
    assert out.read_bytes() == data
    store.delete(bl.entry_key(seg.key))
    store.delete(bl.entry_key(seg.key))  # a retried prune: missing is success
    assert store.load().segments == ()


def test_a_failed_segment_upload_leaves_neither_segment_nor_entry(tmp_path: Any) -> None:
    from tests.unit.fakebucket import FakeS3Bucket

    class Failing(FakeS3Bucket):
        def upload_part(self, **kw: Any) -> dict[str, str]:
            raise OSError("connection reset")

    fake, store = _segment_store(Failing("b"))
    src = tmp_path / "mysql-bin.000001"
    src.write_bytes(b"\xfebin" * 100)
    seg = dataclasses.replace(_seg(1), key="d/binlog/1/mysql-bin.000001.1")
    with pytest.raises(OSError):
        store.put_segment(str(src), seg)
    assert fake.objects == {} and not fake._uploads


def test_the_archiver_runs_the_operators_agent_image() -> None:
    """Through the policy controller, as the operator runs it: the archiver gets the same agent
    image as the backup Jobs (MBO_AGENT_IMAGE), not the built-in default (seen on the real node:
    ImagePullBackOff on a registry this cluster cannot reach)."""
    from mysql_backup_operator.controllers.policy import PolicyController

    kube, c, _ = _controller_world({"enabled": True}, bl.Index(segments=(_seg(1),)))
    policies = PolicyController(c.base)
    policies.pitr = c  # the world's archive index, read without a bucket
    policies.reconcile(kube.get("backuppolicies", "ns", "pol"))
    (deployment,) = kube.deployments.values()
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "img"
