"""Per-table backups (policy backup.layout: perTable) on the real stack: split, parallel and
table-level restore, old-format backups, and the safety rules applied to every object."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Env, db_connect, s3_client

AWKWARD = [
    # An FK cycle: a -> b -> a.
    "CREATE TABLE cyc_a (id INT PRIMARY KEY, b_id INT, KEY (b_id)) ENGINE=InnoDB",
    "CREATE TABLE cyc_b (id INT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES cyc_a(id)) ENGINE=InnoDB",
    "ALTER TABLE cyc_a ADD FOREIGN KEY (b_id) REFERENCES cyc_b(id)",
    # Generated columns, stored and virtual.
    "CREATE TABLE gen (id INT PRIMARY KEY, x INT, dbl INT AS (x * 2) STORED, "
    "txt VARCHAR(20) AS (CONCAT('x=', x)) VIRTUAL)",
    # A partitioned table.
    "CREATE TABLE parts (id INT NOT NULL, v VARCHAR(10), PRIMARY KEY (id)) PARTITION BY RANGE (id) "
    "(PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN (1000), "
    "PARTITION pmax VALUES LESS THAN MAXVALUE)",
]


def _other(env: Env) -> str:
    return env.database + "_x"


@pytest.fixture(autouse=True)
def _drop_other_database(env: Env) -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        env.sql(f"DROP DATABASE IF EXISTS `{_other(env)}`")


def _awkward(env: Env) -> None:
    other = _other(env)
    conn = db_connect(env.stack)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{other}`")
            cur.execute(f"CREATE DATABASE `{other}`")
            cur.execute(f"USE `{env.database}`")  # the seq_ tables resolve in the current database
            cur.execute(f"CREATE TABLE `{other}`.prices (id INT PRIMARY KEY, price DECIMAL(8,2))")
            cur.execute(f"INSERT INTO `{other}`.prices SELECT seq, seq * 1.5 FROM seq_1_to_300")
            cur.execute("SET foreign_key_checks=0")
            for stmt in AWKWARD:
                cur.execute(stmt)
            cur.execute("INSERT INTO cyc_a SELECT seq, seq FROM seq_1_to_200")
            cur.execute("INSERT INTO cyc_b SELECT seq, seq FROM seq_1_to_200")
            cur.execute("INSERT INTO gen (id, x) SELECT seq, seq * 3 FROM seq_1_to_500")
            cur.execute("INSERT INTO parts SELECT seq, CONCAT('v', seq) FROM seq_1_to_2500")
            # A view over a table of another database, and a trigger writing to another table.
            cur.execute(
                "CREATE VIEW priced AS SELECT o.id, o.amount, p.price "
                f"FROM orders o JOIN `{other}`.prices p ON p.id = o.id"
            )
            cur.execute(
                "CREATE TRIGGER gen_audit AFTER UPDATE ON gen FOR EACH ROW INSERT INTO audit (msg) VALUES ('gen')"
            )
            # The other database has a view back over ours: cross references in both directions.
            cur.execute(f"CREATE VIEW `{other}`.customer_count AS SELECT COUNT(*) AS n FROM `{env.database}`.customers")
    finally:
        conn.close()


def _definitions(env: Env, db: str) -> dict[str, Any]:
    """Every schema object's definition, for before/after comparison."""
    q = {
        "views": "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
        f"WHERE TABLE_SCHEMA='{db}' ORDER BY 1",
        "triggers": "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS "
        f"WHERE TRIGGER_SCHEMA='{db}' ORDER BY 1",
        "routines": "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
        f"WHERE ROUTINE_SCHEMA='{db}' ORDER BY 1",
        "events": "SELECT EVENT_NAME, EVENT_DEFINITION FROM information_schema.EVENTS "
        f"WHERE EVENT_SCHEMA='{db}' ORDER BY 1",
        "fks": "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME FROM "
        f"information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA='{db}' ORDER BY 1",
        "partitions": "SELECT TABLE_NAME, PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS "
        f"WHERE TABLE_SCHEMA='{db}' AND PARTITION_NAME IS NOT NULL ORDER BY 1, 2",
        "columns": "SELECT TABLE_NAME, COLUMN_NAME, GENERATION_EXPRESSION FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA='{db}' AND GENERATION_EXPRESSION IS NOT NULL ORDER BY 1, 2",
    }
    return {k: env.sql(v) for k, v in q.items()}


GEN_DIGEST = "SELECT MD5(GROUP_CONCAT(id, ':', x, ':', dbl, ':', txt ORDER BY id)) FROM gen"


def _checksums(env: Env, db: str) -> dict[str, Any]:
    """CHECKSUM TABLE per base table, except `gen`: MariaDB's checksum of a table with a VIRTUAL
    column changes across a plain mariadb-dump and reload (measured), so its rows are compared
    through a digest of every column instead."""
    sums: dict[str, Any] = env.checksums(db)
    if "gen" in sums:
        sums["gen"] = env.sql(GEN_DIGEST, db)[0][0]
    return sums


def _state(env: Env) -> dict[str, Any]:
    dbs = (env.database, _other(env))
    return {db: {"checksums": _checksums(env, db), "defs": _definitions(env, db)} for db in dbs}


def _manifest(env: Env, backup: str) -> dict[str, Any]:
    st = env.get("backups", backup)["status"]
    key = st["manifestLocation"].split("/", 3)[3]  # s3://, azblob:// or gs://<bucket>/<key>
    return dict(json.loads(env.read_object(key)))


def _per_table_policy(env: Env) -> None:
    env.policy(database={"databases": [env.database, _other(env)]}, backup={"layout": "perTable"})


def test_per_table_backup_and_parallel_restore_of_awkward_data(env: Env) -> None:
    _awkward(env)
    _per_table_policy(env)
    before = _state(env)
    env.backup("split")
    st = env.wait_phase("backups", "split", ("Completed", "Failed"))["status"]
    assert st["phase"] == "Completed", st

    manifest = _manifest(env, "split")
    assert manifest["manifestVersion"] == 2
    kinds = [o["kind"] for o in manifest["objects"]]
    tables = {(o["database"], o["table"]) for o in manifest["objects"] if o["kind"] == "table"}
    assert kinds[0] == "prologue" and kinds[-1] == "epilogue" and set(kinds[1:-1]) == {"table"}
    assert (env.database, "cyc_a") in tables and (env.database, "parts") in tables
    assert (_other(env), "prices") in tables and len(tables) == len(before[env.database]["checksums"]) + 1
    stored = env.objects()
    for o in manifest["objects"]:
        assert stored.get(o["key"]) == o["storedBytes"], o
    assert st["sha256"] == manifest["sha256"] and st["storedBytes"] == sum(
        o["storedBytes"] for o in manifest["objects"]
    )

    # Damage both databases every way a restore has to undo.
    env.sql("DROP TABLE parts")
    env.sql("DELETE FROM gen WHERE id > 10")
    env.sql("DROP VIEW priced")
    env.sql("DROP TRIGGER gen_audit")
    env.sql("DROP PROCEDURE add_order")
    env.sql("UPDATE prices SET price = 0", _other(env))
    env.sql("CREATE TABLE extra (id INT)")

    env.restore("back", "split", parallelism=3)
    rst = env.wait_phase("restores", "back", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Completed", rst
    after = _state(env)
    for db, parts in before.items():
        assert after[db]["checksums"] == parts["checksums"], db
        for k, v in parts["defs"].items():
            assert after[db]["defs"][k] == v, (db, k)
    assert env.sql("SELECT COUNT(*) FROM priced")[0][0] > 0, "the cross-database view works"
    # The pre-restore safety backup came first, as for any restore.
    pre = env.get("backups", rst["preRestoreBackup"])["status"]
    assert pre["phase"] == "Completed" and pre["completedAt"] <= rst["completedAt"]


def test_table_level_restore_leaves_everything_else_alone(env: Env) -> None:
    _awkward(env)
    _per_table_policy(env)
    env.backup("split")
    assert env.wait_phase("backups", "split", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    good_gen = _checksums(env, env.database)["gen"]
    env.sql("DELETE FROM gen")
    env.sql("DELETE FROM parts WHERE id > 5")
    env.sql("CREATE TABLE newer (id INT)")
    changed_parts = env.checksums()["parts"]

    env.restore("only-gen", "split", tables=[f"{env.database}.gen"])
    rst = env.wait_phase("restores", "only-gen", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Completed", rst
    sums = _checksums(env, env.database)
    assert sums["gen"] == good_gen, "the chosen table is back"
    assert sums["parts"] == changed_parts, "other tables were not touched"
    assert "newer" in sums, "the database was not dropped and re-created"
    assert env.sql("SELECT COUNT(*) FROM priced")[0][0] > 0
    # The safety backup covers what the restore replaced, and nothing more.
    safety = env.get("backups", rst["preRestoreBackup"])
    assert safety["spec"]["scope"] == {"tables": [f"{env.database}.gen"]}
    manifest = _manifest(env, rst["preRestoreBackup"])
    assert [(o["database"], o["table"]) for o in manifest["objects"] if o["kind"] == "table"] == [(env.database, "gen")]
    assert manifest["databases"] == [env.database] and manifest["counts"]["tables"] == 1


def test_a_database_restore_takes_a_safety_backup_of_that_database_only(env: Env) -> None:
    _awkward(env)
    _per_table_policy(env)
    env.backup("both")
    assert env.wait_phase("backups", "both", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    env.sql("UPDATE prices SET price = 0", _other(env))
    env.restore("other-only", "both", databases=[_other(env)])
    rst = env.wait_phase("restores", "other-only", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Completed", rst
    assert env.sql("SELECT COUNT(*) FROM prices WHERE price = 0", _other(env))[0][0] == 0
    manifest = _manifest(env, rst["preRestoreBackup"])
    assert manifest["databases"] == [_other(env)]
    assert {o["database"] for o in manifest["objects"] if o["kind"] == "table"} == {_other(env)}


def test_tables_on_a_single_object_backup_fail_with_a_reason(env: Env) -> None:
    env.policy()
    env.backup("single")
    assert env.wait_phase("backups", "single", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    env.restore("bad-tables", "single", tables=[f"{env.database}.customers"])
    rst = env.wait_phase("restores", "bad-tables", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Failed" and rst["reason"] == "RestoreFailed", rst
    assert "perTable" in rst["message"]


def test_an_old_format_v1_backup_still_restores(env: Env) -> None:
    env.policy()
    env.backup("old")
    st = env.wait_phase("backups", "old", ("Completed", "Failed"))["status"]
    assert st["phase"] == "Completed", st
    # Rewrite the manifest exactly as the first agent wrote it (version 1, one `object`).
    manifest = _manifest(env, "old")
    v1 = {k: v for k, v in manifest.items() if k != "objects"}
    v1["manifestVersion"] = 1
    _, key = st["manifestLocation"][5:].split("/", 1)
    s3_client(env.stack).put_object(Bucket=env.bucket, Key=key, Body=json.dumps(v1).encode())
    before = env.checksums()
    env.sql("DELETE FROM orders WHERE id > 3")
    env.restore("from-v1", "old")
    rst = env.wait_phase("restores", "from-v1", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Completed", rst
    assert env.checksums() == before


def test_a_corrupted_table_object_fails_the_restore_before_the_database_is_touched(env: Env) -> None:
    _per_table_policy(env)
    env.sql(f"CREATE DATABASE IF NOT EXISTS `{_other(env)}`")
    env.backup("split")
    assert env.wait_phase("backups", "split", ("Completed", "Failed"))["status"]["phase"] == "Completed"
    manifest = _manifest(env, "split")
    victim = next(o for o in manifest["objects"] if o["kind"] == "table" and o["table"] == "orders")
    s3 = s3_client(env.stack)
    body = bytearray(s3.get_object(Bucket=env.bucket, Key=victim["key"])["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=env.bucket, Key=victim["key"], Body=bytes(body))
    env.sql("CREATE TABLE marker (id INT)")
    env.restore("corrupt", "split")
    rst = env.wait_phase("restores", "corrupt", ("Completed", "Failed"), timeout=300)["status"]
    assert rst["phase"] == "Failed" and rst["reason"] == "ChecksumMismatch", rst
    assert "marker" in env.checksums(), "nothing was restored"


def test_deleting_a_per_table_backup_deletes_every_object(env: Env) -> None:
    _per_table_policy(env)
    env.sql(f"CREATE DATABASE IF NOT EXISTS `{_other(env)}`")
    env.backup("gone")
    st = env.wait_phase("backups", "gone", ("Completed", "Failed"))["status"]
    assert st["phase"] == "Completed", st
    folder = st["manifestLocation"][5:].split("/", 1)[1].rsplit("/", 1)[0] + "/"
    assert len(env.objects(folder)) >= 4
    env.custom.delete_namespaced_custom_object("mysqlbackup.dev", "v1alpha1", env.namespace, "backups", "gone")
    from tests.stackenv import eventually

    eventually(lambda: not env.objects(folder), timeout=60, what="every object of the backup deleted")


def test_agent_pod_killed_mid_per_table_backup_leaves_no_object(env: Env) -> None:
    """Tables dumped before the kill were already published as objects: SIGTERM deletes them
    (and aborts the open uploads), so nothing of the failed backup stays in the bucket."""
    from tests.e2e.test_backup_restore import _agent_pids
    from tests.stackenv import eventually

    _per_table_policy(env)
    env.sql(f"CREATE DATABASE IF NOT EXISTS `{_other(env)}`")
    # A table that sorts last and takes seconds to dump: the small tables before it are published
    # while it streams. (A LOCK TABLES hold cannot be used: with binary logging on, mariadb-dump
    # waits for it in FLUSH TABLES WITH READ LOCK, before the first table.)
    env.sql("CREATE TABLE zz_big (id INT PRIMARY KEY, a CHAR(32), b CHAR(32), c CHAR(32), d CHAR(64))")
    env.sql("INSERT INTO zz_big SELECT seq, MD5(seq), MD5(seq + 1), MD5(seq + 2), SHA2(seq, 256) FROM seq_1_to_1200000")
    env.backup("killed")
    eventually(lambda: _agent_pids(env), timeout=60, what="agent running")
    eventually(
        lambda: [k for k in env.objects() if "/killed-" in k and "/1-tables/" in k],
        timeout=60,
        interval=0.2,
        what="a table object published before the kill",
    )
    (pod,) = env.core.list_namespaced_pod(
        env.namespace, label_selector="batch.kubernetes.io/job-name=backup-killed"
    ).items
    env.core.delete_namespaced_pod(pod.metadata.name, env.namespace)
    st = env.wait_phase("backups", "killed", ("Completed", "Failed"), timeout=120)["status"]
    assert st["phase"] == "Failed", st
    assert not [k for k in env.objects() if "/killed-" in k], "objects of a failed backup stayed visible"
    uploads = s3_client(env.stack).list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
    assert not [u for u in uploads if "/killed-" in u["Key"]], uploads
