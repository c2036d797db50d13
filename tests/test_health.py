"""/healthz sees a database that answers reads but cannot take writes: read-only, or on a
full disk. Both are SQLite's own signals, produced for real (no mocks)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from starlette.testclient import TestClient

from tests.helpers import make_settings, signed_in
from webapp.app import create_app
from webapp.migrate import upgrade_to_head


def _app_on(path: Path):
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    return create_app(make_settings(url))


def test_healthz_is_200_when_reads_and_writes_work(tmp_path):
    with TestClient(_app_on(tmp_path / "ok.db"), follow_redirects=False) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_read_only_database_is_503_with_its_reason(tmp_path):
    app = _app_on(tmp_path / "ro.db")
    engine = app.state.services.db.engine
    with TestClient(app, follow_redirects=False) as client:
        token = signed_in(client)
        # From now on every connection refuses writes, as a read-only file or mount does.
        event.listen(
            engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA query_only = ON")
        )
        engine.dispose()
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "reason": "read_only"}
        # Reads still work; a write gets a 503 that says why, not "cannot reach".
        assert "Welcome, alice" in client.get("/").text
        page = client.patch(
            "/partial/alice", data={"username": "alicia"}, headers={"X-CSRF-Token": token}
        )
        assert page.status_code == 503
        assert "read-only" in page.text
        assert "cannot reach" not in page.text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own (the suite runs as root, as CI does)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"cannot mount a small disk: {mounted.stderr}"
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(folder: Path) -> None:
    with (folder / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def test_a_full_disk_is_503_with_its_own_reason(small_disk):
    app = _app_on(small_disk / "full.db")
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/healthz").status_code == 200
        _fill(small_disk)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "reason": "disk_full"}
        (small_disk / "filler").unlink()
        assert client.get("/healthz").status_code == 200
