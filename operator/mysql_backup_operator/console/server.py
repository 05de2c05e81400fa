"""The loopback HTTP server: static assets, a JSON API over the user's own credentials, and SSE.

Security model (docs/design-console.md): bound to 127.0.0.1 only; every request must carry a
Host of 127.0.0.1:<port> or localhost:<port> (a DNS-rebinding page has another Host); the API
needs the per-start random token, handed over once in the printed URL and then kept in a
SameSite=Strict, HttpOnly cookie; writes also need a same-origin Origin (when sent) and a JSON
body, which a cross-site form cannot produce without a CORS preflight we never answer.
"""

from __future__ import annotations

import argparse
import hmac
import json
import mimetypes
import re
import secrets
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from . import views
from ._operator import BACKUPS, POLICIES, RESTORES
from .cluster import ApiError, Cluster, Connection

COOKIE = "mbo_console"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(Exception):
    pass


class Console(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster: Cluster, *, port: int = 0, token: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.cluster = cluster
        self.token = token or secrets.token_urlsafe(32)
        self.port = int(self.server_address[1])
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}


class Handler(BaseHTTPRequestHandler):
    server: Console
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # The token travels in the first URL only; never echo query strings.
        sys.stderr.write(f"console: {self.command} {self.path.split('?')[0]} {args[1] if len(args) > 1 else ''}\n")

    # Plumbing.
    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, title: str, message: str) -> None:
        self._json(status, {"error": {"status": status, "title": title, "message": message}})

    def _host_ok(self) -> bool:
        return self.headers.get("Host", "") in self.server.allowed_hosts()

    def _authed(self) -> bool:
        cookies = self.headers.get("Cookie", "")
        for part in cookies.split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE and hmac.compare_digest(v, self.server.token):
                return True
        return False

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # same-origin fetch of GET/HEAD may omit it; writes also need JSON (below)
        return origin in {f"http://{h}" for h in self.server.allowed_hosts()}

    def _body(self) -> dict[str, Any]:
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise BadRequest("expected a JSON body")
        n = int(self.headers.get("Content-Length") or 0)
        if n > 64 * 1024:
            raise BadRequest("body too large")
        try:
            data = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            raise BadRequest("body is not JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data

    # Dispatch.
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        if not self._host_ok():
            self._error(421, "Wrong host", "this console answers only on 127.0.0.1 or localhost")
            return
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        path = url.path
        if not path.startswith("/api/"):
            if method != "GET":
                self._error(405, "Method not allowed", method)
                return
            self._static(path, query)
            return
        if not self._authed():
            self._error(401, "Not signed in", "open the URL printed by `kubectl mysqlbackup ui` (it carries a token)")
            return
        if method != "GET" and not self._same_origin():
            self._error(403, "Cross-origin request refused", "writes are accepted only from the console's own page")
            return
        try:
            handler, args = self._route(method, path)
            handler(*args, query)
        except ApiError as e:
            self._json(e.status, {"error": e.payload})
        except BadRequest as e:
            self._error(400, "Bad request", str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:
            # A console bug must still answer with a message; the details go to the user's own terminal.
            traceback.print_exc(file=sys.stderr)
            self._error(500, "Console error", f"unexpected {type(e).__name__}; see the terminal running the console")

    def _route(self, method: str, path: str) -> tuple[Callable[..., None], tuple[str, ...]]:
        parts = [urllib.parse.unquote(p) for p in path.split("/")[2:] if p]
        table: dict[tuple[str, str], Callable[..., None]] = {
            ("GET", "context"): self.api_context,
            ("GET", "policies"): self.api_policies,
            ("GET", "backups"): self.api_backups,
            ("POST", "backups"): self.api_create_backup,
            ("GET", "restores"): self.api_restores,
            ("POST", "restores"): self.api_create_restore,
            ("GET", "queue"): self.api_queue,
            ("GET", "watch"): self.api_watch,
        }
        if len(parts) == 1 and (method, parts[0]) in table:
            return table[(method, parts[0])], ()
        if len(parts) == 2 and parts[0] in ("backups", "restores") and NAME_RE.match(parts[1]):
            one = {
                ("GET", "backups"): self.api_backup,
                ("DELETE", "backups"): self.api_delete_backup,
                ("GET", "restores"): self.api_restore,
            }
            if (method, parts[0]) in one:
                return one[(method, parts[0])], (parts[1],)
        raise ApiError({"status": 404, "title": "Not found", "message": f"no API {method} {path}"})

    # Static files: the built Vue app.
    def _static(self, path: str, query: dict[str, str]) -> None:
        if path == "/" and "token" in query:
            if not hmac.compare_digest(query["token"], self.server.token):
                self._error(401, "Wrong token", "open the URL printed by `kubectl mysqlbackup ui`")
                return
            # Trade the token in the URL for a cookie, and drop it from the address bar and history.
            cookie = f"{COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        root = resources.files(__package__).joinpath("static")
        rel = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if ".." in rel.split("/") or not re.match(r"^[\w./-]+$", rel):
            self._error(404, "Not found", path)
            return
        f = root.joinpath(rel)
        if not f.is_file():
            self._error(404, "Not found", path)
            return
        ctype = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
            ctype += "; charset=utf-8"
        self._send(200, f.read_bytes(), ctype)

    # The API.
    def api_context(self, q: dict[str, str]) -> None:
        c = self.server.cluster
        self._json(
            200,
            {
                "context": c.context,
                "namespace": c.namespace,
                "can": {
                    "createBackup": c.can("create", BACKUPS),
                    "deleteBackup": c.can("delete", BACKUPS),
                    "createRestore": c.can("create", RESTORES),
                },
            },
        )

    def api_policies(self, q: dict[str, str]) -> None:
        items = self.server.cluster.list_objects(POLICIES)
        self._json(200, {"items": [views.policy_row(p) for p in sorted(items, key=lambda p: p["metadata"]["name"])]})

    def api_backups(self, q: dict[str, str]) -> None:
        try:
            flt = views.BackupFilter.from_query(q)
            page, limit = int(q.get("page") or 1), int(q.get("limit") or 20)
            self._json(200, views.backup_page(self.server.cluster.list_objects(BACKUPS), flt, page=page, limit=limit))
        except ValueError as e:
            raise BadRequest(str(e)) from None

    def api_backup(self, name: str, q: dict[str, str]) -> None:
        c = self.server.cluster
        obj = c.get(BACKUPS, name)
        row = views.backup_row(obj)
        out: dict[str, Any] = {"backup": row, "events": [], "logs": [], "restores": []}
        loaders: list[tuple[str, Callable[[], Any]]] = [
            ("events", lambda: c.events_for(name)),
            ("logs", lambda: c.job_logs(row["jobName"]) if row["jobName"] else []),
            ("restores", lambda: [views.restore_row(r) for r in c.list_objects(RESTORES) if _restores_backup(r, name)]),
        ]
        for key, fn in loaders:
            try:
                out[key] = fn()
            except ApiError as e:
                out[f"{key}Error"] = e.payload
        self._json(200, out)

    def api_create_backup(self, q: dict[str, str]) -> None:
        body = self._body()
        policy = str(body.get("policy") or "")
        if not NAME_RE.match(policy):
            raise BadRequest("choose a BackupPolicy")
        obj = self.server.cluster.create_backup(policy=policy, description=str(body.get("description") or "") or None)
        self._json(201, views.backup_row(obj))

    def api_delete_backup(self, name: str, q: dict[str, str]) -> None:
        self._body()  # JSON-only, like every write
        dry_run = q.get("dryRun") in ("1", "true")
        self.server.cluster.delete_backup(name, dry_run=dry_run)
        self._json(200, {"deleted": name, "dryRun": dry_run})

    def api_restores(self, q: dict[str, str]) -> None:
        items = self.server.cluster.list_objects(RESTORES)
        rows = sorted(
            (views.restore_row(r) for r in items), key=lambda r: (r["created"] or "", r["name"]), reverse=True
        )
        self._json(200, {"items": rows})

    def api_restore(self, name: str, q: dict[str, str]) -> None:
        c = self.server.cluster
        row = views.restore_row(c.get(RESTORES, name))
        out: dict[str, Any] = {"restore": row, "safetyBackup": None, "events": []}
        if row["preRestoreBackup"]:
            try:
                out["safetyBackup"] = views.backup_row(c.get(BACKUPS, row["preRestoreBackup"]))
            except ApiError as e:
                out["safetyBackupError"] = e.payload
        try:
            out["events"] = c.events_for(name)
        except ApiError as e:
            out["eventsError"] = e.payload
        self._json(200, out)

    def api_create_restore(self, q: dict[str, str]) -> None:
        body = self._body()
        backup = str(body.get("backup") or "")
        if not NAME_RE.match(backup):
            raise BadRequest("choose a Backup")
        if body.get("confirm") is not True:
            raise BadRequest("a restore needs an explicit confirmation")
        dbs = body.get("databases") or None
        if dbs is not None and not (isinstance(dbs, list) and all(isinstance(d, str) for d in dbs)):
            raise BadRequest("databases must be a list of names")
        obj = self.server.cluster.create_restore(backup=backup, databases=dbs, target=body.get("target") or None)
        self._json(201, views.restore_row(obj))

    def api_queue(self, q: dict[str, str]) -> None:
        c = self.server.cluster
        backups, restores = c.list_objects(BACKUPS), c.list_objects(RESTORES)
        groups = views.queue(backups, restores)
        holders, why = c.lease_holders([g["database"] for g in groups])
        self._json(200, {"databases": views.queue(backups, restores, leases=holders), "leaseError": why})

    def api_watch(self, q: dict[str, str]) -> None:
        """Server-sent events fed by API watches; the page refetches what changed."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.close_connection = True
        stop = threading.Event()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            for note in self.server.cluster.watch(stop):
                if self.server.stopping.is_set():
                    break
                if note.get("type") == "heartbeat":
                    self.wfile.write(b": heartbeat\n\n")
                else:
                    self.wfile.write(f"data: {json.dumps(note)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            stop.set()


def _restores_backup(r: dict[str, Any], backup: str) -> bool:
    return bool(((r.get("spec") or {}).get("backupRef") or {}).get("name") == backup)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    p.add_argument(
        "--operator-namespace",
        default="mysql-backup-system",
        help="where the operator keeps its lock Leases (shown on the queue page when you may read them)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `kubectl mysqlbackup ui`: serve until Ctrl-C."""
    try:
        cluster = Cluster(
            Connection(
                kubeconfig=args.kubeconfig,
                context=args.context,
                namespace=args.namespace,
                operator_namespace=args.operator_namespace,
            )
        )
    except Exception as e:
        print(f"error: cannot load kubeconfig: {e}", file=sys.stderr)
        return 2
    try:
        console = Console(cluster, port=args.port)
    except OSError as e:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return 2
    print(f"Console for namespace {cluster.namespace} (context {cluster.context or '-'}):", flush=True)
    print(f"  {console.url}", flush=True)
    print("Open that URL in your browser; it is valid until you stop this command (Ctrl-C).", flush=True)
    try:
        console.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        console.stopping.set()
        console.server_close()
    return 0
