"""Alerts: a JSON summary of a run's violations POSTed to each configured webhook."""

from __future__ import annotations

from typing import Any

TIMEOUT_SECONDS = 10.0


def alert_payload(result: dict[str, Any]) -> dict[str, Any]:
    return {"source": "kiln-monitor", "endpoint": result["endpoint"], "run": result["run"],
            "model": result["model"], "window": result["window"], "rows": result["rows"],
            "violations": result["violations"], "report": result.get("report")}


def send_alerts(urls: list[str], result: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the alert to every URL; a webhook that fails is reported in the result, never raised."""
    import httpx

    payload = alert_payload(result)
    sent = []
    for url in urls:
        try:
            res = httpx.post(url, json=payload, timeout=TIMEOUT_SECONDS)
            sent.append({"url": url, "status": res.status_code, "ok": res.is_success})
        except httpx.HTTPError as exc:
            sent.append({"url": url, "status": None, "ok": False, "error": str(exc) or type(exc).__name__})
    return sent
