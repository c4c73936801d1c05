"""What every component here is, checked by each one's tests: a reusable KFP component on the platform image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from kiln import IMAGE


def interface(component: Any, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Compile ``component`` alone and check it; its inputs and outputs as {name: type} back.

    Checked: the platform image, a command, nothing installed at start, one call into kiln, a description of every
    input, and a README beside the component that names every input and output.
    """
    out = tmp_path / f"{component.name}.yaml"
    compiler.Compiler().compile(component, str(out))
    doc = yaml.safe_load(out.read_text())
    [executor] = doc["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == IMAGE, f"{component.name} runs on {container['image']}, not the platform image"
    assert container["command"] and container["args"], f"{component.name} has no command"
    assert "pip install" not in " ".join(container["command"]), f"{component.name} installs packages at start"
    assert "from kiln.workflow" in container["command"][-1], f"{component.name} does not call into kiln"
    [spec] = doc["components"].values()
    inputs: dict[str, str] = {}
    for kind in ("parameters", "artifacts"):
        for name, item in spec.get("inputDefinitions", {}).get(kind, {}).items():
            assert item.get("description"), f"{component.name}: input {name} has no description"
            inputs[name] = item.get("parameterType") or item["artifactType"]["schemaTitle"]
    outputs = {name: item.get("parameterType") or item["artifactType"]["schemaTitle"]
               for kind in ("parameters", "artifacts")
               for name, item in spec.get("outputDefinitions", {}).get(kind, {}).items()}
    readme = (Path(__file__).parent / component.python_func.__module__.split(".")[1] / "README.md").read_text()
    missing = [name for name in [*inputs, *outputs] if f"`{name}`" not in readme]
    assert not missing, f"{component.name}: its README does not name {', '.join(missing)}"
    return inputs, outputs
