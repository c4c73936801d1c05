"""Only approved models in production: a production variant of a deploy, or a rollout's new model, serves only a
version that is Approved and passed the gate; a shadow serves any version; an override needs a reason and is
recorded on the version and in the endpoint's history. A refusal starts and changes nothing."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from tests.conftest import clean_env, run_kiln
from tests.test_endpoint_cli import ok, serving_processes
from tests.test_serving import ROWS, serving_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory):
    """`toy` version 1 approved; 2 pending; 3 rejected; 4 pending and failing the gate (AUC under a 0.99 limit)."""
    root = serving_workspace(tmp_path_factory.mktemp("approval") / "ws")
    run_id = ok("models", "show", "toy/1", "-w", root)["run_id"]
    made = {}
    for kind, env in (("pending", None), ("rejected", None), ("failed", clean_env(KILN_GATES__MIN_AUC="0.99"))):
        res = run_kiln("models", "register", run_id, "--name", "toy", "-w", root, "--json", env=env)
        assert res.code == 0, res.stderr[-2000:]
        made[kind] = f"toy/{json.loads(res.stdout)['version']['version']}"
    ok("models", "reject", made["rejected"], "--reason", "bias review found a problem", "-w", root)
    assert ok("models", "show", made["failed"], "-w", root)["gate"] == "failed"
    yield root, made
    run_kiln("down", "-w", root)


def history_of(root: Path, ref: str) -> list[dict]:
    return ok("models", "show", ref, "-w", root)["history"]


def nothing_deployed(root: Path) -> None:
    assert not serving_processes(root), "no process was started"
    assert ok("endpoint", "list", "-w", root)["endpoints"] == []
    assert not list((root / ".kiln" / "endpoints").glob("*")), "no state file or folder was written"


def test_a_version_not_approved_or_failing_the_gate_is_refused_for_production_naming_what_is_wrong(versions) -> None:
    root, made = versions
    pending, rejected, failed = made["pending"], made["rejected"], made["failed"]
    res = run_kiln("endpoint", "deploy", "--model", f"models:/{pending}", "-w", root)
    assert res.code == 1, res.stderr
    assert f"production variant primary: {pending} is PendingManualApproval and its gate passed" in res.stderr
    assert f"kiln models approve {pending}" in res.stderr and "--override-reason" in res.stderr

    (root / "two.yaml").write_text("name: two\nvariants:\n  - {name: main, model: 'models:/toy/1', weight: 9}\n"
                                   f"  - {{name: canary, model: 'models:/{rejected}', weight: 1}}\n")
    res = run_kiln("endpoint", "deploy", root / "two.yaml", "-w", root)
    assert res.code == 1 and f"production variant canary: {rejected} is Rejected and its gate passed" in res.stderr

    res = run_kiln("endpoint", "deploy", "--model", f"models:/{failed}", "-w", root)
    assert res.code == 1, res.stderr
    assert f"production variant primary: {failed} is PendingManualApproval and its gate failed (test AUC = " \
        in res.stderr and "(limit >= 0.99))" in res.stderr, res.stderr
    assert "shadow" in res.stderr and "--override-reason" in res.stderr, "the hint says what may be done instead"

    for reason in ("", "   "):
        res = run_kiln("endpoint", "deploy", "--model", f"models:/{pending}", "--override-reason", reason, "-w", root)
        assert res.code == 1 and "--override-reason is empty: an override must say why" in res.stderr, res.stderr
    nothing_deployed(root)
    assert [h["event"] for h in history_of(root, pending)] == ["registered"], "a refusal records nothing"


def test_a_deploy_by_override_serves_and_is_recorded_on_the_version_and_the_endpoint(versions) -> None:
    root, made = versions
    failed = made["failed"]
    reason = "incident 42: the old model is down, this one is better than nothing"
    deployed = ok("endpoint", "deploy", "--model", f"models:/{failed}", "--name", "risky", "--override-reason",
                  reason, "-w", root)
    try:
        assert deployed["variants"]["primary"]["model"] == f"models:/{failed}"
        events = [(h["event"], h["variant"], h["model"]) for h in deployed["history"]]
        assert events == [("deployed", "primary", f"models:/{failed}"), ("override", "primary", f"models:/{failed}")]
        override = deployed["history"][-1]
        assert override["reason"] == f"PendingManualApproval, gate failed: {reason}"
        assert override["by"] == getpass.getuser()
        answer = ok("endpoint", "invoke", "risky", "--data", json.dumps({"instances": ROWS}), "-w", root)
        assert answer["status"] == 200 and answer["variant"] == "primary", "it serves"

        recorded = history_of(root, failed)[-1]
        assert (recorded["event"], recorded["reason"], recorded["where"], recorded["status"], recorded["gate"]) == \
            ("production override", reason, "endpoint risky, variant primary", "PendingManualApproval", "failed")
        assert ok("models", "show", failed, "-w", root)["approval"] == "PendingManualApproval", "approval unchanged"
        text = run_kiln("endpoint", "status", "risky", "-w", root)
        assert text.code == 0 and "override" in text.stdout and reason in text.stdout, text.stdout
        assert ok("endpoint", "status", "risky", "-w", root)["history"] == deployed["history"]
    finally:
        ok("endpoint", "delete", "risky", "-w", root)


def test_a_shadow_serves_a_pending_version_and_a_rollout_needs_approval_or_an_override(versions) -> None:
    root, made = versions
    pending, failed = made["pending"], made["failed"]
    (root / "toy.yaml").write_text(f"""
name: toy
variants: [{{name: main, model: "models:/toy/1"}}]
shadow: {{name: dark, model: "models:/{pending}"}}
policy: {{type: canary, step_percent: 10, bake_seconds: 600}}
""")
    deployed = ok("endpoint", "deploy", root / "toy.yaml", "-w", root)
    try:
        dark = deployed["variants"]["dark"]
        assert (dark["role"], dark["model"]) == ("shadow", f"models:/{pending}")
        assert len(serving_processes(root)) == 3, "the front, main and the shadow"

        res = run_kiln("endpoint", "update", "toy", "--model", f"models:/{failed}", "-w", root)
        assert res.code == 1 and f"production variant main: {failed} is PendingManualApproval and its gate failed" \
            in res.stderr, res.stderr
        res = run_kiln("endpoint", "update", "toy", "--model", f"models:/{pending}", "--override-reason", "", "-w",
                       root)
        assert res.code == 1 and "--override-reason is empty" in res.stderr, res.stderr
        assert len(serving_processes(root)) == 3 and not (root / ".kiln" / "logs" / "endpoint-toy-main-next.log")\
            .exists(), "no candidate was started"
        status = ok("endpoint", "status", "toy", "-w", root)
        assert status["rollout"] is None and [h["event"] for h in status["history"]] == \
            ["deployed", "deployed as shadow"]

        reason = "the shadow agreed with main on a week of traffic"
        res = run_kiln("endpoint", "update", "toy", "--model", f"models:/{pending}", "--override-reason", reason,
                       "--no-wait", "-w", root, "--json")
        assert res.code == 0, res.stderr[-3000:]
        assert json.loads(res.stdout)["candidate"] == "main-next"
        ok("endpoint", "promote", "toy", "-w", root)
        status = ok("endpoint", "status", "toy", "-w", root)
        assert status["variants"]["main"]["model"] == f"models:/{pending}"
        assert [(h["event"], h["variant"], h["model"]) for h in status["history"]] == [
            ("deployed", "main", "models:/toy/1"), ("deployed as shadow", "dark", f"models:/{pending}"),
            ("rollout started", "main", f"models:/{pending}"), ("override", "main", f"models:/{pending}"),
            ("rollout promoted", "main", f"models:/{pending}")]
        assert status["history"][3]["reason"] == f"PendingManualApproval, gate passed: {reason}"
        assert status["history"][4]["reason"] == "promoted by hand"
        recorded = history_of(root, pending)[-1]
        assert (recorded["event"], recorded["reason"], recorded["where"]) == \
            ("production override", reason, "endpoint toy, variant main")
    finally:
        ok("endpoint", "delete", "toy", "-w", root)
