"""A private PostgreSQL cluster from the machine's PostgreSQL binaries (``initdb`` + ``pg_ctl``), ready for Debezium.

* First start: ``initdb`` into ``<home>/postgres/data`` (superuser ``COACH_PG_USER``, trust authentication, UTF8,
  C locale), then the database ``COACH_PG_DATABASE`` is created.
* Every start: ``coach.conf`` (included from ``postgresql.conf``) is rewritten from the settings: loopback only, the
  configured port, ``wal_level=logical`` with replication slots and WAL senders for Debezium's ``pgoutput`` plugin
  (https://www.postgresql.org/docs/current/logical-replication-config.html,
  https://debezium.io/documentation/reference/stable/connectors/postgresql.html#setting-up-postgresql).
* Running as root: PostgreSQL refuses to run as root, so ``initdb``/``pg_ctl`` run through ``runuser -u <user>`` as an
  unprivileged OS user (``COACH_PG_OS_USER``; default ``postgres`` when it exists, else a ``coach`` system user
  created with ``useradd``) that owns ``<home>/postgres`` and the log file. When that user cannot reach
  ``<home>/postgres`` (a parent directory it may not search, e.g. a clone under ``/root`` or another 0700 home), the
  data directory and the socket go to a directory of that user under :data:`RELOCATION_ROOTS` instead
  (``/var/lib/coach-postgres/<hash of COACH_HOME>``, else the same under the temporary directory), recorded in
  ``<home>/stack.json`` (:data:`STATE_KEY`) so that ``status`` and ``down`` find it, and shown in ``status``/``up``.
  The server log stays ``<home>/logs/postgres.log`` (opened by us and handed to the server). A home that already
  holds a cluster the user cannot reach is not moved: that is an error naming the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from stack.engine import Engine, PortClaim
from stack.errors import StackError
from stack.kafka import read_state, write_state
from stack.process import (
    cmdline_contains,
    failure,
    log_header,
    pid_alive,
    read_pid,
    terminate_group,
    write_pid,
)
from stack.settings import LOOPBACK, StackSettings

#: Settings file written into the data directory on every start and included from ``postgresql.conf``.
COACH_CONF = "coach.conf"
#: OS user created (when running as root and no ``postgres`` user exists) to run PostgreSQL.
DEFAULT_OS_USER = "coach"
#: Longest path of a Unix socket (``sun_path`` is 108 bytes including the terminating NUL).
MAX_SOCKET_PATH = 107
#: Seconds a psycopg readiness probe may take.
PROBE_TIMEOUT_S = 3
#: Where the cluster goes, in this order, when we run as root and the OS user cannot reach ``<home>/postgres``:
#: ``<root>/<hash of COACH_HOME>`` (see :func:`relocated_dir_for`). A root is used only when it is a real directory
#: owned by root that only root may write to (the temporary directory is shared with every local user).
RELOCATION_ROOTS: tuple[Path, ...] = (
    Path("/var/lib/coach-postgres"),
    Path(tempfile.gettempdir()) / "coach-postgres",
)
#: Key of ``<home>/stack.json`` holding the relocated cluster directory (absent: ``<home>/postgres``).
STATE_KEY = "postgres_dir"


def find_pg_bin_dir(configured: Path | None) -> Path:
    """Directory with ``initdb`` and ``pg_ctl``.

    Order: ``configured`` (``COACH_PG_BIN_DIR``), the highest ``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu
    layout), ``pg_config --bindir``, the directory of ``pg_ctl`` on ``PATH``.

    Raises:
        StackError: no PostgreSQL binaries found.
    """
    if configured is not None:
        if (configured / "pg_ctl").exists() and (configured / "initdb").exists():
            return configured
        raise StackError(f"COACH_PG_BIN_DIR={configured} has no pg_ctl/initdb")
    candidates: list[tuple[int, Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if bin_dir.parent.name.isdigit() and (bin_dir / "pg_ctl").exists() and (bin_dir / "initdb").exists():
            candidates.append((int(bin_dir.parent.name), bin_dir))
    if candidates:
        return max(candidates)[1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bin_dir = Path(result.stdout.strip())
        if result.returncode == 0 and (bin_dir / "pg_ctl").exists() and (bin_dir / "initdb").exists():
            return bin_dir
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None and (Path(pg_ctl).parent / "initdb").exists():
        return Path(pg_ctl).parent
    raise StackError(
        "PostgreSQL binaries (initdb, pg_ctl) not found; install PostgreSQL 15+ (Debian: `apt-get install "
        "postgresql`, which `bash stack/bootstrap.sh` does when run as root) or set COACH_PG_BIN_DIR"
    )


def socket_dir_for(home: Path, port: int) -> Path:
    """Directory of PostgreSQL's Unix socket: ``<home>/postgres/run``, or ``/tmp/coach-pg-<hash of home>`` when the
    socket path ``<dir>/.s.PGSQL.<port>`` would exceed the 107-byte Unix socket path limit."""
    preferred = home / "postgres" / "run"
    if len(str(preferred / f".s.PGSQL.{port}").encode()) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"coach-pg-{digest}"


def relocated_dir_for(root: Path, home: Path) -> Path:
    """``<root>/<first 16 hex digits of sha256(home)>``: the directory of ``home``'s cluster under a relocation
    root (one per COACH_HOME, the same on every start)."""
    return root / hashlib.sha256(str(home).encode()).hexdigest()[:16]


def _safe_root(root: Path) -> bool:
    """Create ``root`` (mode 0755) if missing; whether it is a directory (not a link) owned by root that neither
    group nor others may write to, so no other user can swap what lies inside."""
    try:
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = root.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class PostgresCluster(Engine):
    """The PostgreSQL cluster in ``<home>/postgres/data`` (or a relocated directory, see the module docs), managed
    with ``pg_ctl``. ``base_dir`` holds ``data/`` (``data_dir``); ``relocated`` is the relocated ``base_dir`` or
    ``None``."""

    name = "postgres"
    label = "PostgreSQL"

    def __init__(self, settings: StackSettings) -> None:
        super().__init__(settings)
        self._use(self._remembered_relocation())

    def _use(self, relocated: Path | None) -> None:
        s = self.settings
        self.relocated = relocated
        self.base_dir = s.postgres_dir if relocated is None else relocated
        self.data_dir = self.base_dir / "data"
        self.socket_dir = socket_dir_for(s.home, s.pg_port) if relocated is None else relocated / "run"

    def _remembered_relocation(self) -> Path | None:
        """The relocated directory of this home: the one in ``stack.json``, else (state lost) an existing cluster
        under a relocation root, when ``<home>/postgres`` holds none."""
        recorded = read_state(self.settings).get(STATE_KEY)
        if isinstance(recorded, str) and recorded:
            return Path(recorded)
        if (self.settings.pg_data_dir / "PG_VERSION").exists():
            return None
        for root in RELOCATION_ROOTS:
            candidate = relocated_dir_for(root, self.settings.home)
            if (candidate / "data" / "PG_VERSION").exists():
                return candidate
        return None

    @property
    def port(self) -> int:
        """The TCP port."""
        return self.settings.pg_port

    def port_claims(self) -> list[PortClaim]:
        """The TCP port."""
        return [PortClaim(self.settings.pg_port, "COACH_PG_PORT")]

    # --- who runs it ------------------------------------------------------------------------------------------

    @staticmethod
    def running_as_root() -> bool:
        """Whether this process is root (then PostgreSQL runs as :meth:`os_user`)."""
        return os.geteuid() == 0

    def os_user(self) -> str | None:
        """OS user running PostgreSQL when we are root; ``None`` when we are not root (we run it ourselves)."""
        if not self.running_as_root():
            return None
        if self.settings.pg_os_user:
            return self.settings.pg_os_user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return DEFAULT_OS_USER
        return "postgres"

    def _ensure_os_user(self, user: str) -> pwd.struct_passwd:
        """Look up ``user``, creating it as a system user without login when it is missing (root only)."""
        try:
            return pwd.getpwnam(user)
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"could not create OS user {user!r} to run PostgreSQL: {result.stderr.strip()}")
        return pwd.getpwnam(user)

    def _as_user(self, argv: list[str]) -> list[str]:
        user = self.os_user()
        if user is None:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", user, "--", *argv]

    def _chown(self, path: Path, pw: pwd.struct_passwd | None) -> None:
        if pw is not None:
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _reachable(self, path: Path, pw: pwd.struct_passwd) -> bool:
        """Whether OS user ``pw`` may enter and write ``path`` (every parent searchable), asked as that user."""
        probe = subprocess.run(
            self._as_user(["test", "-x", str(path), "-a", "-w", str(path)]), cwd="/", capture_output=True, check=False
        )
        return probe.returncode == 0

    def _choose_location(self, pw: pwd.struct_passwd | None) -> None:
        """Where the cluster lives (root only: ``<home>/postgres`` if the OS user can reach it, else relocated,
        recorded in ``stack.json``).

        Raises:
            StackError: the home already holds a cluster the OS user cannot reach, or no relocation root works.
        """
        if pw is None:
            return
        s = self.settings
        if self.relocated is not None:
            self.relocated.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(self.relocated, pw)
            if self._reachable(self.relocated, pw):
                return
            raise StackError(f"PostgreSQL's OS user {pw.pw_name!r} cannot reach its data directory {self.relocated}")
        s.postgres_dir.mkdir(parents=True, exist_ok=True)
        self._chown(s.postgres_dir, pw)
        if self._reachable(s.postgres_dir, pw):
            return
        cannot = f"PostgreSQL runs as OS user {pw.pw_name!r} (root may not run it), who cannot reach {s.postgres_dir}"
        if (s.pg_data_dir / "PG_VERSION").exists():
            raise StackError(
                f"{cannot}, which already holds a cluster: make every parent directory searchable (chmod o+x) or "
                "set COACH_HOME to another directory"
            )
        tried = []
        for root in RELOCATION_ROOTS:
            candidate = relocated_dir_for(root, s.home)
            if not _safe_root(root):
                tried.append(f"{root} (not a root-owned directory only root may write)")
                continue
            try:
                candidate.mkdir(mode=0o700, exist_ok=True)
                if candidate.is_symlink() or not candidate.is_dir():
                    raise OSError(f"{candidate} is not a directory")
                self._chown(candidate, pw)
                os.chmod(candidate, 0o700)
            except OSError as exc:
                tried.append(f"{candidate} ({exc})")
                continue
            if self._reachable(candidate, pw):
                self._use(candidate)
                write_state(s, **{STATE_KEY: str(candidate)})
                log_header(self.log_path, f"{cannot}: data directory and socket in {candidate}")
                return
            tried.append(f"{candidate} (not reachable either)")
        raise StackError(
            f"{cannot}, and no other place worked ({'; '.join(tried)}): make every parent directory searchable "
            "(chmod o+x) or set COACH_HOME to a directory outside /root"
        )

    # --- probes -------------------------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of the postmaster of our data directory (from ``postmaster.pid``), or ``None``."""
        pid = read_pid(self.data_dir / "postmaster.pid")
        if pid is None:
            pid = read_pid(self.pid_path)
        if pid is None or not pid_alive(pid) or not cmdline_contains(pid, str(self.data_dir)):
            return None
        return pid

    def _connect(self, dbname: str) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.settings.pg_port,
            user=self.settings.pg_user,
            dbname=dbname,
            connect_timeout=PROBE_TIMEOUT_S,
            autocommit=True,
        )

    def is_ready(self) -> bool:
        """The server accepts a TCP connection to the projections database and answers ``SELECT 1``."""
        try:
            with self._connect(self.settings.pg_database) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def check_prerequisites(self) -> None:
        """PostgreSQL binaries are found; when root, ``runuser`` exists."""
        find_pg_bin_dir(self.settings.pg_bin_dir)
        if self.running_as_root() and shutil.which("runuser") is None and not Path("/usr/sbin/runuser").exists():
            raise StackError("running as root needs `runuser` (util-linux) to start PostgreSQL as another user")

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _run(self, argv: list[str], what: str) -> None:
        """Run a PostgreSQL tool (as the OS user when root), output appended to the engine log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                self._as_user(argv),
                cwd=self.base_dir,  # the OS user may not be able to read our current directory
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=self.settings.start_timeout_s + 30,
                check=False,
            )
        if result.returncode != 0:
            raise failure(f"{what} failed (exit {result.returncode})", self.log_path)

    def _prepare_dirs(self, pw: pwd.struct_passwd | None) -> None:
        s = self.settings
        self._choose_location(pw)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.base_dir, pw)
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._chown(self.socket_dir, pw)
        # pg_ctl (as the OS user) appends to the log: create it and hand it over.
        s.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        self._chown(self.log_path, pw)

    def _initdb_if_needed(self, bin_dir: Path, pw: pwd.struct_passwd | None) -> None:
        version_file = self.data_dir / "PG_VERSION"
        if version_file.exists():
            self._check_version(bin_dir, version_file.read_text(encoding="ascii").strip())
            return
        if self.data_dir.exists():  # left over from an interrupted initdb: nothing of value in it
            shutil.rmtree(self.data_dir)
        log_header(self.log_path, f"initdb {self.data_dir}")
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.settings.pg_user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
                "--no-sync",
            ],
            "initdb",
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:
            handle.write(
                f"\n# Settings of `coach stack`, rewritten on every start.\ninclude_if_exists = '{COACH_CONF}'\n"
            )

    def _check_version(self, bin_dir: Path, data_version: str) -> None:
        result = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False)
        match = re.search(r"(\d+)", result.stdout)
        if match and match.group(1) != data_version:
            raise StackError(
                f"{self.data_dir} was created by PostgreSQL {data_version} but the binaries in {bin_dir} are "
                f"version {match.group(1)}; set COACH_PG_BIN_DIR to PostgreSQL {data_version}'s bin directory or "
                f"remove {self.settings.postgres_dir}"
            )

    def coach_conf(self) -> str:
        """Contents of ``coach.conf``: network, logical decoding for Debezium, UTC."""
        s = self.settings
        settings = {
            "listen_addresses": f"'{LOOPBACK}'",
            "port": str(s.pg_port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "logging_collector": "off",
        }
        lines = ["# Generated by `coach stack` on every start from COACH_* settings; edits are overwritten."]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _create_database(self) -> None:
        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.pg_database,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.pg_database)))

    def start(self) -> int:
        """Choose where the cluster lives (relocated when root's OS user cannot reach COACH_HOME), initdb on first
        start, write ``coach.conf``, ``pg_ctl start -w``, create the database. Returns the postmaster's pid."""
        s = self.settings
        bin_dir = find_pg_bin_dir(s.pg_bin_dir)
        user = self.os_user()
        pw = self._ensure_os_user(user) if user is not None else None
        self._prepare_dirs(pw)
        self._initdb_if_needed(bin_dir, pw)
        conf = self.data_dir / COACH_CONF
        conf.write_text(self.coach_conf(), encoding="utf-8")
        self._chown(conf, pw)
        log_header(self.log_path, f"pg_ctl start on {LOOPBACK}:{s.pg_port}")
        self._run(
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                # Relocated: the OS user cannot open the log under COACH_HOME; without -l the server writes to
                # pg_ctl's stdout, which _run opened on that same log.
                *([] if self.relocated is not None else ["-l", str(self.log_path)]),
                "-w",
                "-t",
                str(int(s.start_timeout_s)),
                "-s",
            ],
            "pg_ctl start",
        )
        pid = read_pid(self.data_dir / "postmaster.pid")
        if pid is None:
            raise failure("PostgreSQL started but wrote no postmaster.pid", self.log_path)
        write_pid(self.pid_path, pid)
        self.wait_ready(pid, f"PostgreSQL on {LOOPBACK}:{s.pg_port}", self._probe_server)
        try:
            self._create_database()
        except psycopg.Error as exc:
            raise failure(f"could not create database {s.pg_database!r}: {exc}", self.log_path) from exc
        return pid

    def _probe_server(self) -> bool:
        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def stop(self) -> bool:
        """``pg_ctl stop -m fast -w``; if that fails, SIGTERM/SIGKILL the postmaster's process group."""
        pid = self.pid()
        if pid is None:
            self.clear_pid_file()
            return False
        bin_dir = find_pg_bin_dir(self.settings.pg_bin_dir)
        with contextlib.suppress(StackError, subprocess.TimeoutExpired):
            self._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.settings.stop_timeout_s)),
                    "-s",
                ],
                "pg_ctl stop",
            )
        if pid_alive(pid):
            terminate_group(pid, timeout_s=self.settings.stop_timeout_s)
        self.clear_pid_file()
        return True

    def detail(self) -> str:
        """DSN, and where the data is when it is not under COACH_HOME."""
        if self.relocated is None:
            return self.settings.pg_dsn
        return (
            f"{self.settings.pg_dsn}; data in {self.data_dir} (OS user {self.os_user() or '?'!r} cannot reach "
            f"{self.settings.postgres_dir})"
        )
