"""The monitor job: a run, then its alerts and the action on violations. `kiln monitor run`, the local
schedule and the cluster's CronJob all run this."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kiln.errors import KilnError
from kiln.monitoring.alerts import Alert, send_alerts
from kiln.monitoring.retrain import RetrainFailure, Retraining, check_action, retrain
from kiln.monitoring.run import MonitorRun, publish_outputs, run_monitor, write_result
from kiln.monitoring.schedule import check_webhooks
from kiln.progress import Progress, no_progress
from kiln.workspace import Workspace


def monitor_job(ws: Workspace, endpoint: str, since: datetime | None = None, until: datetime | None = None,
                webhooks: list[str] | tuple[str, ...] = (), on_violation: str | None = None,
                progress: Progress = no_progress, model: str | None = None) -> MonitorRun:

    check_action(on_violation)
    check_webhooks(list(webhooks))
    result = run_monitor(ws, endpoint, since, until, progress, model=model)
    if not result.violations:
        return result
    alerts: list[Alert] | None = None
    retrained: Retraining | RetrainFailure | None = None
    urls = list(dict.fromkeys([*ws.settings.monitoring.webhooks, *webhooks]))
    if urls:
        progress(f"alerting {len(urls)} webhook(s)")
        alerts = send_alerts(urls, result)
    if on_violation == "retrain":
        try:
            retrained = retrain(ws, result.model, progress)
        except KilnError as exc:  # the run's findings stand; the failed retraining is part of them
            retrained = RetrainFailure(str(exc))
    if alerts is None and retrained is None:
        return result
    result = replace(result, alerts=alerts, retrain=retrained)
    write_result(result)
    publish_outputs(ws, result)
    return result
