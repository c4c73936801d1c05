"""Alerts: a JSON summary of a run's violations POSTed to each configured webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.monitoring.run import MonitorRun

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Alert:
    """One webhook's answer: its HTTP status, or the error that kept the alert from arriving."""

    url: str
    status: int | None
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url, "status": self.status, "ok": self.ok}
        if self.error is not None:
            data["error"] = self.error
        return data


def alert_payload(run: MonitorRun) -> dict[str, Any]:
    return {"source": "kiln-monitor", "endpoint": run.endpoint, "run": run.run, "model": run.model,
            "window": run.window.to_dict(), "rows": run.rows, "violations": [v.to_dict() for v in run.violations],
            "report": run.report}


def send_alerts(urls: list[str], run: MonitorRun) -> list[Alert]:
    """POST the alert to every URL; a webhook that fails is reported in the result, never raised."""
    import httpx

    payload = alert_payload(run)
    sent = []
    for url in urls:
        try:
            res = httpx.post(url, json=payload, timeout=TIMEOUT_SECONDS)
            sent.append(Alert(url, res.status_code, res.is_success))
        except httpx.HTTPError as exc:
            sent.append(Alert(url, None, False, str(exc) or type(exc).__name__))
    return sent
