"""The monitor job: a run, then its alerts and the action on violations. `kiln monitor run`, the local
schedule and the cluster's CronJob all run this."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.monitoring.alerts import send_alerts
from kiln.monitoring.retrain import check_action, retrain
from kiln.monitoring.run import run_monitor
from kiln.monitoring.schedule import check_webhooks
from kiln.progress import Progress, no_progress
from kiln.workspace import Workspace


def monitor_job(ws: Workspace, endpoint: str, since: datetime | None = None, until: datetime | None = None,
                webhooks: list[str] | tuple[str, ...] = (), on_violation: str | None = None,
                progress: Progress = no_progress) -> dict[str, Any]:

    check_action(on_violation)
    check_webhooks(list(webhooks))
    result = run_monitor(ws, endpoint, since, until, progress)
    if result["violations"]:
        urls = list(dict.fromkeys([*ws.settings.monitoring.webhooks, *webhooks]))
        if urls:
            progress(f"alerting {len(urls)} webhook(s)")
            result["alerts"] = send_alerts(urls, result)
        if on_violation == "retrain":
            try:
                result["retrain"] = retrain(ws, result["model"], progress)
            except KilnError as exc:  # the run's findings stand; the failed retraining is part of them
                result["retrain"] = {"error": str(exc), "summary": f"FAILED: {exc}"}
    if "alerts" in result or "retrain" in result:
        Path(result["outputs"], "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
