"""`kiln pipeline`: the pipelines compile to IR a KFP UI accepts; the gate's condition really skips its branch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kiln import IMAGE
from tests.conftest import run_kiln

PIPELINES = {"churn_training": "churn-training", "monitor_retrain": "monitor-retrain"}


def test_list_names_both_pipelines_with_their_parameters() -> None:
    res = run_kiln("pipeline", "list", "--json")
    assert res.code == 0, res.stderr
    found = {p["name"]: p for p in json.loads(res.stdout)}
    assert set(found) == set(PIPELINES)
    training = found["churn_training"]["parameters"]
    assert training["targets"] == ["x86_64", "aarch64", "cuda"] and training["min_auc"] == 0.7
    assert {"data", "trials", "strategy", "endpoint", "max_auc_drop"} <= set(training)
    assert {"since", "endpoint", "trials"} <= set(found["monitor_retrain"]["parameters"])
    assert training["deploy"] is True


def test_with_deploy_false_no_deploy_or_baseline_runs(tmp_path: Path) -> None:
    out = tmp_path / "churn.yaml"
    res = run_kiln("pipeline", "compile", "churn_training", "-o", out, "--json")
    assert res.code == 0, res.stderr
    doc = yaml.safe_load(out.read_text())
    # The deploy and baseline tasks sit in the `deploy` condition's sub-DAG, which runs only when deploy is true.
    [(name, dag)] = [(n, c) for n, c in doc["components"].items() if n.startswith("comp-condition-")
                     and "deploy-endpoint" in c.get("dag", {}).get("tasks", {})]
    assert set(dag["dag"]["tasks"]) == {"deploy-endpoint", "baseline-monitor"}
    outer = next(t for c in doc["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()
                 if t.get("componentRef", {}).get("name") == name)
    assert "pipelinechannel--deploy" in outer["triggerPolicy"]["condition"]


def test_the_deploy_step_on_a_cluster_without_a_kubernetes_api_says_so(tmp_path: Path) -> None:
    from kiln.errors import ServiceError
    from kiln.workflow.release_steps import deploy_step

    assert run_kiln("init", tmp_path / "ws", "--profile", "cluster").code == 0
    missing = tmp_path / "no-such.kubeconfig"
    with open(tmp_path / "ws" / "kiln.yaml", "a") as f:
        f.write(f"serving: {{type: kserve, kubeconfig: {missing}}}\n")
    with pytest.raises(ServiceError, match="no Kubernetes API to talk to") as err:
        deploy_step(str(tmp_path / "ws"), "churn", "churn/1", 20.0, 60.0, True)
    assert str(missing) in str(err.value) and "serving.kubeconfig" in err.value.hint


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_each_pipeline_compiles_to_ir_with_an_image_and_command_for_every_step(name: str, tmp_path: Path) -> None:
    from kfp import components

    out = tmp_path / f"{name}.yaml"
    res = run_kiln("pipeline", "compile", name, "-o", out, "--json")
    assert res.code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["pipeline"] == PIPELINES[name] and summary["images"] == [IMAGE]
    doc = yaml.safe_load(out.read_text())
    executors = doc["deploymentSpec"]["executors"]
    assert len(executors) == summary["executors"] >= 9
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == IMAGE and container["command"][0] == "sh" and container["args"]
        assert "from kiln.workflow" in container["command"][-1], "each step is one call into kiln"
        assert "pip install" not in " ".join(container["command"]), "the image has every package; nothing installs"
    assert doc["root"]["inputDefinitions"]["parameters"]["trials"]["defaultValue"] == 9
    assert components.load_component_from_file(str(out)).name == PIPELINES[name]
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no staging file left behind"


def test_compile_and_run_refuse_bad_input_naming_it(tmp_path: Path) -> None:
    res = run_kiln("pipeline", "compile", "churn_training", "-o", tmp_path / "x.txt")
    assert res.code == 1 and "x.txt: give a file name ending in .yaml" in res.stderr
    res = run_kiln("pipeline", "compile", "no_such", "-o", tmp_path / "x.yaml")
    assert res.code == 1 and "no pipeline 'no_such'" in res.stderr and "churn_training" in res.stderr
    res = run_kiln("pipeline", "run", "churn_training", "--param", "trials=many", "-w", tmp_path)
    assert res.code == 1 and "--param trials=many: expected integer" in res.stderr
    res = run_kiln("pipeline", "run", "churn_training", "--param", "colour=red", "-w", tmp_path)
    assert res.code == 1 and "--param colour" in res.stderr and "trials" in res.stderr
    res = run_kiln("pipeline", "run", "churn_training", "--param", "trials", "-w", tmp_path)
    assert res.code == 1 and "expected NAME=VALUE" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_step_failing_on_bad_input_stops_the_run_with_its_error_and_exit_1(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    res = run_kiln("pipeline", "run", "churn_training", "-w", ws, "--param", f"data={tmp_path / 'missing'}",
                   timeout=300)
    assert res.code == 1, res.stderr[-3000:]
    assert "task validate-data failed: InputError: data" in res.stderr and "give a dataset folder" in res.stderr
    [run] = (ws / "pipelines" / "runs").iterdir()
    assert f"the whole log: {run / 'pipeline.log'}" in res.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "FAILURE"
    listed = run_kiln("models", "list", "-w", ws, "--json")
    assert json.loads(listed.stdout) == []


def test_a_pipeline_file_compiles_by_path(tmp_path: Path) -> None:
    source = tmp_path / "mine.py"
    source.write_text(Path(__file__).resolve().parents[1].joinpath("pipelines", "monitor_retrain.py").read_text())
    res = run_kiln("pipeline", "compile", source, "-o", tmp_path / "mine.yaml", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["pipeline"] == "monitor-retrain"
    (tmp_path / "two.py").write_text("x = 1\n")
    res = run_kiln("pipeline", "compile", tmp_path / "two.py", "-o", tmp_path / "two.yaml")
    assert res.code == 1 and "defines 0 pipelines" in res.stderr


def test_submitting_to_an_unreachable_kfp_server_says_which(tmp_path: Path) -> None:
    res = run_kiln("pipeline", "run", "churn_training", "--host", "http://127.0.0.1:9", timeout=120)
    assert res.code == 2 and "KFP API server at http://127.0.0.1:9" in res.stderr


@pytest.mark.slow
def test_a_failed_gate_skips_registration_and_everything_after_it(churn_dataset: Path, tmp_path: Path) -> None:
    """With your own training code (the scikit-learn example) tuned by the pipeline's tune step."""
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    data = ws / "data" / "churn"
    shutil.copytree(churn_dataset, data)
    example = Path(__file__).parents[1] / "examples" / "sklearn" / "train.py"
    res = run_kiln("pipeline", "run", "churn_training", "-w", ws, "--param", "trials=1", "--param", "max_iterations=1",
                   "--param", "min_auc=0.999", "--param", f"entry_point={example}", "--json", timeout=600)
    assert res.code == 0, res.stderr[-4000:]
    run = json.loads(res.stdout)
    assert run["status"] == "SUCCESS", "a gate that fails is the pipeline working, not failing"
    assert [t["name"] for t in run["tasks"]] == ["validate-data", "ingest-features", "build-training-set",
                                                 "tune-model", "evaluate-model"]
    evaluated = json.loads((Path(run["root"]) / "evaluate-model" / "executor_output.json").read_text())
    assert evaluated["parameterValues"]["Output"] is False
    assert "test AUC" in (Path(run["root"]) / "evaluate-model" / "gate").read_text()
    tuned = json.loads((Path(run["root"]) / "tune-model" / "executor_output.json").read_text())
    [model] = tuned["artifacts"]["model"]["artifacts"]
    assert model["metadata"]["family"] == "entry", model["metadata"]
    listed = run_kiln("models", "list", "-w", ws, "--json")
    assert listed.code == 0 and json.loads(listed.stdout) == [], "nothing was registered"
    assert not (ws / "artifacts" / "published").exists()
    assert not list((ws / ".kiln").glob("endpoints/*/endpoint.json")), "no endpoint was deployed"
    assert "evaluate-model: gate failed: test AUC" in res.stderr


def test_endpoint_commands_that_talk_to_a_local_front_refuse_a_cluster_workspace_by_name(tmp_path: Path) -> None:
    assert run_kiln("init", tmp_path / "ws").code == 0
    with open(tmp_path / "ws" / "kiln.yaml", "a") as f:
        f.write(f"serving: {{type: kserve, kubeconfig: {tmp_path / 'none'}}}\n")
    for args in (["invoke", "churn", "-d", '{"instances": []}'], ["compare", "churn"]):
        res = run_kiln("endpoint", *args, "-w", tmp_path / "ws")
        assert res.code == 1 and f"`kiln endpoint {args[0]}` works on endpoints served on this machine" in res.stderr
