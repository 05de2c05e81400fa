"""The storage backends' operator-side plumbing: spec parsing, Job env, status locations, URLs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mysql_backup_operator import jobs
from mysql_backup_operator.api.common import SpecError
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.backends import Target
from mysql_backup_operator.contract import config as cc
from mysql_backup_operator.contract.store import Backend, ErrorKind, classify, object_url, parse_object_url
from mysql_backup_operator.objectstore import Location

DB = {"host": "db", "user": "bk", "passwordSecretRef": {"name": "dbpw"}}
AZURE = {
    "container": "backups",
    "prefix": "p",
    "serviceURL": "https://acct.blob.core.windows.net",
    "accountName": "acct",
    "credentialsSecretRef": {"name": "az", "accountKeyKey": "key"},
}
GCS = {"bucket": "bk", "endpoint": "http://gcs:4443", "credentialsSecretRef": {"name": "g"}}


def policy(storage: dict[str, Any]) -> Any:
    return parse_policy(name="pol", namespace="ns", spec={"database": DB, "storage": storage})


@pytest.mark.parametrize(
    "storage",
    [{}, {"s3": {"bucket": "b", "credentialsSecretRef": {"name": "s"}}, "gcs": GCS}, {"sync": True}],
)
def test_exactly_one_backend(storage: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="exactly one of s3, azureBlob, gcs"):
        policy(storage)


def test_azure_credentials_need_exactly_one_kind_and_a_url() -> None:
    with pytest.raises(SpecError, match="exactly one of connectionStringKey"):
        policy(
            {"azureBlob": {**AZURE, "credentialsSecretRef": {"name": "az", "accountKeyKey": "k", "sasTokenKey": "s"}}}
        )
    with pytest.raises(SpecError, match="serviceURL is required"):
        policy({"azureBlob": {**AZURE, "serviceURL": None}})
    # A connection string names its own endpoint.
    p = policy({"azureBlob": {"container": "c", "credentialsSecretRef": {"name": "az", "connectionStringKey": "cs"}}})
    assert p.azure_blob is not None and p.azure_blob.service_url is None


def test_azure_job_gets_its_secret_through_secret_key_refs_only() -> None:
    p = policy({"azureBlob": AZURE})
    job = jobs.render_backup_job(
        backup_name="b", backup_uid="u" * 8, namespace="ns", trigger="manual", policy=p, db_key="k"
    )
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env[cc.ENV_AZURE_ACCOUNT_KEY]["valueFrom"]["secretKeyRef"] == {"name": "az", "key": "key"}
    assert not {cc.ENV_ACCESS_KEY_ID, cc.ENV_AZURE_SAS_TOKEN} & set(env)
    cfg = json.loads(env[cc.ENV_CONFIG]["value"])["storage"]
    assert cfg["backend"] == "azureBlob" and cfg["bucket"] == "backups" and cfg["accountName"] == "acct"
    assert cfg["dumpKey"] == "p/ns/pol/b-uuuuuuuu/dump.sql.zst"
    assert "key" not in json.dumps(c["command"])


def test_gcs_without_secret_is_workload_identity() -> None:
    p = policy({"gcs": {"bucket": "bk"}})
    t = Target.of(p)
    assert t.backend == Backend.GCS and t.secret is None and t.secret_env == ()
    p = policy({"gcs": GCS})
    assert [(e.env, e.key) for e in Target.of(p).secret_env] == [(cc.ENV_GCS_CREDENTIALS, "service-account.json")]


@pytest.mark.parametrize("storage", [{"azureBlob": AZURE}, {"gcs": GCS}])
def test_location_round_trips_through_status_and_builds_the_agent_config(storage: dict[str, Any]) -> None:
    loc = Location.for_policy(policy(storage), "d/dump.sql.zst", "d/manifest.json")
    back = Location.from_status(json.loads(json.dumps(loc.to_status())))
    assert back == loc
    secret = {"key": "c2VjcmV0", "service-account.json": "{}"}
    cfg = back.config(secret, None)
    assert cfg.backend == str(loc.backend) and cfg.bucket == loc.bucket
    assert loc.url("k") == object_url(loc.backend, loc.bucket, "k")


def test_old_s3_status_still_reads() -> None:
    old = {"bucket": "b", "dumpKey": "d", "manifestKey": "m", "credentialsSecret": "s", "region": "eu-west-1"}
    loc = Location.from_status(old)
    assert loc.backend == Backend.S3 and loc.config({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, None)


def test_urls() -> None:
    for b in Backend:
        assert parse_object_url(object_url(b, "bkt", "a/b")) == (b, "bkt", "a/b")
    with pytest.raises(ValueError):
        parse_object_url("file:///x")


def test_composite_secrets_are_scrubbed_piece_by_piece() -> None:
    cs = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=S3CRETKEY==;BlobEndpoint=http://h/a;"
    env = {cc.ENV_CONFIG: "{}", cc.ENV_AZURE_CONNECTION_STRING: cs, cc.ENV_AZURE_SAS_TOKEN: "?sv=1&sig=SIGNATURE"}
    secrets = cc.load(env).secrets
    assert "S3CRETKEY==" in secrets and "SIGNATURE" in secrets and cs in secrets


class AzureLike(Exception):
    def __init__(self, code: str, status: int) -> None:
        self.error_code, self.status_code = code, status


def test_errors_classify_across_sdks() -> None:
    assert classify(AzureLike("BlobNotFound", 404)) == ErrorKind.MISSING
    assert classify(AzureLike("AuthenticationFailed", 403)) == ErrorKind.DENIED
    assert classify(AzureLike("ServerBusy", 503)) == ErrorKind.UNAVAILABLE

    class RefreshError(Exception):  # google-auth's, when a key cannot be exchanged for a token
        pass

    assert classify(RefreshError("invalid_grant")) == ErrorKind.DENIED


def test_an_s3_agent_never_imports_the_azure_or_google_sdks() -> None:
    """The agent pod has a 128 MiB memory target: the other backends' SDKs load only when used."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from mysql_backup_operator.agent import cli\n"
        "from mysql_backup_operator.contract import config as cc\n"
        "from mysql_backup_operator.contract.store import open_store\n"
        "raw = {'storage': {'bucket': 'b', 'endpoint': 'http://127.0.0.1:9'}}\n"
        "env = {cc.ENV_CONFIG: json.dumps(raw), 'AWS_ACCESS_KEY_ID': 'a', 'AWS_SECRET_ACCESS_KEY': 'b'}\n"
        "open_store(cc.load(env).storage)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('azure', 'google')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


S3 = {"bucket": "b", "credentialsSecretRef": {"name": "s"}}
SSE_C = {"mode": "SSE-C", "customerKeySecretRef": {"name": "ssec"}}


@pytest.mark.parametrize(
    "storage",
    [{"gcs": GCS}, {"azureBlob": AZURE}, {"s3": S3}, {"s3": {**S3, "serverSideEncryption": SSE_C}}],
    ids=["gcs", "azureBlob", "s3", "s3-sse-c"],
)
def test_the_archiver_gets_the_backends_credentials_exactly_like_backup_jobs(storage: dict[str, Any]) -> None:
    """Point-in-time recovery on every backend: the archiver's pod reads and writes the same bucket
    with the same Secret keys, as the same env vars (secretKeyRef only), as the policy's backup Jobs."""
    from mysql_backup_operator.controllers.pitr import render_archiver

    spec = {"database": DB, "storage": storage, "pointInTimeRecovery": {"enabled": True}}
    p = parse_policy(name="pol", namespace="ns", spec=spec)
    assert p.pitr is not None and p.pitr.enabled
    archiver = render_archiver(p, policy_uid="u")["spec"]["template"]["spec"]
    job = jobs.render_backup_job(
        backup_name="b", backup_uid="u" * 8, namespace="ns", trigger="manual", policy=p, db_key="k"
    )["spec"]["template"]["spec"]
    (a,), (j,) = archiver["containers"], job["containers"]
    secret_env = [e for e in j["env"] if "valueFrom" in e]
    assert secret_env and [e for e in a["env"] if "valueFrom" in e] == secret_env
    assert all(set(e["valueFrom"]) == {"secretKeyRef"} for e in secret_env)
    assert not [e for e in a["env"] if "value" in e and e["name"] != cc.ENV_CONFIG and "KEY" in e["name"]]
    a_cfg = json.loads(next(e["value"] for e in a["env"] if e["name"] == cc.ENV_CONFIG))["storage"]
    j_cfg = json.loads(next(e["value"] for e in j["env"] if e["name"] == cc.ENV_CONFIG))["storage"]
    assert a_cfg == {k: v for k, v in j_cfg.items() if k not in ("dumpKey", "manifestKey")}
    assert [m for m in a["volumeMounts"] if m["name"] != "binlogs"] == j["volumeMounts"]
