"""The Dockerfiles: pinned bases, locked installs, a non-root user the chart agrees with, sources that exist.

No container engine runs here, so the images are not built in the suite (README: Cluster); these checks read them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"platform": (ROOT / "Dockerfile", ROOT), "edge": (ROOT / "edge" / "Dockerfile", ROOT / "edge")}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("image", list(IMAGES))
def test_base_image_is_pinned_to_a_patch_release(image: str) -> None:
    [base] = [arg for op, arg in instructions(IMAGES[image][0]) if op == "FROM"]
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[a-f0-9]{64})?", base), base


@pytest.mark.parametrize("image", list(IMAGES))
def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [arg for op, arg in instructions(IMAGES[image][0]) if op == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) > 0
    created = re.search(r"useradd --uid (\d+)", IMAGES[image][0].read_text())
    assert created and created.group(1) == users[-1]


def test_chart_runs_the_platform_image_as_its_user() -> None:
    user = [arg for op, arg in instructions(IMAGES["platform"][0]) if op == "USER"][-1]
    values = yaml.safe_load((ROOT / "charts" / "kiln" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user)


@pytest.mark.parametrize("image", list(IMAGES))
def test_every_copied_source_exists_and_is_not_ignored(image: str) -> None:
    dockerfile, context = IMAGES[image]
    ignore = context / ".dockerignore"
    ignored = {line.strip() for line in ignore.read_text().splitlines()} if ignore.is_file() else set()
    for op, arg in instructions(dockerfile):
        if op != "COPY":
            continue
        *sources, _ = arg.split()
        for source in sources:
            assert (context / source).exists(), f"{dockerfile}: COPY {source}: not in {context}"
            assert source not in ignored, f"{dockerfile}: COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("image", list(IMAGES))
def test_packages_install_from_hash_checked_locks(image: str) -> None:
    dockerfile, context = IMAGES[image]
    runs = " ".join(arg for op, arg in instructions(dockerfile) if op == "RUN")
    assert "--require-hashes" in runs
    locks = set(re.findall(r"[\w-]+\.lock", dockerfile.read_text()))
    assert locks
    for lock in locks:
        text = (context / lock).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)
        assert pins and text.count("--hash=sha256:") >= len(pins), lock
        assert "://" not in text, f"{lock} names a download address"


def test_edge_locks_pin_the_same_versions_on_both_architectures() -> None:
    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "edge" / name).read_text(), re.M))

    assert pins("requirements-x86_64.lock") == pins("requirements-aarch64.lock")
