"""The model families Kiln trains, by name: the one registry every command that picks a family consults."""

from __future__ import annotations

from kiln.errors import InputError
from kiln.training.family import Family
from kiln.training.lgbm import LGBM
from kiln.training.mlp import MLP
from kiln.training.xgb import XGB

FAMILIES: dict[str, Family] = {f.name: f for f in (LGBM, XGB, MLP)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise InputError(f"unknown model family '{name}'; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
