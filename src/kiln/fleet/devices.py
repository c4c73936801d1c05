"""The fleet: one row per device, replaced by each heartbeat (SQLite in the workspace, WAL so readers never wait)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.errors import InputError
from kiln.workspace import Workspace

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEALTH = ("ok", "degraded", "failing")
MISSED_BEATS = 3  # a device silent for this many of its own heartbeat intervals is shown as offline


@dataclass
class Device:
    device_id: str
    target: str
    active: str | None  # the artifact id it serves
    model: str | None
    health: str
    last_seen: str
    interval_seconds: float
    details: dict[str, Any]
    status: str = ""  # health, or "offline" when it stopped beating


def fleet_db(ws: Workspace) -> Path:
    return ws.folder("artifacts") / "fleet.db"


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("""CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, target TEXT, active TEXT,
                    model TEXT, health TEXT, last_seen TEXT, interval_seconds REAL, details TEXT)""")
    return conn


def check_heartbeat(device_id: str, body: Any) -> Device:
    """A heartbeat body checked field by field; an InputError names the field."""
    if not DEVICE_ID.match(device_id):
        raise InputError(f"device id '{device_id[:80]}': use 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(body, dict):
        raise InputError("heartbeat: the body must be a JSON object")
    for name in ("target", "health"):
        if not isinstance(body.get(name), str):
            raise InputError(f"heartbeat field '{name}' must be text")
    if body["health"] not in HEALTH:
        raise InputError(f"heartbeat field 'health' must be one of {', '.join(HEALTH)}")
    for name in ("active", "model"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InputError(f"heartbeat field '{name}' must be text or null")
    interval = body.get("interval_seconds", 30)
    if not isinstance(interval, (int, float)) or not 0 < interval <= 86400:
        raise InputError("heartbeat field 'interval_seconds' must be a number in (0, 86400]")
    details = body.get("details", {})
    if not isinstance(details, dict):
        raise InputError("heartbeat field 'details' must be an object")
    return Device(device_id=device_id, target=body["target"], active=body.get("active"), model=body.get("model"),
                  health=body["health"], last_seen=datetime.now(UTC).isoformat(timespec="seconds"),
                  interval_seconds=float(interval), details=details)


def record_heartbeat(path: Path, device: Device) -> None:
    with _connect(path) as conn:
        conn.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (device.device_id, device.target, device.active, device.model, device.health,
                      device.last_seen, device.interval_seconds, json.dumps(device.details)))
    conn.close()


def list_devices(path: Path, now: datetime | None = None) -> list[Device]:
    """Every device that ever beat, most recently seen first, with ``status`` offline when it went quiet."""
    if not path.is_file():
        return []
    now = now or datetime.now(UTC)
    conn = _connect(path)
    try:
        rows = conn.execute("SELECT * FROM devices ORDER BY last_seen DESC").fetchall()
    finally:
        conn.close()
    out = []
    for row in rows:
        device_id, target, active, model, health, last_seen, interval, details = row
        device = Device(device_id=device_id, target=target, active=active, model=model, health=health,
                        last_seen=last_seen, interval_seconds=interval, details=json.loads(details or "{}"))
        quiet = (now - datetime.fromisoformat(device.last_seen)).total_seconds()
        device.status = "offline" if quiet > MISSED_BEATS * device.interval_seconds else device.health
        out.append(device)
    return out
