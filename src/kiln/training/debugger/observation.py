"""What the Debugger sees of a model after a step: its losses and, where the family has them, its internals."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LayerStats:
    """One weight matrix of a network, measured on a sample of training rows."""

    layer: int  # 1 for the first weight matrix (inputs to the first hidden layer)
    units: int  # the layer's output units
    mean_abs_gradient: float | None  # mean |d loss / d weight| over the matrix; None: not measured at this step
    dead_share: float | None = None  # hidden ReLU layers: share of units that are zero on every sampled row


@dataclass(frozen=True)
class TreeStats:
    """A tree model's shape so far: how many inspected trees reached the configured cap, and gain by feature."""

    inspected: int  # trees whose shape was read (the newest rounds' at each look)
    at_cap: int  # of those, the ones that reached the cap
    cap: str  # what the cap is, as the family names it ("max_depth 4", "num_leaves 15")
    gain: dict[str, float] = field(default_factory=dict)  # feature -> share of the total gain, largest first


@dataclass(frozen=True)
class Observation:
    """One step: training and validation loss (the same measure), and the model's internals when looked at."""

    step: int
    train_loss: float
    valid_loss: float
    layers: tuple[LayerStats, ...] = ()
    trees: TreeStats | None = None


@dataclass(frozen=True)
class Finding:
    """A rule that fired: at which step, what it does about it, and the numbers that made it fire."""

    rule: str
    step: int
    action: str  # "stop" or "alert"
    message: str
