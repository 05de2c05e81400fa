from __future__ import annotations

import datetime as dt

import pytest
from mysql_backup_operator import naming
from mysql_backup_operator.api import Compression
from mysql_backup_operator.api.common import SpecError
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.api.restore import parse_restore, restore_plan

POLICY = {
    "database": {"host": "db.example", "user": "backup", "passwordSecretRef": {"name": "db"}},
    "storage": {"s3": {"bucket": "backups", "credentialsSecretRef": {"name": "s3"}}},
}


def test_bounded_names_fit_and_stay_unique() -> None:
    long_a = "a" * 80
    long_b = "a" * 79 + "b"
    assert len(naming.backup_job_name(long_a)) <= 63
    assert naming.backup_job_name(long_a) != naming.backup_job_name(long_b)
    assert naming.backup_job_name(long_a) == naming.backup_job_name(long_a)
    assert naming.backup_job_name("nightly") == "backup-nightly"


def test_pre_restore_name_depends_only_on_restore_creation() -> None:
    created = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    assert naming.pre_restore_backup_name("r1", created) == "pre-restore-r1-20260304-050607"


def test_storage_keys_are_deterministic() -> None:
    d = naming.storage_dir(prefix="/p/", namespace="ns", policy="pol", backup="b1", uid="12345678-aaaa")
    assert d == "p/ns/pol/b1-12345678"
    assert naming.dump_key(d, Compression.ZSTD) == "p/ns/pol/b1-12345678/dump.sql.zst"
    assert naming.manifest_key(d) == "p/ns/pol/b1-12345678/manifest.json"
    assert naming.parse_s3_url(naming.s3_url("bkt", "a/b")) == ("bkt", "a/b")


def test_policy_defaults() -> None:
    p = parse_policy(name="p", namespace="ns", spec=POLICY)
    assert p.database.port == 3306
    assert p.compression == Compression.ZSTD
    assert p.job.active_deadline_seconds == 600
    assert p.database.identity == "db.example:3306/*"


def test_database_identity_ignores_order() -> None:
    a = parse_policy(
        name="a", namespace="n", spec={**POLICY, "database": {**POLICY["database"], "databases": ["x", "y"]}}
    )
    b = parse_policy(
        name="b", namespace="n", spec={**POLICY, "database": {**POLICY["database"], "databases": ["y", "x"]}}
    )
    assert a.database.identity == b.database.identity


@pytest.mark.parametrize(
    "args",
    [["--where=1=1"], ["--password=x"], ["--ignore-table=a"], ["; rm -rf /"], ["--result-file=/etc/passwd"]],
)
def test_extra_dump_args_outside_allow_list_are_refused(args: list[str]) -> None:
    with pytest.raises(SpecError, match="not allowed"):
        parse_policy(name="p", namespace="n", spec={**POLICY, "backup": {"extraDumpArgs": args}})


def test_allowed_extra_dump_args() -> None:
    spec = {
        **POLICY,
        "backup": {"extraDumpArgs": ["--skip-extended-insert", "--ignore-table=app.log", "--max-allowed-packet=64M"]},
    }
    assert parse_policy(name="p", namespace="n", spec=spec).extra_dump_args[1] == "--ignore-table=app.log"


def test_system_schema_refused() -> None:
    with pytest.raises(SpecError, match="system schema"):
        parse_policy(
            name="p", namespace="n", spec={**POLICY, "database": {**POLICY["database"], "databases": ["mysql"]}}
        )


def test_restore_plan() -> None:
    assert restore_plan(parse_restore({"backupRef": {"name": "b"}}), ("a", "b")) == (("a", "b"), None)
    assert restore_plan(parse_restore({"backupRef": {"name": "b"}, "databases": ["a"], "target": "c"}), ("a", "b")) == (
        ("a",),
        "c",
    )
    with pytest.raises(SpecError, match="not in the backup"):
        restore_plan(parse_restore({"backupRef": {"name": "b"}, "databases": ["z"]}), ("a",))
    with pytest.raises(SpecError, match="exactly one"):
        restore_plan(parse_restore({"backupRef": {"name": "b"}, "target": "c"}), ("a", "b"))


def test_manual_backup_name_is_the_policy_and_the_utc_second() -> None:
    import datetime as dt

    from mysql_backup_operator.naming import manual_backup_name

    t = dt.datetime(2026, 3, 1, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert manual_backup_name("shop", t) == "shop-manual-20260301020506"
    assert len(manual_backup_name("p" * 253, t)) == 253
