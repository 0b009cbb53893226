"""A throwaway PostgreSQL server on loopback for the production-profile tests.

`HUNYUAN_TEST_POSTGRES_URL` wins when set (a fresh database is created on that server when the
role may, else the URL is used as given). Otherwise the apt-installed binaries
(`/usr/lib/postgresql/<major>/bin`) build a cluster in a temporary folder: owned by the
`postgres` OS user when we run as root (initdb refuses root), trust auth, unix socket in the
folder, listening on 127.0.0.1 only, fsync off (the data is thrown away). Missing binaries fail
the test with the install command: this path must be exercised, never skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

URL_ENV = "HUNYUAN_TEST_POSTGRES_URL"
INSTALL_HINT = "apt-get install -y postgresql"
DATABASE = "hunyuan"


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgresql://user@127.0.0.1:port/db
    started_in_s: float  # wall time to initdb + start + create the database (0 for an external URL)
    external: bool


def find_pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, or fail with the fix."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: _major(p.parent.name),
        reverse=True,
    )
    for bin_dir in candidates:
        if (bin_dir / "pg_ctl").is_file():
            return bin_dir
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return Path(on_path[0]).parent  # type: ignore[arg-type]
    pytest.fail(
        f"PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb). "
        f"Install them with `{INSTALL_HINT}` or set {URL_ENV}=postgresql://user:pw@host:port/db.",
        pytrace=False,
    )


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _world_traversable_tmp() -> str | None:
    """The temp dir, unless the `postgres` user could not enter it (then /tmp): pytest's
    /tmp/pytest-of-root is 0700, so the cluster cannot live under tmp_path."""
    tmp = tempfile.gettempdir()
    return tmp if os.geteuid() != 0 or os.stat(tmp).st_mode & 0o001 else "/tmp"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_db_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the `postgres` OS user then."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]


def _run(argv: list[str], what: str, timeout: float = 60) -> None:
    proc = subprocess.run(
        _as_db_user(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _wait_for_connection(url: str, deadline_s: float = 30) -> None:
    import psycopg2

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def local_postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temporary folder; pg_ctl stop -m immediate on exit."""
    import psycopg2

    bin_dir = find_pg_bin()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="hunyuan-pg-", dir=_world_traversable_tmp()))
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    data = root / "data"
    log = root / "server.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    running = False
    try:
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"no `postgres` OS user to run the server as; `{INSTALL_HINT}` adds it")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust"]
        _run([*initdb, "-E", "UTF8", "--no-instructions", "--no-sync"], "initdb")
        for _attempt in range(5):  # a free port can be taken between probing and binding
            port = free_port()
            options = (
                f"-p {port} -k {shlex.quote(str(root))} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            start = [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30"]
            proc = subprocess.run(
                _as_db_user([*start, "start"]),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if proc.returncode == 0:
                running = True
                break
            if "Address already in use" not in _read(log):
                pytest.fail(f"pg_ctl start failed:\n{proc.stdout}{proc.stderr}\n{_read(log)}")
        if not running:
            pytest.fail(f"pg_ctl start found no free port:\n{_read(log)}")
        admin = f"postgresql://{user}@127.0.0.1:{port}/postgres"
        _wait_for_connection(admin)
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{DATABASE}"')
        conn.close()
        url = f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}"
        yield PostgresServer(url, time.monotonic() - started, external=False)
    finally:
        if running:
            subprocess.run(
                _as_db_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def external_postgres(url: str) -> Iterator[PostgresServer]:
    """A fresh database on the given server when allowed, else the URL's own database."""
    import psycopg2

    started = time.monotonic()
    name = f"hunyuan_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
    except psycopg2.Error:
        yield PostgresServer(url, time.monotonic() - started, external=True)
        return
    fresh = _url_with_database(url, name)
    try:
        yield PostgresServer(fresh, time.monotonic() - started, external=True)
    finally:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _url_with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The server the tests use: $HUNYUAN_TEST_POSTGRES_URL, else a local throwaway cluster."""
    url = os.environ.get(URL_ENV)
    if url:
        with external_postgres(libpq_url(url)) as server:
            yield server
    else:
        with local_postgres() as server:
            yield server


def libpq_url(url: str) -> str:
    """The URL psycopg2.connect accepts (no SQLAlchemy driver suffix)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def sqlalchemy_url(url: str) -> str:
    """Name the driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (v3), which
    dagster-postgres 0.29 does not install (it depends on psycopg2-binary only)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgres", "postgresql") else url


def dagster_yaml_for(url: str) -> str:
    """Instance config with run, event-log and schedule storage in PostgreSQL."""
    return (
        "storage:\n"
        "  postgres:\n"
        f'    postgres_url: "{sqlalchemy_url(url)}"\n'
        "telemetry:\n"
        "  enabled: false\n"
    )
