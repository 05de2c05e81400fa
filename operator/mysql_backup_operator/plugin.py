"""`kubectl mysqlbackup`: list, describe, create, restore and delete backups from the terminal.

kubectl finds this program on PATH as `kubectl-mysqlbackup`. It honours -n/--namespace,
--context and --kubeconfig like kubectl. Exit codes: 0 success, 1 the operation failed,
2 bad usage or an API error, 3 not found, 4 refused (by the user or a safety rule).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .api import API_VERSION, BACKUPS, RESTORES
from .naming import manual_backup_name

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED = 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def human_bytes(n: Any) -> str:
    if n in (None, ""):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(n)


def age(ts: str | None, now: dt.datetime) -> str:
    if not ts:
        return "-"
    secs = int((now - dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def parse_date(s: str) -> dt.datetime:
    try:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"not a date: {s!r} (use YYYY-MM-DD or an ISO 8601 time)") from None
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def select(
    items: list[dict[str, Any]],
    *,
    policy: str | None = None,
    trigger: str | None = None,
    phase: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Filters and sorts newest first. Pure, so the listing logic is unit-tested."""

    def keep(b: dict[str, Any]) -> bool:
        spec, st = b.get("spec") or {}, b.get("status") or {}
        created = dt.datetime.fromisoformat(b["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        return (
            (policy is None or spec.get("policyRef", {}).get("name") == policy)
            and (trigger is None or spec.get("trigger", "manual") == trigger)
            and (phase is None or (st.get("phase") or "Pending").lower() == phase.lower())
            and (since is None or created >= since)
            and (until is None or created <= until)
        )

    return sorted(
        (b for b in items if keep(b)),
        key=lambda b: (b["metadata"]["creationTimestamp"], b["metadata"]["name"]),
        reverse=True,
    )


def paginate(items: list[dict[str, Any]], limit: int, page: int) -> list[dict[str, Any]]:
    if limit <= 0 or page <= 0:
        raise CliError("--limit and --page must be positive")
    return items[(page - 1) * limit : page * limit]


class Client:
    """The plugin's calls, through the operator's Kubernetes door with the user's own kubeconfig;
    API refusals become CliErrors with kubectl-like exit codes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from .k8s.kube import Kube, user_config

        try:
            user = user_config(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
        except Exception as e:
            raise CliError(f"cannot load kubeconfig: {e}") from None
        self.namespace = user.namespace
        self.kube = Kube(user.api_client)

    def call(self, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        from kubernetes.client.rest import ApiException

        try:
            return fn(*a, **kw)
        except ApiException as e:
            message = e.reason
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                message = json.loads(e.body).get("message", message)
            if e.status == 404:
                raise CliError(message, EXIT_NOT_FOUND) from None
            if e.status == 403:
                raise CliError(f"forbidden: {message}", EXIT_REFUSED) from None
            raise CliError(f"API error {e.status}: {message}") from None
        except OSError as e:
            raise CliError(f"cannot reach the cluster: {e}") from None

    def list(self, plural: str, all_namespaces: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(
            self.kube.list_objects, plural, None if all_namespaces else self.namespace
        )
        return result

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.call(self.kube.read, plural, self.namespace, name))

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call(self.kube.create_object, plural, self.namespace, body))

    def delete(self, plural: str, name: str) -> None:
        self.call(self.kube.delete_object, plural, self.namespace, name)


def render_list(items: list[dict[str, Any]], output: str, show_ns: bool) -> str:
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False))
    now = dt.datetime.now(dt.UTC)
    head = ["NAME", "POLICY", "TRIGGER", "PHASE", "SIZE", "STORED", "AGE"]
    if output == "wide":
        head += ["REASON", "SHA256", "LOCATION"]
    if show_ns:
        head.insert(0, "NAMESPACE")
    rows = [head]
    for b in items:
        spec, st, m = b.get("spec") or {}, b.get("status") or {}, b["metadata"]
        row = [
            m["name"],
            spec.get("policyRef", {}).get("name", "-"),
            spec.get("trigger", "manual"),
            st.get("phase") or "Pending",
            human_bytes(st.get("sizeBytes")),
            human_bytes(st.get("storedBytes")),
            age(m.get("creationTimestamp"), now),
        ]
        if output == "wide":
            row += [st.get("reason") or "-", (st.get("sha256") or "-")[:12], st.get("location") or "-"]
        if show_ns:
            row.insert(0, m["namespace"])
        rows.append(row)
    return table(rows) if len(rows) > 1 else "No backups found."


def cmd_list(c: Client, a: argparse.Namespace) -> int:
    items = select(
        c.list(BACKUPS, a.all_namespaces),
        policy=a.policy,
        trigger=a.trigger,
        phase=a.phase,
        since=parse_date(a.since) if a.since else None,
        until=parse_date(a.until) if a.until else None,
    )
    total = len(items)
    shown = paginate(items, a.limit, a.page)
    print(render_list(shown, a.output, a.all_namespaces))
    if a.output in ("table", "wide") and total > len(shown):
        pages = (total + a.limit - 1) // a.limit
        print(f"\n(page {a.page} of {pages}, {total} backups; use --page to see more)", file=sys.stderr)
    return 0


def describe_lines(obj: dict[str, Any]) -> list[str]:
    m, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    out = [f"Name:        {m['name']}", f"Namespace:   {m['namespace']}", f"Kind:        {obj.get('kind')}"]
    for k, v in spec.items():
        out.append(f"{k[0].upper() + k[1:] + ':':13}{json.dumps(v) if isinstance(v, dict | list) else v}")
    out.append("Status:")
    for k in sorted(st):
        if k in ("conditions", "storage"):
            continue
        v = st[k]
        out.append(f"  {k + ':':20}{json.dumps(v) if isinstance(v, dict | list) else v}")
    if st.get("conditions"):
        out.append("Conditions:")
        for cnd in st["conditions"]:
            out.append(f"  {cnd['type']}={cnd['status']} ({cnd.get('reason', '')}): {cnd.get('message', '')}")
    return out


def cmd_describe(c: Client, a: argparse.Namespace) -> int:
    kinds = [BACKUPS, RESTORES] if a.kind is None else [BACKUPS if a.kind.startswith("backup") else RESTORES]
    for plural in kinds:
        try:
            obj = c.get(plural, a.name)
        except CliError as e:
            if e.code == EXIT_NOT_FOUND:
                continue
            raise
        print("\n".join(describe_lines(obj)))
        return 0
    raise CliError(f'no Backup or Restore named "{a.name}" in namespace {c.namespace}', EXIT_NOT_FOUND)


def wait_for(c: Client, plural: str, name: str, timeout: float, follow_safety: bool = False) -> int:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        obj = c.get(plural, name)
        st = obj.get("status") or {}
        phase = st.get("phase") or "Pending"
        line = f"{phase}: {st.get('message') or ''}".rstrip(": ")
        if follow_safety and st.get("preRestoreBackup") and phase == "BackingUp":
            with contextlib.suppress(CliError):
                pre = (c.get(BACKUPS, st["preRestoreBackup"]).get("status") or {}).get("phase") or "Pending"
                line += f" [safety backup {pre}]"
        if line != last:
            print(f"[{time.monotonic() - start:5.0f}s] {line}", flush=True)
            last = line
        if phase == "Completed":
            return 0
        if phase == "Failed":
            print(f"{plural[:-1]} {name} failed: {st.get('reason')}: {st.get('message')}", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(1)
    print(f"timed out after {timeout:.0f}s waiting for {plural[:-1]} {name}", file=sys.stderr)
    return EXIT_FAILED


def cmd_create(c: Client, a: argparse.Namespace) -> int:
    name = a.name or manual_backup_name(a.policy, dt.datetime.now(dt.UTC))
    spec: dict[str, Any] = {"policyRef": {"name": a.policy}, "trigger": "manual"}
    if a.description:
        spec["description"] = a.description
    if a.retain:
        spec["deletionPolicy"] = "Retain"
    c.create(BACKUPS, {"apiVersion": API_VERSION, "kind": "Backup", "metadata": {"name": name}, "spec": spec})
    print(f"backup.mysqlbackup.dev/{name} created")
    return wait_for(c, BACKUPS, name, a.timeout) if a.wait else 0


def cmd_restore(c: Client, a: argparse.Namespace) -> int:
    backup = c.get(BACKUPS, a.backup)
    st = backup.get("status") or {}
    if st.get("phase") != "Completed":
        raise CliError(f'Backup "{a.backup}" is {st.get("phase") or "Pending"}, not Completed', EXIT_REFUSED)
    policy = backup["spec"]["policyRef"]["name"]
    dbs = a.databases.split(",") if a.databases else st.get("databases") or []
    print(f"Restore Backup {a.backup} (taken {st.get('completedAt')}, {human_bytes(st.get('sizeBytes'))})")
    print(f"  into the database of BackupPolicy {policy}: {', '.join(dbs)}" + (f" as {a.target}" if a.target else ""))
    print("  A pre-restore safety backup of the current data is taken first; the restore only starts")
    print("  if it completes. The restored databases are replaced by the backup's contents.")
    if not a.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to restore without confirmation: pass --yes", EXIT_REFUSED)
        if input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            print("aborted")
            return EXIT_REFUSED
    name = a.name or f"restore-{a.backup}-{uuid.uuid4().hex[:5]}"[:253]
    spec: dict[str, Any] = {"backupRef": {"name": a.backup}}
    if a.databases:
        spec["databases"] = dbs
    if a.target:
        spec["target"] = a.target
    c.create(RESTORES, {"apiVersion": API_VERSION, "kind": "Restore", "metadata": {"name": name}, "spec": spec})
    print(f"restore.mysqlbackup.dev/{name} created")
    return wait_for(c, RESTORES, name, a.timeout, follow_safety=True) if a.wait else 0


def cmd_delete(c: Client, a: argparse.Namespace) -> int:
    backup = c.get(BACKUPS, a.backup)
    spec = backup.get("spec") or {}
    if spec.get("trigger") == "scheduled":
        raise CliError(
            f'Backup "{a.backup}" was created by the schedule of BackupPolicy '
            f"{spec.get('policyRef', {}).get('name')} and is removed by its retention rules. "
            "Change spec.retention on the policy instead (or annotate the Backup "
            "mysqlbackup.dev/allow-delete=true if you really must).",
            EXIT_REFUSED,
        )
    what = "its dump in object storage is deleted too" if spec.get("deletionPolicy", "Delete") == "Delete" else (
        "its dump stays in object storage (deletionPolicy Retain)"
    )  # fmt: skip
    if not a.yes:
        if not sys.stdin.isatty():
            raise CliError(f"refusing to delete without confirmation ({what}): pass --yes", EXIT_REFUSED)
        if input(f"Delete Backup {a.backup}; {what}. Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            return EXIT_REFUSED
    c.delete(BACKUPS, a.backup)
    print(f'backup.mysqlbackup.dev "{a.backup}" deleted ({what})')
    return 0


def parser() -> argparse.ArgumentParser:
    def connection_flags(default: Any) -> argparse.ArgumentParser:
        flags = argparse.ArgumentParser(add_help=False)
        flags.add_argument("-n", "--namespace", default=default)
        flags.add_argument("--context", default=default)
        flags.add_argument("--kubeconfig", default=default)
        return flags

    # kubectl-style flags work before or after the subcommand; SUPPRESS keeps a subcommand's
    # unset flag from overwriting one given before it.
    common = connection_flags(argparse.SUPPRESS)
    p = argparse.ArgumentParser(prog="kubectl mysqlbackup", description=__doc__, parents=[connection_flags(None)])
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", parents=[common], help="list backups, newest first")
    ls.add_argument("--policy")
    ls.add_argument("--trigger", choices=["manual", "scheduled", "pre-restore"])
    ls.add_argument("--phase", choices=["Pending", "Running", "Completed", "Failed"], type=str.capitalize)
    ls.add_argument("--since", help="created at or after (YYYY-MM-DD or ISO time)")
    ls.add_argument("--until", help="created at or before")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--page", type=int, default=1)
    ls.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.set_defaults(fn=cmd_list)
    de = sub.add_parser("describe", parents=[common], help="show a Backup or Restore")
    de.add_argument("kind_or_name")
    de.add_argument("name", nargs="?")
    de.set_defaults(fn=cmd_describe)
    cr = sub.add_parser("create", parents=[common], help="take a manual backup now")
    cr.add_argument("--policy", required=True)
    cr.add_argument("--name")
    cr.add_argument("--description")
    cr.add_argument("--retain", action="store_true", help="keep the dump when the Backup is deleted")
    cr.add_argument("--wait", action="store_true")
    cr.add_argument("--timeout", type=float, default=3600)
    cr.set_defaults(fn=cmd_create)
    rs = sub.add_parser("restore", parents=[common], help="restore a backup (a safety backup runs first)")
    rs.add_argument("backup")
    rs.add_argument("--name")
    rs.add_argument("--databases", help="comma-separated subset of the backup's databases")
    rs.add_argument("--target", help="restore the single selected database under this name")
    rs.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rs.add_argument("--wait", action="store_true")
    rs.add_argument("--timeout", type=float, default=7200)
    rs.set_defaults(fn=cmd_restore)
    dl = sub.add_parser("delete", parents=[common], help="delete a manual or pre-restore backup")
    dl.add_argument("backup")
    dl.add_argument("-y", "--yes", action="store_true")
    dl.set_defaults(fn=cmd_delete)
    ui = sub.add_parser("ui", parents=[common], help="start the web console on 127.0.0.1 (your own credentials)")
    from .console import server as console

    console.add_arguments(ui)
    ui.set_defaults(fn=None, run=console.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "describe":
        if args.name is None:
            args.kind, args.name = None, args.kind_or_name
        else:
            args.kind = args.kind_or_name.lower()
            if not args.kind.startswith(("backup", "restore")):
                print("error: describe [backup|restore] NAME", file=sys.stderr)
                return EXIT_USAGE
    if args.cmd == "ui":
        return int(args.run(args))
    try:
        return int(args.fn(Client(args), args))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
