"""An MLP as an ONNX graph of standard operators only (MatMul, Add, Relu, Sigmoid, Softmax...).

Written here because skl2onnx's MLP converter emits ai.onnx.ml operators, which TVM cannot import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

INPUT = "features"
OUTPUT = "probabilities"  # classification: [N, K], P(class k) in class order (K = 2 for binary)
VALUE_OUTPUT = "value"  # regression: [N, 1]
OPSET = 17


def mlp_to_onnx(coefs: list["np.ndarray"], intercepts: list["np.ndarray"], mean: "np.ndarray",
                scale: "np.ndarray", kind: str = "binary", y_mean: float = 0.0,
                y_scale: float = 1.0) -> "onnx.ModelProto":
    """Standardize, hidden ReLU layers, then the task's output: logistic (binary), softmax (multiclass), or a value
    scaled back to the label's units (regression); the same function as the fitted sklearn MLP."""
    import numpy as np
    from onnx import helper, numpy_helper

    width = coefs[0].shape[0]
    inits = [numpy_helper.from_array(mean.astype(np.float32), "mean"),
             numpy_helper.from_array(scale.astype(np.float32), "scale")]
    nodes = [helper.make_node("Sub", [INPUT, "mean"], ["centered"]),
             helper.make_node("Div", ["centered", "scale"], ["h0"])]
    current = "h0"
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        if i < len(coefs) - 1:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i + 1}"]))
            current = f"h{i + 1}"
    last = f"z{len(coefs) - 1}"
    if kind == "binary":
        inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"))
        nodes += [helper.make_node("Sigmoid", [last], ["p1"]), helper.make_node("Sub", ["one", "p1"], ["p0"]),
                  helper.make_node("Concat", ["p0", "p1"], [OUTPUT], axis=1)]
        return probability_model(nodes, inits, width, "kiln_mlp")
    if kind == "multiclass":
        nodes.append(helper.make_node("Softmax", [last], [OUTPUT], axis=1))
        return probability_model(nodes, inits, width, "kiln_mlp", classes=coefs[-1].shape[1])
    inits += [numpy_helper.from_array(np.array([y_scale], dtype=np.float32), "y_scale"),
              numpy_helper.from_array(np.array([y_mean], dtype=np.float32), "y_mean")]
    nodes += [helper.make_node("Mul", [last, "y_scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "y_mean"], [VALUE_OUTPUT])]
    return probability_model(nodes, inits, width, "kiln_mlp", classes=0)


def probability_model(nodes: list[Any], inits: list[Any], width: int, name: str,
                      classes: int = 2) -> "onnx.ModelProto":  # NodeProto, TensorProto
    """A checked model of ``nodes``: FLOAT [batch, width] named INPUT in; out, FLOAT [batch, classes] named OUTPUT,
    or (``classes`` 0, regression) FLOAT [batch, 1] named VALUE_OUTPUT."""
    import onnx
    from onnx import TensorProto, helper

    out = (helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes]) if classes
           else helper.make_tensor_value_info(VALUE_OUTPUT, TensorProto.FLOAT, ["batch", 1]))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", width])],
        [out],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="kiln")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
