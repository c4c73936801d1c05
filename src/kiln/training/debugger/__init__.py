"""The Debugger (SageMaker Debugger's built-in rules) and a profiler for the built-in families' training.

After every step a family's probe measures the training and validation loss and, where the family has them, its
internals (a network's gradients and dead ReLUs, a tree model's gain by feature and depth); each rule that applies
checks them and fires once, with an action: stop the training there, or alert. A profiler samples the process's CPU
and memory meanwhile. ``start_report`` writes the findings, plots and an HTML report, and its ``finish`` logs them into the MLflow run.
"""

from kiln.training.debugger.observation import Finding, LayerStats, Observation, TreeStats
from kiln.training.debugger.profiler import Profiler, ProfileSummary, Sample
from kiln.training.debugger.report import (
    FINDINGS_ARTIFACT,
    PATH_TAG,
    DebuggerSummary,
    Report,
    log_debugger,
    start_report,
    summary,
)
from kiln.training.debugger.rules import RULES, configure, rule_key
from kiln.training.debugger.session import Debugger

__all__ = [
    "FINDINGS_ARTIFACT", "PATH_TAG", "RULES", "Debugger", "DebuggerSummary", "Finding", "LayerStats", "Observation",
    "ProfileSummary", "Profiler", "Report", "Sample", "TreeStats", "configure", "log_debugger", "rule_key",
    "start_report", "summary",
]
