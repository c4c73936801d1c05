"""The chart's workloads as their pods would run them (tests/pods.py), from `helm template` with values for this
machine: the built images, PostgreSQL and Redis on loopback, S3 from SeaweedFS on loopback, as production's values
point at external stores. Each Deployment passes its readiness probe and does its work; the pipeline upload Job,
with no KFP API server here, fails saying so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.containers import Images
from tests.pods import Cluster, Workload, own
from tests.s3 import S3, s3_server
from tests.test_chart import CHART, documents, run
from tests.test_collector import ANSWER, REQUEST, RESPONSE, ROW, event
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
    ports = {k: free_port() for k in ("mlflow", "featureServer", "evidently", "distribution", "capture")}
    with s3_server(root / "s3", buckets=("kiln",)) as s3:
        values = [
            "--set", f"image.repository={images.platform.split(':')[0]}", "--set", "image.pullPolicy=Never",
            "--set", "minio.enabled=false", "--set", f"objectStore.endpoint={s3.endpoint}",
            "--set", "postgresql.enabled=false", "--set", "postgresql.external.host=127.0.0.1",
            "--set", "postgresql.user=postgres", "--set", f"postgresql.mlflowDatabase={databases['mlflow']}",
            "--set", f"postgresql.feastDatabase={databases['feast']}",
            "--set", "redis.enabled=false", "--set", "redis.external.address=127.0.0.1:6379",
            "--set", f"featureServer.project=pods_{tag}", "--set", "mlflow.workers=1",
            "--set", "pipelines.host=http://127.0.0.1:9",  # no KFP API server runs here
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


def test_every_deployment_of_the_chart_passes_its_readiness_probe_and_serves(cluster) -> None:
    pods, s3, ports = cluster
    found = deployments(pods)
    assert set(found) == {"kiln-mlflow", "kiln-feature-server", "kiln-evidently", "kiln-distribution",
                          "kiln-capture"}, "with external stores, Kiln's own servers only"
    started = {name: pods.start(w) for name, w in found.items()}  # all at once, as a rollout would
    ready = {name: pods.wait_ready(found[name], names[0], found[name].pod["containers"][0])
             for name, names in started.items()}
    assert all(seconds < 300 for seconds in ready.values()), ready

    # MLflow's pod keeps runs in PostgreSQL and proxies artifacts to S3
    import mlflow

    client = mlflow.MlflowClient(f"http://127.0.0.1:{ports['mlflow']}")
    experiment = client.create_experiment(f"pods-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment).info.run_id
    note = pods.scratch / "note.txt"
    note.write_text("an artifact through the server")
    client.log_artifact(run_id, str(note))
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="kiln", Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in keys), keys

    # the capture collector's pod writes what KServe's logger posts onto the workspace volume, as the pod's user
    url = f"http://127.0.0.1:{ports['capture']}/churn/primary"
    inference_id = str(uuid.uuid4())
    assert event(url, REQUEST, inference_id, ROW).status_code == 202
    assert event(url, RESPONSE, inference_id, ANSWER).status_code == 202
    [capture] = started["kiln-capture"]
    from tests.containers import docker

    docker("stop", "-t", "20", capture)
    files = list((pods.claims["kiln-workspace"] / "capture" / "endpoint=churn").rglob("*.jsonl"))
    assert files and files[0].stat().st_uid == USER
    assert json.loads(files[0].read_text().splitlines()[0])["response"] == ANSWER

    # the distribution point and the feature server answer their APIs
    assert httpx.get(f"http://127.0.0.1:{ports['distribution']}/v1/devices", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ports['featureServer']}/health", timeout=10).status_code == 200


def test_the_pipeline_upload_job_without_a_kfp_api_server_fails_naming_it(cluster) -> None:
    pods, _, _ = cluster
    [job] = [w for w in pods.workloads() if w.kind == "Job"]
    assert job.name == "kiln-pipelines-upload"
    res = pods.run(job)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "KFP API server at http://127.0.0.1:9" in res.stderr, res.stderr[-2000:]
