"""The chart's workloads as their pods would run them (tests/pods.py), from `helm template` with values for this
machine: the built images, PostgreSQL and Redis on loopback, S3 from SeaweedFS on loopback holding the workspace's
shared data (`objectStore.workspaceData`), as production's values point at external stores. Each Deployment passes
its readiness probe and does its work; the churn_training pipeline runs on the chart's settings in a pod like a
step's (offline feature store, bundles and their distribution point on S3), the monitor CronJob's run reads what the
capture collector's pod wrote to S3; the pipeline upload Job, with no KFP API server here, fails saying so."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.containers import Images
from tests.pods import Cluster, Workload, own
from tests.s3 import S3, s3_server
from tests.test_chart import CHART, documents, run
from tests.test_collector import ANSWER, post_pair
from tests.test_stack import free_port

pytestmark = pytest.mark.slow
NAMESPACE = "kiln"
USER = 10001  # the chart's runAsUser, runAsGroup and fsGroup


def postgres(*statements: str) -> None:
    """Run statements as PostgreSQL's superuser (trust auth on loopback), each outside a transaction."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


@pytest.fixture(scope="module")
def cluster(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, S3, dict]]:
    from tests.k8s_tools import tools

    root = tmp_path_factory.mktemp("pods")
    tag = uuid.uuid4().hex[:8]
    databases = {"mlflow": f"kiln_pods_mlflow_{tag}", "feast": f"kiln_pods_feast_{tag}"}
    ports = {k: free_port() for k in ("mlflow", "featureServer", "evidently", "distribution", "capture", "studio")}
    with s3_server(root / "s3", buckets=("kiln",)) as s3:
        values = [
            "--set", f"image.repository={images.platform.split(':')[0]}", "--set", "image.pullPolicy=Never",
            "--set", "minio.enabled=false", "--set", f"objectStore.endpoint={s3.endpoint}",
            "--set", "objectStore.workspaceData=true",
            "--set", "postgresql.enabled=false", "--set", "postgresql.external.host=127.0.0.1",
            "--set", "postgresql.user=postgres", "--set", f"postgresql.mlflowDatabase={databases['mlflow']}",
            "--set", f"postgresql.feastDatabase={databases['feast']}",
            "--set", "redis.enabled=false", "--set", "redis.external.address=127.0.0.1:6379",
            "--set", f"featureServer.project=pods_{tag}", "--set", "mlflow.workers=1",
            "--set", "pipelines.host=http://127.0.0.1:9",  # no KFP API server runs here
            "--set", "ray.address=local",  # no Ray cluster here: tuning runs inside the step, as values-kind has it
            "--set", "monitors.schedules[0].endpoint=churn", "--set", "monitors.schedules[0].every=1h",
            *(a for k, p in ports.items() for a in ("--set", f"{k}.port={p}")),
        ]
        objs = documents(run(tools()["helm"], "template", "kiln", CHART, "--namespace", NAMESPACE, *values).stdout)
        workspace = root / "workspace"
        for sub in ("monitoring/evidently", "capture", "artifacts"):
            (workspace / sub).mkdir(parents=True)
        own(workspace, USER, USER)
        secrets = {"kiln-object-store": {"access-key-id": s3.access_key, "secret-access-key": s3.secret_key},
                   "kiln-postgresql": {"password": "unused-with-trust-auth"}}
        pods = Cluster(objs, secrets, {"kiln-workspace": workspace}, root / "scratch", NAMESPACE)
        postgres(*(f'CREATE DATABASE "{name}"' for name in databases.values()))
        try:
            yield pods, s3, ports
        finally:
            pods.remove_all()
            postgres(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in databases.values()))


def deployments(pods: Cluster) -> dict[str, Workload]:
    return {w.name: w for w in pods.workloads() if w.kind == "Deployment"}


@pytest.fixture(scope="module")
def servers(cluster) -> tuple[Cluster, S3, dict, dict[str, list[str]], dict[str, float]]:
    """Every Deployment started at once, as an install would, and waited for: their containers and readiness."""
    pods, s3, ports = cluster
    found = deployments(pods)
    started = {name: pods.start(w) for name, w in found.items()}
    ready = {name: pods.wait_ready(found[name], names[0], found[name].pod["containers"][0])
             for name, names in started.items()}
    return pods, s3, ports, started, ready


def test_every_deployment_of_the_chart_passes_its_readiness_probe_and_serves(servers) -> None:
    pods, s3, ports, started, ready = servers
    assert set(started) == {"kiln-mlflow", "kiln-feature-server", "kiln-evidently", "kiln-distribution",
                            "kiln-capture", "kiln-studio"}, "with external stores, Kiln's own servers only"
    assert all(seconds < 300 for seconds in ready.values()), ready

    # MLflow's pod keeps runs in PostgreSQL and proxies artifacts to S3
    import mlflow

    client = mlflow.MlflowClient(f"http://127.0.0.1:{ports['mlflow']}")
    experiment = client.create_experiment(f"pods-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment).info.run_id
    note = pods.scratch / "note.txt"
    note.write_text("an artifact through the server")
    client.log_artifact(run_id, str(note))
    assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in s3.keys("mlflow/")), s3.keys("mlflow/")

    # the capture collector's pod writes what KServe's logger posts into the bucket
    post_pair(f"http://127.0.0.1:{ports['capture']}/other/primary")
    [key] = wait_for_objects(s3, "capture/endpoint=other/")
    body = s3.client().get_object(Bucket="kiln", Key=key)["Body"].read().decode()
    assert json.loads(body.splitlines()[0])["response"] == ANSWER

    # the distribution point and the feature server answer their APIs
    assert httpx.get(f"http://127.0.0.1:{ports['distribution']}/v1/devices", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ports['featureServer']}/health", timeout=10).status_code == 200

    # Studio's pod shows the registry MLflow's pod keeps (the run above logged no model: an empty Models page)
    page = httpx.get(f"http://127.0.0.1:{ports['studio']}/models", timeout=30)
    assert page.status_code == 200 and "Models" in page.text, page.text[-2000:]


def test_the_pipeline_upload_job_without_a_kfp_api_server_fails_naming_it(cluster) -> None:
    pods, _, _ = cluster
    [job] = [w for w in pods.workloads() if w.kind == "Job"]
    assert job.name == "kiln-pipelines-upload"
    res = pods.run(job)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "KFP API server at http://127.0.0.1:9" in res.stderr, res.stderr[-2000:]


def wait_for_objects(s3: S3, prefix: str, seconds: float = 20) -> list[str]:
    """The capture objects under ``prefix`` once the collector has flushed (every 2 s)."""
    deadline = time.monotonic() + seconds
    while not (found := s3.keys(prefix)):
        assert time.monotonic() < deadline, f"nothing written under s3://kiln/{prefix}"
        time.sleep(0.5)
    return found


def test_training_on_the_charts_settings_then_the_monitor_cronjob_reads_the_collectors_capture(servers) -> None:
    """churn_training in a pod set up as the CronJob's (the chart's settings: MLflow's server with PostgreSQL and
    S3, Feast's SQL registry and Redis; each step a process of the pod, where KFP would give each its own pod), the
    version promoted; then requests and answers posted to the collector's pod, and the CronJob's own run."""
    pods, s3, ports, _, _ = servers
    [cron] = [w for w in pods.workloads() if w.kind == "CronJob"]
    workspace = pods.claims["kiln-workspace"]
    train = ("mkdir -p /kiln/workspace/data && kiln data generate --out /kiln/workspace/data/churn --customers 2000 "
             "--days 90 && kiln pipeline run churn_training -w /kiln/workspace -p deploy=false -p trials=2 "
             "-p max_iterations=3 -p targets=x86_64 -p explain_rows=50 && kiln models promote churn/1 -w "
             "/kiln/workspace")
    res = pods.run(cron, command=["sh", "-c", train])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "churn version 1 is the champion" in res.stdout
    assert any(k.endswith("MLmodel") for k in s3.keys("mlflow/")), "the model's files went to S3 through MLflow"
    assert any(k.startswith("features/offline/churn/events/date=") for k in s3.keys("features/offline/")), \
        "the offline feature store is in the bucket"
    latest = json.loads(s3.client().get_object(Bucket="kiln", Key="artifacts/published/targets/x86_64/latest.json")
                        ["Body"].read())
    assert s3.keys(f"artifacts/compiled/{latest['id']}/") and s3.keys(f"artifacts/published/bundles/{latest['id']}/")
    served = httpx.get(f"http://127.0.0.1:{ports['distribution']}/v1/targets/x86_64/latest", timeout=10)
    assert served.status_code == 200 and served.json()["id"] == latest["id"], "the distribution point serves it"

    import pandas as pd

    [training_set] = workspace.glob("pipelines/runs/*/build-training-set/training_set/training_set.parquet")
    frame = pd.read_parquet(training_set).drop(columns=["customer_id", "label_timestamp", "churned"]).head(150)
    url = f"http://127.0.0.1:{ports['capture']}/churn/primary"
    for row in json.loads(frame.to_json(orient="records")):
        post_pair(url, {"instances": [row]}, {"predictions": [{"probability": 0.2, "prediction": 0}]})
    wait_for_objects(s3, "capture/endpoint=churn/")
    time.sleep(3)  # the collector's last batch

    res = pods.run(cron)  # the CronJob's own command: kiln monitor run --endpoint churn --model churn@champion ...
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    run = json.loads(res.stdout)
    assert run["model"] == "churn/1" and run["records"] == 150 and run["status"] in ("ok", "violations")
    outputs = workspace / Path(run["outputs"]).relative_to("/kiln/workspace")
    assert (outputs / "report.html").is_file() and (outputs / "metrics.prom").is_file()
    published = run["published"].removeprefix("s3://kiln/")
    assert {f"{published}/report.html", f"{published}/result.json"} <= set(s3.keys(published + "/"))

