"""An MLP as an ONNX graph of standard operators only (MatMul, Add, Relu, Sigmoid...).

Written here because skl2onnx's MLP converter emits ai.onnx.ml operators, which TVM cannot import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

INPUT = "features"
OUTPUT = "probabilities"  # [N, 2]: P(class 0), P(class 1)
OPSET = 17


def mlp_to_onnx(coefs: list["np.ndarray"], intercepts: list["np.ndarray"], mean: "np.ndarray",
                scale: "np.ndarray") -> "onnx.ModelProto":
    """Standardize, hidden ReLU layers, a logistic output: the same function as the fitted sklearn MLP."""
    import numpy as np
    from onnx import helper, numpy_helper

    width = coefs[0].shape[0]
    inits = [numpy_helper.from_array(mean.astype(np.float32), "mean"),
             numpy_helper.from_array(scale.astype(np.float32), "scale"),
             numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")]
    nodes = [helper.make_node("Sub", [INPUT, "mean"], ["centered"]),
             helper.make_node("Div", ["centered", "scale"], ["h0"])]
    current = "h0"
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        last = i == len(coefs) - 1
        nodes.append(helper.make_node("Sigmoid" if last else "Relu", [f"z{i}"], [f"h{i + 1}"]))
        current = f"h{i + 1}"
    nodes += [helper.make_node("Sub", ["one", current], ["p0"]),
              helper.make_node("Concat", ["p0", current], [OUTPUT], axis=1)]
    return probability_model(nodes, inits, width, "kiln_mlp")


def probability_model(nodes: list[Any], inits: list[Any], width: int, name: str) -> "onnx.ModelProto":  # NodeProto, TensorProto
    """A checked model of ``nodes``: FLOAT [batch, width] named INPUT in, FLOAT [batch, 2] named OUTPUT out."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="kiln")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
