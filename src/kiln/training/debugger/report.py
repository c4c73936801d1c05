"""The Debugger's outputs for a run: findings.json, loss and profile plots, an HTML page, tags and a metric."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.training.debugger import plots
from kiln.training.debugger.observation import Finding
from kiln.training.debugger.profiler import ProfileSummary
from kiln.training.debugger.session import Debugger
from kiln.workspace import Workspace

ARTIFACT_FOLDER = "debugger"
FINDINGS_ARTIFACT = f"{ARTIFACT_FOLDER}/findings.json"
# Run tags: how many findings, which rule stopped the training, and where findings.json is among the artifacts.
FINDINGS_TAG, STOPPED_TAG, PATH_TAG = "kiln.debugger_findings", "kiln.debugger_stopped", "kiln.debugger_findings_path"
PLOT_TIMEOUT = 120.0


@dataclass
class DebuggerSummary:
    """What the Debugger found in a training: its findings, the rule that stopped it, and where the report is."""

    rules: list[str]  # the rules evaluated
    findings: list[Finding]
    stopped_by: str | None
    stopped_at: int | None
    steps: int
    profile: ProfileSummary | None
    findings_artifact: str
    report: str  # the HTML page in the workspace (its plots beside it)
    plot_problem: str | None = None  # why the plots are missing, when they are


def _page(doc: dict[str, Any], title: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{e(r['action'])}</td><td>{'yes' if r['evaluated'] else 'no'}</td>"
        f"<td>{'yes' if r['fired'] else ''}</td><td>{e(', '.join(f'{k}={v}' for k, v in r['params'].items()))}</td>"
        "</tr>" for r in doc["rules"])
    findings = "".join(f"<li><b>{e(f['rule'])}</b> ({e(f['action'])}) at step {f['step']}: {e(f['message'])}</li>"
                       for f in doc["findings"]) or "<li>none</li>"
    stopped = (f"<p><b>Stopped at step {doc['stopped_at']} by {e(doc['stopped_by'])}.</b></p>"
               if doc["stopped_by"] else f"<p>Trained all {doc['steps']} steps.</p>")
    p = doc["profile"] or {}
    profile = (f"<p>{p.get('seconds', 0):.1f} s; CPU mean {p.get('cpu_mean')} %, max {p.get('cpu_max')} %; "
               f"peak RSS {p.get('rss_peak_mb')} MB ({p.get('samples')} samples); the Debugger's own time "
               f"{doc.get('debugger_seconds', 0):.2f} s (its rules and this profiler)</p>" if p else "<p>not profiled</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + e(title) + "</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
            f"<h1>{e(title)}</h1><p>{e(doc['family'])}, {e(doc['task'])} task; loss: {e(doc['loss'])}</p>{stopped}"
            f"<h2>Findings</h2><ul>{findings}</ul><img src='{plots.LOSSES_PNG}' alt='losses'>"
            "<h2>Rules</h2><table><tr><th>rule</th><th>action</th><th>evaluated</th><th>fired</th>"
            f"<th>parameters</th></tr>{rows}</table>"
            f"<h2>Profile</h2>{profile}<img src='{plots.PROFILE_PNG}' alt='profile'></body></html>")


class Report:
    """A run's Debugger report being written: findings.json and report.html at once, the plots by a process of
    their own while the run logs its model (``start``); then everything logged to the run (``finish``)."""

    def __init__(self, debugger: Debugger, folder: Path, title: str) -> None:
        self.debugger, self.folder = debugger, folder
        folder.mkdir(parents=True, exist_ok=True)
        doc = {**debugger.to_dict(), "report": f"{ARTIFACT_FOLDER}/report.html"}
        (folder / "findings.json").write_text(json.dumps(doc, indent=1))
        (folder / "report.html").write_text(_page(doc, title))
        self.plotter: subprocess.Popen[bytes] | None = None

    def start(self) -> "Report":
        # -P: the script's folder is not put on the path (its modules' names must not shadow a library's)
        self.plotter = subprocess.Popen([sys.executable, "-P", plots.__file__, str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait(self) -> str | None:
        """Wait for the plots; None when they were drawn, else why not."""
        if self.plotter is None:
            plots.draw(self.folder)
            return None
        try:
            _, err = self.plotter.communicate(timeout=PLOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.plotter.kill()
            self.plotter.communicate()
            return f"the plots took over {PLOT_TIMEOUT:.0f} s"
        if self.plotter.returncode != 0:
            return err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "the plotter failed"
        return None

    def finish(self) -> DebuggerSummary:
        """Inside the active MLflow run: the report's files under debugger/, the findings' count as a metric, and
        tags (how many findings, which rule stopped the training, where findings.json is)."""
        import mlflow

        problem = self.wait()
        mlflow.log_artifacts(str(self.folder), ARTIFACT_FOLDER)
        mlflow.log_metrics({"debugger_findings": len(self.debugger.findings),
                            "debugger_seconds": self.debugger.cost_seconds})
        tags = {FINDINGS_TAG: str(len(self.debugger.findings)), PATH_TAG: FINDINGS_ARTIFACT}
        if self.debugger.stopped is not None:
            tags[STOPPED_TAG] = self.debugger.stopped.rule
        mlflow.set_tags(tags)
        return summary(self.debugger, str(self.folder / "report.html"), problem)


def start_report(debugger: Debugger, ws: Workspace, run_id: str, title: str) -> Report:
    """The report of run ``run_id`` under the workspace's reports/debugger/RUN, its plots under way."""
    return Report(debugger, ws.folder("reports") / "debugger" / run_id, title).start()


def log_debugger(debugger: Debugger, ws: Workspace, run_id: str, title: str) -> DebuggerSummary:
    """Inside the active MLflow run ``run_id``: the whole report, written and logged."""
    return start_report(debugger, ws, run_id, title).finish()


def summary(debugger: Debugger, report: str = "", problem: str | None = None) -> DebuggerSummary:
    """The session's outcome for a training's result."""
    return DebuggerSummary(
        rules=[r.name for r in debugger.active], findings=list(debugger.findings),
        stopped_by=debugger.stopped.rule if debugger.stopped else None,
        stopped_at=debugger.stopped.step if debugger.stopped else None, steps=debugger.steps,
        profile=debugger.profile, findings_artifact=FINDINGS_ARTIFACT, report=report, plot_problem=problem)
