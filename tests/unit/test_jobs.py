from __future__ import annotations

import json

from mysql_backup_operator import jobs
from mysql_backup_operator.api.policy import parse_policy

POLICY = parse_policy(
    name="pol",
    namespace="ns",
    spec={
        "database": {"host": "db", "port": 3307, "user": "bk", "passwordSecretRef": {"name": "dbpw", "key": "pw"}},
        "storage": {"s3": {"bucket": "b", "credentialsSecretRef": {"name": "s3", "sessionTokenKey": "tok"}}},
        "jobTemplate": {"activeDeadlineSeconds": 120, "nodeSelector": {"disk": "ssd"}},
    },
)


def render() -> dict:  # type: ignore[type-arg]
    return jobs.render_backup_job(
        backup_name="b1", backup_uid="uid-1234-5678", namespace="ns", trigger="manual", policy=POLICY, db_key="k"
    )


def test_backup_job_is_restricted_and_has_no_api_access() -> None:
    job = render()
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert pod["nodeSelector"] == {"disk": "ssd"}


def test_secrets_only_through_secret_key_refs() -> None:
    c = render()["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["mysql-backup-agent", "backup"]
    assert "args" not in c
    env = {e["name"]: e for e in c["env"]}
    assert env["MBO_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "dbpw", "key": "pw"}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "tok"
    cfg = json.loads(env["MBO_AGENT_CONFIG"]["value"])
    assert cfg["storage"]["dumpKey"] == "ns/pol/b1-uid-1234/dump.sql.zst"
    assert "password" not in json.dumps(cfg).lower()


def test_owner_reference_and_deterministic_name() -> None:
    job = render()
    assert job["metadata"]["name"] == "backup-b1"
    (ref,) = job["metadata"]["ownerReferences"]
    assert ref["kind"] == "Backup" and ref["uid"] == "uid-1234-5678" and ref["controller"] is True
    assert render() == job


def test_permanent_agent_failures_fail_the_job_at_once() -> None:
    rules = render()["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"]["values"] == [jobs.EXIT_PERMANENT]


def test_job_outcome_only_counts_terminal_conditions() -> None:
    assert jobs.job_outcome({"status": {}}) == ("running", None)
    assert jobs.job_outcome({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}) == (
        "running",
        None,
    )
    assert jobs.job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "complete"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert jobs.job_outcome(failed) == ("failed", "DeadlineExceeded")


def test_agent_pods_name_their_operation_and_a_succeeded_agent_ends_the_job() -> None:
    job = render()
    pod = {"metadata": {"namespace": "ns", **job["spec"]["template"]["metadata"]}}
    assert jobs.operation_of_pod(pod) == ("Backup", "ns", "b1")
    assert jobs.operation_of_pod({"metadata": {"namespace": "ns"}}) is None
    running: dict = {"status": {}}  # type: ignore[type-arg]
    # The kubelet reports the exited container a second before it calls the pod Succeeded.
    exited = _pod("t", '{"ok": true}')
    failed = {**_pod("t", '{"ok": false}', 1), "status": {**_pod("t", "{}", 1)["status"], "phase": "Failed"}}
    assert jobs.job_end_outcome(running, [failed]) == ("running", None)
    assert jobs.job_end_outcome(running, [failed, exited]) == ("complete", "AgentSucceeded")
    # Exit 0 without a readable result waits for the Job (the result is what the status needs).
    assert jobs.job_end_outcome(running, [_pod("t", "")]) == ("running", None)
    assert jobs.job_end_outcome(running, [_pod("t", '{"ok": false}')]) == ("running", None)
    # The Job's own word wins: a Job already failed (deadline) stays failed.
    dead = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert jobs.job_end_outcome(dead, [exited]) == ("failed", "DeadlineExceeded")


def _pod(created: str, message: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"creationTimestamp": created},
        "status": {
            "containerStatuses": [{"name": "agent", "state": {"terminated": {"exitCode": code, "message": message}}}]
        },
    }


def test_agent_result_takes_newest_pod_and_survives_garbage() -> None:
    pods = [
        _pod("2026-01-01T00:00:00Z", '{"ok": false}', 1),
        _pod("2026-01-01T00:01:00Z", '{"ok": true, "sha256": "x"}'),
    ]
    assert jobs.agent_result(pods) == {"ok": True, "sha256": "x"}
    raw = jobs.agent_result([_pod("t", "Traceback: boom", 1)])
    assert raw is not None and raw["ok"] is False and "boom" in raw["message"]
    assert jobs.agent_result([]) is None
