"""Real datasets that ship inside scikit-learn (nothing is downloaded), written as the CSV exports Kiln imports."""

from __future__ import annotations

from pathlib import Path

WINE_CLASSES = {0: "barolo", 1: "grignolino", 2: "barbera"}  # the three cultivars of the UCI wine data


def diabetes_csv(path: Path) -> Path:
    """442 patients, ten baseline measurements, and disease progression a year later (a number): regression."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.insert(0, "patient", range(1, len(frame) + 1))
    frame.to_csv(path, index=False)
    return path


def wine_csv(path: Path) -> Path:
    """178 wines, thirteen chemical measurements, and their cultivar (three named classes): multiclass."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame.insert(0, "bottle", range(1, len(frame) + 1))
    frame["cultivar"] = frame.pop("target").map(WINE_CLASSES)
    frame.to_csv(path, index=False)
    return path
