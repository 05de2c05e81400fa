"""A dump that never connected is started again; one that streams, or failed otherwise, is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mysql_backup_operator.agent import cli, dumpstart
from mysql_backup_operator.agent.dumpstart import FirstOutput
from mysql_backup_operator.contract.config import AgentConfig

_TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _fake_proc(root: Path, pid: int, *, state: str, inode: str = "4242") -> None:
    fd = root / str(pid) / "fd"
    fd.mkdir(parents=True)
    os.symlink(f"socket:[{inode}]", fd / "3")
    os.symlink("/dev/null", fd / "0")
    net = root / str(pid) / "net"
    net.mkdir()
    row = f"   0: 0100007F:D431 FDB5D50A:0CEA {state} 00000000:00000000 01:00000064 00000002  1000        0 {inode} 1"
    (net / "tcp").write_text(_TCP_HEADER + row + "\n")


@pytest.mark.parametrize(("state", "expected"), [("02", True), ("01", False), ("06", False)])
def test_connecting_reads_the_processes_own_sockets(tmp_path: Path, state: str, expected: bool) -> None:
    _fake_proc(tmp_path, 7, state=state)
    assert dumpstart.connecting(7, proc_root=str(tmp_path)) is expected


def test_connecting_ignores_other_sockets_and_missing_processes(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 7, state="02", inode="1")
    (tmp_path / "7" / "fd" / "3").unlink()
    os.symlink("socket:[2]", tmp_path / "7" / "fd" / "3")
    assert not dumpstart.connecting(7, proc_root=str(tmp_path))
    assert not dumpstart.connecting(8, proc_root=str(tmp_path))
    assert not dumpstart.connecting(os.getpid())  # the real /proc parses


def test_connect_failures_are_told_from_other_failures() -> None:
    assert dumpstart.is_connect_failure("mariadb-dump: Got error: 2002: \"Can't connect to server on 'h' (115)\"")
    assert dumpstart.is_connect_failure("mysqldump: Got error: 2005: Unknown MySQL server host 'db' (-2)")
    assert not dumpstart.is_connect_failure("mariadb-dump: Got error: 1045: Access denied for user 'u'@'h'")
    assert not dumpstart.is_connect_failure("mariadb-dump: Couldn't execute 'SHOW TABLES': Lost connection (2013)")


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "dump.py"
    path.write_text(body)
    return [sys.executable, str(path), str(tmp_path / "runs")]


_FAILS_ONCE = """
import sys, pathlib
runs = pathlib.Path(sys.argv[1])
n = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(n + 1))
if n == 0:
    sys.stderr.write("mariadb-dump: Got error: 2002: \\"Can't connect to server on 'db' (115)\\"\\n")
    sys.exit(2)
sys.stdout.write("-- MariaDB dump\\n-- Dump completed\\n")
"""


def test_a_dump_that_could_not_connect_is_started_again(tmp_path: Path) -> None:
    proc, err = cli.start_dump(_script(tmp_path, _FAILS_ONCE), secrets=[], pause=0)
    assert proc.stdout is not None
    assert proc.stdout.read() == b"-- MariaDB dump\n-- Dump completed\n"
    assert proc.wait() == 0 and err.text() == ""
    assert (tmp_path / "runs").read_text() == "2"


def test_other_failures_and_the_last_attempt_are_left_to_the_caller(tmp_path: Path) -> None:
    denied = "import sys\nsys.stderr.write('Got error: 1045: Access denied\\n')\nsys.exit(2)\n"
    proc, err = cli.start_dump(_script(tmp_path, denied), secrets=[], pause=0)
    assert proc.wait() == 2 and "Access denied" in err.text()
    always = "import sys\nsys.stderr.write(\"Can't connect to server on 'db' (115)\\n\")\nsys.exit(2)\n"
    calls = tmp_path / "calls"
    argv = [sys.executable, "-c", f"open({str(calls)!r}, 'a').write('x');" + always.replace("\n", ";")]
    proc, err = cli.start_dump(argv, secrets=[], attempts=3, pause=0)
    assert proc.wait() == 2 and "Can't connect" in err.text()
    assert calls.read_text() == "xxx"


def test_a_connection_stuck_in_syn_sent_counts_as_stalled() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert dumpstart.first_output(proc, stall=0.3, poll_every=0.05, is_connecting=lambda pid: True) == (
            FirstOutput.STALLED
        )
    finally:
        proc.kill()
        proc.wait()


def test_first_output_leaves_the_first_bytes_for_the_stream() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('abc')"], stdout=subprocess.PIPE)
    assert dumpstart.first_output(proc, stall=1, is_connecting=lambda pid: False) == FirstOutput.OUTPUT
    assert proc.stdout is not None and proc.stdout.read() == b"abc\n"
    proc.wait()
    quiet = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    assert dumpstart.first_output(quiet, stall=1, is_connecting=lambda pid: False) == FirstOutput.EXITED
    quiet.wait()


_UNANSWERED = """
import logging, sys, time
from mysql_backup_operator.agent import cli
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
defaults = sys.argv[1]
argv = [cli.client_binary("mariadb-dump", "mysqldump"), f"--defaults-extra-file={defaults}", "--databases", "d"]
t0 = time.monotonic()
proc, err = cli.start_dump(argv, secrets=[], attempts=2, pause=0, stall=1)
print("returned after %.1f s, running: %s" % (time.monotonic() - t0, proc.poll() is None))
proc.kill()
"""


def test_a_real_dump_whose_syn_goes_unanswered_is_killed_and_started_again(tmp_path: Path) -> None:
    """In a network namespace of its own, 10.9.9.2 is on a link where nobody answers ARP: the
    dump's socket stays in SYN_SENT, as when a SYN is lost on the way to the database."""
    if os.geteuid() != 0 or not cli.shutil.which("unshare"):
        pytest.fail("this test needs root and unshare(1), as the real node does")
    defaults = tmp_path / "my.cnf"
    defaults.write_text("[client]\nuser=u\npassword=p\nhost=10.9.9.2\nport=3306\n")
    setup = "ip link set lo up && ip link add mbova type veth peer name mbovb && ip addr add 10.9.9.1/24 dev mbova"
    setup += " && ip link set mbova up && ip link set mbovb up"
    script = tmp_path / "run.py"
    script.write_text(_UNANSWERED)
    out = subprocess.run(
        ["unshare", "-n", "bash", "-c", f'{setup} && exec "$0" "$1" "$2"', sys.executable, str(script), str(defaults)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2])},
    )
    assert out.returncode == 0, out.stderr
    assert "(its connection to the database went unanswered for 1 s); attempt 1 of 2" in out.stdout, out.stdout
    assert "running: True" in out.stdout
    seconds = float(out.stdout.split("returned after ")[1].split(" s")[0])
    assert 1 <= seconds < 10


def test_a_restore_client_that_never_connected_runs_again_and_other_failures_do_not() -> None:
    from mysql_backup_operator.agent.errors import AgentError

    refused = cli._client_error("ERROR 2002 (HY000): Can't connect to server on '127.0.0.1' (115)", 1, what="r")
    assert isinstance(refused, cli._NotConnected)
    assert refused.error.reason == "DatabaseUnavailable"
    duplicate = cli._client_error("ERROR 1062 (23000) at line 2003: Duplicate entry '1' for key 'PRIMARY'", 1, what="r")
    assert isinstance(duplicate, AgentError) and not isinstance(duplicate, cli._NotConnected)
    lost = cli._client_error("ERROR 2013 (HY000) at line 9: Lost connection to server during query", 1, what="r")
    assert not isinstance(lost, cli._NotConnected)  # it had run statements: never run again

    calls: list[int] = []

    def flaky(last: bool) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise refused
        return "loaded"

    assert cli._with_connect_retries(flaky, tool="mysql", pause=0) == "loaded" and len(calls) == 3

    def never(last: bool) -> str:
        raise refused

    with pytest.raises(AgentError) as info:
        cli._with_connect_retries(never, tool="mysql", attempts=2, pause=0)
    assert info.value is refused.error


def test_the_real_client_reports_a_refused_connection_as_never_connected(tmp_path: Path) -> None:
    from mysql_backup_operator.agent.config import DbConfig
    from mysql_backup_operator.agent.sqlstream import mysql_command, write_defaults_file

    db = DbConfig(host="127.0.0.1", port=1, user="u", password="p", databases=(), tls_enabled=False, tls_ca_file=None)
    defaults = write_defaults_file(db, str(tmp_path))
    argv = mysql_command(binary=cli.client_binary("mariadb", "mysql"), defaults_file=defaults, db=db)
    assert "--skip-reconnect" in argv
    out = subprocess.run(argv, input=b"SELECT 1;\n", capture_output=True, timeout=30)
    assert out.returncode != 0
    assert isinstance(cli._client_error(out.stderr.decode(), out.returncode, what="r"), cli._NotConnected)


def _db_config(port: int) -> AgentConfig:
    import json

    from mysql_backup_operator.contract import config

    raw = {"database": {"host": "127.0.0.1", "port": port, "user": "u"}, "storage": {}}
    return config.load({config.ENV_CONFIG: json.dumps(raw), config.ENV_DB_PASSWORD: "s3cr3t-pw"})


def test_the_first_session_that_never_connected_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """One lost SYN (a 10 s connect timeout) used to fail a backup's metadata step or a restore's
    credentials check outright; it now gets the dump's three attempts."""
    import pymysql
    from mysql_backup_operator.agent.errors import AgentError
    from mysql_backup_operator.api import Reason

    calls: list[int] = []

    def flaky(**kw: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '10.0.0.1' (timed out)")
        return "session"

    monkeypatch.setattr(pymysql, "connect", flaky)
    assert cli.connect(_db_config(3306), pause=0) == "session" and len(calls) == 3

    calls.clear()

    def denied(**kw: object) -> str:
        calls.append(1)
        raise pymysql.err.OperationalError(1045, "Access denied for user 'u' (using password: YES)")

    monkeypatch.setattr(pymysql, "connect", denied)
    with pytest.raises(AgentError) as info:
        cli.connect(_db_config(3306), pause=0)
    assert info.value.reason == Reason.AUTHENTICATION_FAILED and len(calls) == 1


def test_a_refused_first_session_fails_database_unavailable_after_three_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a real closed port: pymysql's refusal is classified, retried and finally reported,
    and the password appears nowhere in what is reported."""
    from mysql_backup_operator.agent.errors import AgentError
    from mysql_backup_operator.api import Reason

    with pytest.raises(AgentError) as info:
        cli.connect(_db_config(1), pause=0)
    assert len([r for r in caplog.records if "did not connect" in r.getMessage()]) == 2
    assert info.value.reason == Reason.DATABASE_UNAVAILABLE and not info.value.permanent
    assert "s3cr3t-pw" not in str(info.value)
