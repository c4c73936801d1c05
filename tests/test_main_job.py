"""The main job (`kiln demo`): the churn_training pipeline run locally end to end, then serving, monitoring and the
edge; then the monitor_retrain pipeline over the drifted traffic the main job left behind, each of its steps in a
container of the platform image (`--runner docker`), rolling out on the endpoint the main job deployed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import clean_env, run_kiln
from tests.containers import Images, docker
from tests.studio_browser import chromium
from tests.test_stack import free_port

pytestmark = pytest.mark.slow
# Ports of its own: this module runs beside others that start endpoints and servers on the defaults.
ENV = clean_env(KILN_SERVING__BASE_PORT="18180", KILN_SERVICES__ARTIFACTS__PORT=str(free_port()),
                KILN_SERVICES__MLFLOW__PORT=str(free_port()), KILN_SERVICES__EVIDENTLY__PORT=str(free_port()),
                KILN_SERVICES__FEATURE_SERVER__PORT=str(free_port()), KILN_SERVICES__STUDIO__PORT=str(free_port()))


def kiln(*args: str | Path, timeout: float = 300):
    return run_kiln(*args, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("main") / "ws"
    try:
        res = kiln("demo", "--workspace", ws, "--json", timeout=900)
        assert res.code == 0, res.stderr[-6000:]
        yield ws, json.loads(res.stdout), res.stderr
    finally:
        kiln("down", "-w", ws)  # the demo leaves its endpoint and distribution point running for the user


def executor_output(run_root: Path, task: str) -> dict:
    """What a task handed back to KFP: its parameters, and its artifacts' metadata (metrics, curves)."""
    return json.loads((run_root / task / "executor_output.json").read_text())


def versions(ws: Path) -> dict[str, dict]:
    res = kiln("models", "list", "churn", "-w", ws, "--json")
    assert res.code == 0, res.stderr
    return {f"{v['name']}/{v['version']}": v for v in json.loads(res.stdout)}


def test_the_main_job_runs_the_training_pipeline_then_serves_monitors_and_reaches_the_edge(main_job) -> None:
    ws, doc, stderr = main_job
    steps = {s["name"].split(" (")[0].split(":")[0]: s["outputs"] for s in doc["steps"]}
    assert "[7/7]" in stderr and "tune-model: started" in stderr, "the main job shows its progress"
    pipeline = steps["run the churn_training pipeline"]
    run = pipeline["run"]
    ran = [key.strip() for key in pipeline if key.startswith("  ")]
    # every step of churn_training ran: the gate passed, and each target had its own compile and publish
    assert ran[:5] == ["validate-data", "ingest-features", "build-training-set", "tune-model", "evaluate-model"]
    assert {"register-model", "explain-model", "deploy-endpoint", "baseline-monitor"} <= set(ran)
    assert sorted(t for t in ran if t.startswith("compile-model")) == ["compile-model", "compile-model #2",
                                                                      "compile-model #3"]
    assert len([t for t in ran if t.startswith("publish-artifact")]) == 3
    # lineage: the champion and the MLflow runs name the pipeline run
    known = versions(ws)
    champion = known[pipeline["champion"]]
    assert "champion" in champion["aliases"] and champion["approval"] == "Approved" and champion["gate"] == "passed"
    assert champion["tags"]["kiln.pipeline_run"] == run and champion["tags"]["kiln.pipeline_run_id"]
    assert float(pipeline["test_auc"]) > 0.7
    assert (Path(pipeline["outputs"]) / "run.json").is_file() and Path(pipeline["log"]).is_file()
    for target in ("x86_64", "aarch64", "cuda"):
        latest = json.loads((ws / "artifacts" / "published" / "targets" / target / "latest.json").read_text())
        assert latest["id"].startswith(f"{pipeline['champion'].replace('/', '-v')}-{target}-")
    assert (ws / "monitoring" / "baselines" / pipeline["champion"].replace("/", "-v") / "baseline.json").is_file()
    # the KFP UI's views of the run: metrics, ROC curve, gate table, explanations, model card
    outputs = Path(pipeline["outputs"])
    evaluated = executor_output(outputs, "evaluate-model")
    assert evaluated["parameterValues"]["Output"] is True
    curves = evaluated["artifacts"]["curves"]["artifacts"][0]["metadata"]
    assert len(curves["confidenceMetrics"]) > 10 and len(curves["confusionMatrix"]["rows"]) == 2
    metrics = evaluated["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["test_auc"] == pytest.approx(float(pipeline["test_auc"]), abs=1e-4) and metrics["gate_passed"] == 1
    assert (outputs / "evaluate-model" / "gate").read_text().startswith("# Gate for churn")
    assert "<img src=\"data:image/png;base64," in (outputs / "explain-model" / "explanations").read_text()
    assert "Model card" in (outputs / "explain-model" / "model_card").read_text()
    tuned = executor_output(outputs, "tune-model")["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert tuned["kiln.pipeline_run"] == run and (outputs / "tune-model" / "model" / "MLmodel").is_file()

    served = steps["serve the champion alone in production and an MLP challenger as a shadow, its canary refused as "
                   "not approved"]
    challenger = served["challenger"]
    assert challenger != pipeline["champion"] and served["challenger_family"] == "mlp"
    # the challenger was asked for as a canary and refused (it is not approved), and the user was shown why
    assert served["challenger_approval"] == "PendingManualApproval"
    refusal = f"refused: production variant primary: {challenger} is PendingManualApproval and its gate "
    assert served["canary"].startswith(refusal), served["canary"]
    assert refusal in stderr, "the step's progress shows the refusal"
    assert known[challenger]["approval"] == "PendingManualApproval" and not [
        h for h in known[challenger]["history"] if h["event"] == "production override"], "no override was used"
    # production is the champion alone; the challenger is the shadow, on ONNX Runtime
    status = kiln("endpoint", "status", "churn", "-w", ws, "--json")
    assert status.code == 0, status.stderr
    endpoint = json.loads(status.stdout)
    assert {n: (v["role"], v["model"], v["runtime"]) for n, v in endpoint["variants"].items()} == {
        "primary": ("production", f"models:/{pipeline['champion']}", "mlflow"),
        "shadow": ("shadow", f"models:/{challenger}", "onnx")}
    assert endpoint["live"]["shares"] == {"primary": 1.0} and endpoint["rollout"] is None
    assert [(h["event"], h["model"]) for h in endpoint["history"]] == [
        ("deployed", f"models:/{pipeline['champion']}"), ("deployed as shadow", f"models:/{challenger}")]
    monitored = steps["monitor traffic that drifts halfway"]
    assert monitored["requests"] == 800 and monitored["status"] == "violations"
    assert monitored["model"] == pipeline["champion"], "the monitors watch what production serves"
    compared = kiln("endpoint", "compare", "churn", "-w", ws, "--json")
    assert compared.code == 0, compared.stderr
    shadowed = json.loads(compared.stdout)
    assert shadowed["production_variants"] == ["primary"] and shadowed["shadow_variant"] == "shadow"
    assert shadowed["requests"] > 0 and shadowed["server_errors"]["shadow"] == 0, "the shadow answered the traffic"
    assert {"usage_minutes_7d_mean", "usage_minutes_30d_mean"} <= set(monitored["drifted_features"].split(", "))
    assert Path(monitored["report"]).is_file()
    edge = steps["an edge device pulls the signed x86_64 bundle and predicts"]
    assert edge["installed"].startswith(pipeline["champion"].replace("/", "-v") + "-x86_64-")
    assert 0.0 <= edge["probability_of_first_row"] <= 1.0
    summary = doc["summary"]
    assert summary["endpoint"] in summary["try_it"] and summary["try_it"].startswith("curl ")
    assert Path(summary["model_card"]).is_file()
    assert httpx.get(f"{summary['studio']}/health", timeout=10).status_code == 200, "the summary links Kiln Studio"


def test_monitor_retrain_in_containers_on_drifted_capture_registers_and_rolls_out_a_new_version(
        main_job, images: Images) -> None:
    ws, _, _ = main_job
    before = versions(ws)
    res = kiln("pipeline", "run", "monitor_retrain", "-w", ws, "--runner", "docker", "--param", "since=30m",
               "--param", "trials=2", "--param", "max_iterations=3", "--param", "max_auc_drop=0.05", "--json",
               timeout=900)
    assert res.code == 0, res.stderr[-6000:]
    run = json.loads(res.stdout)
    assert run["status"] == "SUCCESS" and run["pipeline"] == "monitor-retrain" and run["runner"] == "docker"
    tasks = [t["name"] for t in run["tasks"]]
    assert tasks[0] == "run-monitor" and "register-model" in tasks and "deploy-endpoint" in tasks
    monitored = executor_output(Path(run["root"]), "run-monitor")
    assert monitored["parameterValues"]["Output"] >= 2, "the drifted features are violations"
    assert monitored["artifacts"]["metrics"]["artifacts"][0]["metadata"]["drifted_features"] >= 2
    after = versions(ws)
    new = sorted(set(after) - set(before), key=lambda ref: int(ref.split("/")[1]))
    assert len(new) == 1, f"one new version: {new}"
    made = after[new[0]]
    assert made["tags"]["kiln.pipeline_run"] == run["run"], "lineage: the version names the pipeline run"
    assert made["gate"] == "passed" and "champion" in made["aliases"], "the canary promoted it"
    status = kiln("endpoint", "status", "churn", "-w", ws, "--json")
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["variants"]["primary"]["model"] == f"models:/{new[0]}"
    # the new variant is a container the step started, and the endpoint's record of it names that container
    [served] = docker("ps", "--filter", "name=kiln-endpoint-churn-primary", "--format", "{{.Names}}").stdout.split()
    record = json.loads((ws / ".kiln" / "run" / "endpoint-churn-primary.pid").read_text())
    assert docker("inspect", "-f", "{{.State.Pid}}", served).stdout.strip() == str(record["pid"])
    body = main_job[1]["summary"]["try_it"].split("-d '")[1].split("' ")[0]  # the request the main job suggests
    answer = kiln("endpoint", "invoke", "churn", "-w", ws, "--variant", "primary", "--data", body)
    assert answer.code == 0 and json.loads(answer.stdout)["status"] == 200, answer.stdout + answer.stderr


def test_studio_shows_the_main_jobs_models_and_endpoint_with_no_console_error(main_job, tmp_path: Path) -> None:
    """Every page of Kiln Studio over the workspace the main job made, in Debian's chromium."""
    ws, doc, _ = main_job
    studio, known = doc["summary"]["studio"], versions(ws)
    [current] = [ref for ref, v in known.items() if "champion" in v["aliases"]]
    with chromium(tmp_path) as browser:
        page = browser.open(f"{studio}/models")
        assert page.locator("table.versions tbody tr").count() == len(known)
        assert page.locator(f"tr[data-ref='{current}'] .alias").first.inner_text() == "champion"
        browser.shot("main-job-models")
        made = doc["summary"]["champion"]  # the main job's version: its card and tuning curve (a retrained one has none)
        page = browser.open(f"{studio}/models/{made}")
        assert page.locator("iframe.card-frame").count() == 1, "the model card is shown"
        assert "pipeline run" in page.locator("table.kv").first.inner_text()
        assert page.locator("img.curve").evaluate("i => i.naturalWidth") > 0, "the tuning curve is shown"
        browser.shot("main-job-model-version")
        page = browser.open(f"{studio}/endpoints")
        assert page.locator("tr[data-endpoint='churn'] .role-shadow").count() == 1, "the challenger as a shadow"
        browser.shot("main-job-endpoints")
        body = doc["summary"]["try_it"].split("-d '")[1].split("' ")[0]  # traffic of this minute for the charts
        assert kiln("endpoint", "invoke", "churn", "-w", ws, "--data", body).code == 0
        page = browser.open(f"{studio}/endpoints/churn")
        page.wait_for_selector("#chart-latency .main-svg")
        browser.shot("main-job-endpoint")
        page.click("text=its answers against production's")
        page.wait_for_selector("#comparison")
        assert int(page.locator("#comparison .big").first.inner_text()) > 0, "the shadow's answers are compared"
        browser.shot("main-job-shadow")
        page = browser.open(f"{studio}/monitors")
        assert page.locator("tr[data-monitor='churn'] .status-violations").count() == 1, "the drifted traffic's run"
        browser.shot("main-job-monitors")
        page = browser.open(f"{studio}/monitors/churn")
        page.wait_for_selector("#chart-drift .main-svg")
        assert "usage_minutes_7d_mean" in page.inner_text("#violations"), "the drifted feature is a violation"
        browser.shot("main-job-monitor")
        page = browser.open(f"{studio}/pipelines")
        steps = page.locator("section.run").last.inner_text()
        assert "tune-model" in steps and "evaluate-model" in steps and "SUCCESS" in steps
        browser.shot("main-job-pipelines")
        page = browser.open(f"{studio}/features")
        assert page.locator("table.views tbody tr").count() >= 1 and "churn" in page.inner_text("table.services")
        browser.shot("main-job-features")
        page = browser.open(f"{studio}/edge")
        # the main job's device beat once, healthy: offline once three of its heartbeat intervals have passed
        device = page.locator("tr[data-device]")
        assert device.count() == 1 and device.locator(".status-ok, .status-offline").count() == 1
        assert made.replace("/", "-v") in device.inner_text(), "it serves the main job's bundle"
        assert page.locator("tr[data-artifact] .badge.good").count() >= 1, "its bundle's signature verifies"
        browser.shot("main-job-edge")
        assert browser.clean() == []
