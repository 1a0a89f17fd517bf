"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary directory, loopback only."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: $PATH first, then the usual Debian/Homebrew places."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for pattern in SEARCH:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
                return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a server on a free loopback port and yield its URL; stop it and delete its files afterwards.

    initdb refuses to run as root: as root the cluster belongs to the ``postgres`` (else ``nobody``) user.
    """
    prefix: list[str] = []
    user = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam(name)
                break
        if user is None or shutil.which("runuser") is None:
            raise RuntimeError("running as root without a 'postgres'/'nobody' user or runuser")
        prefix = ["runuser", "-u", user.pw_name, "--"]
    root = Path(tempfile.mkdtemp(prefix="tiergate-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if user is not None:
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = _free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "tiergate", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], **run)  # type: ignore[call-overload]
        options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=50"
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
                        "-l", str(root / "log"), "start"], **run)  # type: ignore[call-overload]
        try:
            yield f"postgresql://tiergate@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           check=False, capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
