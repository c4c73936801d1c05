"""Rollouts on a local endpoint: a healthy canary is promoted; a failing or slow one is rolled back by the
guardrails within one bake period while the stable variant keeps answering."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln
from tests.test_serving import ROWS, approve, serving_workspace

pytestmark = pytest.mark.slow
BAKE = 12


def register_faulty(root: Path, fault: str) -> str:
    """Version N of `toy`: the same model as version 1 with ``fault`` injected, passing the gate as version 1 does,
    and approved (the guardrails are under test, not the approval); returns its URI."""
    import mlflow

    from kiln.registry.versions import GATE

    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    info = mlflow.models.get_model_info("models:/toy/1")
    folder = Path(mlflow.artifacts.download_artifacts("models:/toy/1", dst_path=str(root / f"dl-{fault}")))
    [model_folder] = [p for p in folder.rglob("kiln-model.json")]
    (root / f"{fault}.txt").write_text(fault)
    with mlflow.start_run(experiment_id=mlflow.get_run(info.run_id).info.experiment_id):
        logged = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("faulty_model.py")),
                                         artifacts={"model_folder": str(model_folder.parent),
                                                    "fault": str(root / f"{fault}.txt")},
                                         signature=info.signature)
    version = mlflow.register_model(logged.model_uri, "toy", tags={GATE: "passed"})
    approve(root, f"toy/{version.version}")
    return f"models:/toy/{version.version}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace with `toy` registered, shared: each test deploys its own endpoint from version 1."""
    return serving_workspace(tmp_path_factory.mktemp("rollout") / "ws")


@pytest.fixture
def ws(trained: Path):
    root = trained
    (root / "toy.yaml").write_text(f"""
name: toy
variants: [{{name: main, model: "models:/toy/1"}}]
policy: {{type: canary, step_percent: 50, bake_seconds: {BAKE}}}
guardrails: {{min_requests: 10, max_error_rate: 0.05, max_p99_increase_ms: 150}}  # a busy machine adds tens of ms
""")
    res = run_kiln("endpoint", "deploy", root / "toy.yaml", "-w", root, "--json")
    assert res.code == 0, res.stderr[-3000:]
    yield root, f"{json.loads(res.stdout)['url']}/v1/models/toy:predict"
    run_kiln("endpoint", "delete", "toy", "-w", root)


def load(url: str, answers: list, seconds: float | None = None, until: threading.Event | None = None
         ) -> threading.Thread:
    """Requests one after another for ``seconds``, or until ``until`` is set."""
    def run() -> None:
        end = time.monotonic() + (seconds if seconds is not None else 3600)
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < end and not (until and until.is_set()):
                res = client.post(url, json={"instances": ROWS})
                answers.append((res.status_code, res.headers.get("x-kiln-variant")))
                time.sleep(0.02)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("fault, reason", [("fail", "error rate"), ("slow", "ms over the stable variant's")])
def test_a_bad_candidate_is_rolled_back_by_the_guardrails(ws, fault: str, reason: str) -> None:
    root, url = ws
    candidate = register_faulty(root, fault)
    answers: list = []
    done = threading.Event()
    thread = load(url, answers, until=done)
    res = run_kiln("endpoint", "update", "toy", "--model", candidate, "-w", root, "--json", timeout=300)
    done.set()
    thread.join()
    assert res.code == 0, res.stderr[-3000:]
    rollout = json.loads(res.stdout)
    assert rollout["phase"] == "rolled-back" and reason in rollout["reason"]
    # Judged on the front's own clock, from the canary's start (not the candidate's slower process start).
    judged = rollout["history"][-1]["at"] - rollout["history"][0]["at"]
    assert judged <= BAKE, f"rolled back {judged:.1f} s into the canary; the bake period is {BAKE} s"
    stable = [status for status, variant in answers if variant == "main"]
    assert stable and all(status == 200 for status in stable), "the stable variant kept answering"
    after: list = []
    load(url, after, seconds=1.0).join()
    assert after and all(answer == (200, "main") for answer in after), "after the rollback main answers alone"
    state = json.loads(run_kiln("endpoint", "status", "toy", "-w", root, "--json").stdout)
    assert state["variants"]["main"]["model"] == "models:/toy/1" and state["rollout"] is None


def test_a_healthy_canary_is_promoted_and_serves_alone(ws) -> None:
    root, url = ws
    res = run_kiln("models", "register", _rerun(root), "--name", "toy", "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    new = f"models:/toy/{json.loads(res.stdout)['version']['version']}"
    approve(root, new.removeprefix("models:/"))
    answers: list = []
    done = threading.Event()
    thread = load(url, answers, until=done)  # traffic for as long as the rollout takes, however slow its start
    res = run_kiln("endpoint", "update", "toy", "--model", new, "-w", root, "--json", timeout=300)
    done.set()
    thread.join()
    assert res.code == 0, res.stderr[-3000:]
    rollout = json.loads(res.stdout)
    assert rollout["phase"] == "promoted", rollout
    assert {v for _, v in answers} >= {"main", "main-next"}, "both answered during the canary"
    assert all(status == 200 for status, _ in answers)
    state = json.loads(run_kiln("endpoint", "status", "toy", "-w", root, "--json").stdout)
    assert state["variants"]["main"]["model"] == new
    assert set(state["processes"].values()) == {"running"} and len(state["processes"]) == 2
    after = httpx.post(url, json={"instances": ROWS}, timeout=30)
    assert after.status_code == 200 and after.headers["x-kiln-variant"] == "main"


def _rerun(root: Path) -> str:
    """Another training run of the same model family (a new version to roll out)."""
    res = run_kiln("train", "-t", root / "train.parquet", "-f", "lgbm", "--iterations", "4", "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    return json.loads(res.stdout)["run_id"]
