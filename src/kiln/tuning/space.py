"""Search spaces: a family's parameter ranges, narrowed by the user, as Ray Tune sampling domains."""

from __future__ import annotations

from typing import Any

from kiln.errors import InputError
from kiln.training.family import Family, Param


def parse_ranges(items: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``NAME=LOW:HIGH`` (a range) or ``NAME=A,B,C`` (choices; one value fixes the parameter)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"--range '{item}': expected NAME=LOW:HIGH, NAME=A,B,C or NAME=VALUE")
        out[name] = ("range", value.split(":")) if ":" in value else ("choices", value.split(","))
    return out


def narrowed(family: Family, ranges: dict[str, tuple[str, list[str]]]) -> dict[str, Param]:
    """The family's parameters with user ranges applied; a range outside the family's bounds is an error."""
    params = dict(family.params)
    for name, (kind, values) in ranges.items():
        if name not in params:
            raise InputError(f"--range {name}: family {family.name} has no parameter '{name}'; "
                             f"it has: {', '.join(params)}")
        base = params[name]
        numeric = base.kind != "choice" or all(isinstance(c, (int, float)) for c in base.choices)
        parsed = [_number(name, v) if numeric else v for v in values]
        if kind == "choices":
            params[name] = Param("choice", choices=tuple(base.check(name, v) for v in parsed))
            continue
        if base.kind == "choice" or len(parsed) != 2:
            raise InputError(f"--range {name}: give LOW:HIGH for a numeric parameter, or A,B,C for choices")
        low, high = (base.check(name, v) for v in parsed)
        if low >= high:
            raise InputError(f"--range {name}={values[0]}:{values[1]}: the low end must be below the high end")
        params[name] = Param(base.kind, low, high, base.log)
    return params


def _number(name: str, text: str) -> float | int:
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise InputError(f"--range {name}: '{text}' is not a number") from None


def ray_space(params: dict[str, Param]) -> dict[str, Any]:
    """Ray Tune domains: log-uniform where a range spans orders of magnitude, uniform elsewhere."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, p in params.items():
        if p.kind == "choice":
            space[name] = tune.choice(list(p.choices))
            continue
        assert p.low is not None and p.high is not None  # a numeric Param is always built with its range
        if p.kind == "int":
            space[name] = (tune.lograndint if p.log else tune.randint)(int(p.low), int(p.high) + 1)
        else:
            space[name] = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
    return space


def clip(config: dict[str, Any], params: dict[str, Param]) -> dict[str, Any]:
    """An earlier configuration moved into the current ranges (for transfer warm start)."""
    out = {}
    for name, p in params.items():
        value = config.get(name)
        if p.kind == "choice":
            out[name] = value if value in p.choices else p.choices[0]
            continue
        assert p.low is not None and p.high is not None  # a numeric Param is always built with its range
        if value is None:
            out[name] = p.low if not p.log else (p.low * p.high) ** 0.5
        else:
            number = min(max(float(value), p.low), p.high)
            out[name] = round(number) if p.kind == "int" else number
    return out
