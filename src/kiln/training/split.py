"""Train / validation / test splits: by time where label times vary, else random (stratified for classes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kiln.errors import InputError
from kiln.training.data import TIME_COLUMN, TrainingData

if TYPE_CHECKING:
    import pandas as pd

FRACTIONS = (0.70, 0.15, 0.15)


@dataclass
class Split:
    train: "pd.DataFrame"
    valid: "pd.DataFrame"
    test: "pd.DataFrame"
    method: str  # "time", "stratified" (classification) or "random" (regression)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def split(data: TrainingData, seed: int) -> Split:
    """Oldest 70% to train, next 15% to validate, newest 15% to test; stratified random when times are all equal."""
    frame = data.frame
    times = frame[TIME_COLUMN] if TIME_COLUMN in frame.columns else None
    if times is not None and times.nunique() > 2:
        ordered = frame.sort_values([TIME_COLUMN, *([data.key] if data.key else [])], kind="stable")
        n = len(ordered)
        a, b = int(n * FRACTIONS[0]), int(n * (FRACTIONS[0] + FRACTIONS[1]))
        result = Split(ordered.iloc[:a], ordered.iloc[a:b], ordered.iloc[b:], "time")
    else:
        from sklearn.model_selection import train_test_split

        if not data.task.is_classification:
            train, rest = train_test_split(frame, test_size=1 - FRACTIONS[0], random_state=seed)
            valid, test = train_test_split(rest, test_size=0.5, random_state=seed)
            return Split(train, valid, test, "random")
        y = frame[data.label]
        if y.value_counts().min() < 3:
            raise InputError(f"{data.path}: label '{data.label}' has fewer than 3 rows of one class; "
                             "it cannot be split into train, validation and test")
        train, rest = train_test_split(frame, test_size=1 - FRACTIONS[0], stratify=y, random_state=seed)
        valid, test = train_test_split(rest, test_size=0.5, stratify=rest[data.label], random_state=seed)
        result = Split(train, valid, test, "stratified")
    for name, part in (("train", result.train), ("validation", result.valid), ("test", result.test)):
        if data.task.is_classification and part[data.label].nunique() < 2:
            raise InputError(f"{data.path}: the {name} part of the {result.method} split has one class only; "
                             f"label '{data.label}' needs two classes or more in every part",
                             hint="use more labels, or labels spread over a longer time")
    return result
