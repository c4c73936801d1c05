"""The agent's loop: poll for the newest artifact of its target, download, verify, install, smoke-test, switch;
beat to the platform and upload sampled inputs and outputs. A bad artifact never becomes the active one."""

from __future__ import annotations

import json
import random
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln_edge import __version__
from kiln_edge.bundle import Rejected, load_public_key, verify
from kiln_edge.fetch import FetchError, download, get_json, post_json
from kiln_edge.slots import Slots

MAX_UPLOAD = 1000  # samples per upload request


def log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"{stamp} kiln-edge: {message}", file=sys.stderr, flush=True)


@dataclass
class AgentConfig:
    server: str
    device_id: str
    target: str
    public_key: Path
    state: Path
    interval: float = 30.0
    sample_rate: float = 0.0  # share of predictions whose input and output are sent back
    download_attempts: int = 5
    seed: int | None = None


@dataclass
class Agent:
    config: AgentConfig
    model: Any = None
    last_error: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)  # artifact id -> why (not downloaded again)

    def __post_init__(self) -> None:
        self.key = load_public_key(self.config.public_key)
        self.slots = Slots(self.config.state)
        self.server = self.config.server.rstrip("/")
        self.random = random.Random(self.config.seed)
        self.spool = self.config.state / "samples.jsonl"
        self.lock = threading.Lock()

    # --- start-up ----------------------------------------------------------------------------------------
    def load_active(self) -> None:
        """Load the active slot; if it no longer verifies or fails its smoke test, fall back to the other slot."""
        active = self.slots.active_name()
        for name in ([active, "b" if active == "a" else "a"] if active else []):
            try:
                manifest = verify(self.slots.folder(name), self.key, self.config.target)
                self.model = self._load(name, manifest)
            except Exception as exc:  # noqa: BLE001 - any failure: try the other slot
                log(f"slot {name} cannot run: {exc}")
                continue
            if name != active:
                self.slots.activate(name)
                log(f"fell back to slot {name}: {manifest['id']}")
            log(f"running {manifest['id']} from slot {name}")
            return

    def _load(self, slot: str, manifest: dict[str, Any]) -> Any:
        from kiln_edge.model import CompiledModel

        model = CompiledModel(self.slots.folder(slot), manifest)
        model.smoke_test()
        return model

    # --- one poll -----------------------------------------------------------------------------------------
    def poll(self) -> str | None:
        """Install the newest artifact if there is a newer, valid one; returns its id when it became active."""
        try:
            latest = get_json(f"{self.server}/v1/targets/{self.config.target}/latest")
        except FetchError as exc:
            self.last_error = str(exc)
            log(f"poll failed: {exc}")
            return None
        artifact = latest.get("id", "")
        running = self.model.manifest if self.model else None
        if running and running["id"] == artifact:
            self.last_error = None
            return None
        if artifact in self.rejected:
            return None
        try:
            return self._install(artifact, latest, running)
        except Rejected as exc:
            self.rejected[artifact] = str(exc)
            self.last_error = f"rejected {artifact}: {exc}"
            log(f"rejected {artifact}: {exc}; still running {running['id'] if running else 'nothing'}")
        except FetchError as exc:
            self.last_error = str(exc)
            log(f"download of {artifact} failed: {exc}; will try again")
        return None

    def _install(self, artifact: str, latest: dict[str, Any], running: dict[str, Any] | None) -> str:
        if not artifact or "/" in artifact or artifact.startswith("."):
            raise Rejected(f"the server named an invalid artifact id {artifact!r}")
        folder = self.config.state / "downloads" / artifact
        folder.mkdir(parents=True, exist_ok=True)
        log(f"downloading {artifact} ({sum(f['size'] for f in latest['files'].values())} bytes)")
        for name, info in sorted(latest["files"].items()):
            if "/" in name or name.startswith("."):
                raise Rejected(f"the server named an invalid file {name!r}")
            if not (folder / name).exists():
                download(f"{self.server}/v1/artifacts/{artifact}/{name}", folder / name, int(info["size"]),
                         attempts=self.config.download_attempts, log=log)
        try:
            manifest = verify(folder, self.key, self.config.target, running)
        except Rejected:
            shutil.rmtree(folder, ignore_errors=True)  # a later publish starts from a clean download
            raise
        slot = self.slots.install(folder)
        try:
            model = self._load(slot, manifest)
        except Exception as exc:  # noqa: BLE001 - a model that does not run is rejected, whatever the cause
            raise Rejected(f"smoke test failed: {exc}") from None
        self.slots.activate(slot)
        self.model = model
        self.last_error = None
        log(f"switched to {artifact} (slot {slot})")
        return artifact

    # --- reporting ----------------------------------------------------------------------------------------
    def health(self) -> str:
        if self.model is None:
            return "failing"
        return "degraded" if self.last_error else "ok"

    def heartbeat(self) -> None:
        manifest = self.model.manifest if self.model else None
        body = {"target": self.config.target, "health": self.health(),
                "active": manifest["id"] if manifest else None,
                "model": f"{manifest['model']['name']}/{manifest['model']['version']}" if manifest else None,
                "interval_seconds": self.config.interval,
                "details": {"agent": __version__, "last_error": self.last_error, "rejected": self.rejected}}
        try:
            post_json(f"{self.server}/v1/devices/{self.config.device_id}/heartbeat", body)
        except FetchError as exc:
            log(f"heartbeat failed: {exc}")

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        model = self.model
        if model is None:
            raise RuntimeError("no model is installed yet")
        started = time.perf_counter()
        predictions = model.predict(rows)
        latency = (time.perf_counter() - started) * 1000
        if self.config.sample_rate and self.random.random() < self.config.sample_rate:
            self._spool({"inference_id": uuid.uuid4().hex, "timestamp": datetime.now(UTC).isoformat(),
                         "artifact": model.manifest["id"], "model": model.manifest["model"]["name"],
                         "request": {"instances": rows}, "response": {"predictions": predictions},
                         "latency_ms": round(latency, 3)})
        return {"predictions": predictions, "artifact": model.manifest["id"]}

    def _spool(self, record: dict[str, Any]) -> None:
        with self.lock, self.spool.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def upload_samples(self) -> int:
        """Send spooled samples; they are removed only once the server stored them."""
        with self.lock:
            if not self.spool.exists():
                return 0
            sending = self.spool.with_suffix(".sending")
            if not sending.exists():
                self.spool.rename(sending)
        lines = [line for line in sending.read_text().splitlines() if line.strip()]
        sent = 0
        try:
            for i in range(0, len(lines), MAX_UPLOAD):
                chunk = [json.loads(line) for line in lines[i:i + MAX_UPLOAD]]
                post_json(f"{self.server}/v1/devices/{self.config.device_id}/capture", {"records": chunk})
                sent = i + len(chunk)
        except FetchError as exc:
            log(f"sample upload failed after {sent} of {len(lines)}: {exc}; kept for the next try")
            sending.write_text("".join(line + "\n" for line in lines[sent:]))
            return sent
        sending.unlink()
        return sent

    def cycle(self) -> None:
        self.poll()
        self.upload_samples()
        self.heartbeat()

