"""The real services the integration tests start: PostgreSQL, `make server`, headless Chromium.

Everything listens on 127.0.0.1 on a free port and is stopped by the process-group id it was
started with. A missing program skips the test with the reason, except under
``XENT_REQUIRE_SERVICES=1`` (set by ``.ci/run``, which installs them): there it fails, so CI
can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# What every integration sweep adds: seconds-long CPU jobs that still log every record.
TINY = [
    "+debug=tiny",
    "trainer.verbose=false",
    "tracking.log_model=false",
    "data.n_samples=300",
    "data.n_test=60",
]


def need(available: bool, reason: str) -> None:
    """Skip (or, under XENT_REQUIRE_SERVICES=1, fail) when a service cannot run here."""
    if available:
        return
    if os.environ.get("XENT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"XENT_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``condition()`` until it is true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group this test started (then SIGKILL), and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    # Workers of a server (uvicorn) may outlive their parent for a moment.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server programs (apt package postgresql), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:port, trust auth, user postgres."""

    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def as_owner(self) -> list[str]:
        # initdb and postgres refuse to run as root: run them as the postgres user.
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> None:
        """initdb, start, wait until it accepts connections."""
        self.root.chmod(0o755)
        data, sockets = self.root / "data", self.root / "sock"
        for path in (data, sockets):
            path.mkdir()
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(sockets / "postgres.log"),
            "-o",
            f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )

    def create_database(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the cluster and delete its files."""
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self.as_owner,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "fast",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [*self.as_owner, str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr[-2000:]}")


def start_postgres() -> Postgres:
    """A running cluster, or a skip/fail saying why there is none."""
    bindir = postgres_bindir()
    need(bindir is not None, "PostgreSQL server not installed (apt-get install postgresql)")
    assert bindir is not None
    if os.geteuid() == 0:
        need(shutil.which("runuser") is not None, "runuser not found (util-linux)")
        need(_user_exists("postgres"), "no 'postgres' user (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        need(False, "psycopg not installed (pip install -e '.[scale]')")
    # /tmp rather than pytest's tmp dir: that one is private to root, and postgres must enter.
    server = Postgres(bindir, Path(tempfile.mkdtemp(prefix="xent-pg-")))
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    return server


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# --- the MLflow tracking server, as `make server` starts it ---------------------------------


@dataclass
class TrackingServer:
    """`make server` on 127.0.0.1:port with the given backend store."""

    backend_uri: str
    workdir: Path
    workers: int = 2  # 2 cores: the default 4 uvicorn workers would only compete
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # With accounts (`make server SERVER_AUTH=1`): the admin's password, handed over in a file.
    admin_password: str | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"mlflow-server-{self.port}.log"

    def start(self, timeout: float = 120.0) -> None:
        """Start it (again: same port, same store) and wait for /health."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            # The venv is already installed (make test did it): never reinstall from a test.
            "-o",
            ".venv/.installed",
            "-o",
            ".venv/.installed-scale",
            "server",
            f"DATABASE_URL={self.backend_uri}",
            f"SERVER_PORT={self.port}",
            f"ARTIFACTS_DIR={self.workdir / 'mlartifacts'}",
            f"SERVER_WORKERS={self.workers}",
            f"BIN={VENV_BIN}",
        ]
        if self.admin_password is not None:
            secret = self.workdir / "admin-password"
            secret.write_text(self.admin_password)
            secret.chmod(0o600)
            command += [
                "SERVER_AUTH=1",
                f"ADMIN_PASSWORD_FILE={secret}",
                f"AUTH_DATABASE_URL=sqlite:///{self.workdir / 'auth.db'}",
                f"AUTH_CONFIG={self.workdir / 'auth.ini'}",
            ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"`make server` on port {self.port} did not come up:\n{tail}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL to its process group), as a crash would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(20)
            self.process = None
        wait_until(lambda: not self.answers(), 20, f"port {self.port} to close")

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait until the port is closed."""
        if self.process is None:
            return
        stop_group(self.process)
        self.process = None
        wait_until(lambda: not self.answers(), 20, f"port {self.port} to close")


# --- headless Chromium -------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium() -> str:
    """Debian's chromium (apt package chromium), or a skip/fail saying it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need(path is not None, "chromium not installed (apt-get install chromium)")
    assert path is not None
    return path


def render(
    url: str,
    profile: Path,
    screenshot: Path | None = None,
    budget_ms: int = 20_000,
    window: str = "1400,1000",
) -> str:
    """Load ``url`` in headless Chromium; return the DOM after ``budget_ms`` of virtual time.

    Args:
        url: the page.
        profile: a fresh directory for the browser profile.
        screenshot: also save a PNG of the page here.
        budget_ms: virtual time the page gets to load and render (scripts, fetches).
        window: viewport size "width,height".

    Returns:
        The serialised DOM.
    """
    base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"]
    timing = [f"--virtual-time-budget={budget_ms}"]
    result = subprocess.run(
        [*base, *timing, "--dump-dom", url], capture_output=True, text=True, timeout=180
    )
    if result.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom {url} failed: {result.stderr[-2000:]}")
    if screenshot is not None:
        shot = subprocess.run(
            [*base, *timing, f"--screenshot={screenshot}", url],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if shot.returncode != 0 or not screenshot.exists():
            raise RuntimeError(f"chromium --screenshot {url} failed: {shot.stderr[-2000:]}")
    return result.stdout
