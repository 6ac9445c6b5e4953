"""Shared plumbing for the stage commands: clean error reporting and the seed."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from fetalbio.config import ConfigError, get_key, read_params

F = TypeVar("F", bound=Callable)

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", help="Params file (DVC's params.yaml).", dir_okay=False)


def plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def friendly_errors(*kinds: type[BaseException]) -> Callable[[F], F]:
    """Turn expected errors into a one-block message on stderr and exit code 1."""
    caught = (ConfigError, *kinds)

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except caught as exc:
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                sys.exit(1)

        return wrapper  # type: ignore[return-value]

    return deco


def read_variant_names(raw: dict, params_path: Path) -> list[str]:
    """``variant_names`` of the params: the first-stage methods the pipeline trains, each
    checked against the registry (an unknown name, a repeated one or the refinement stage itself
    is a :class:`ConfigError`)."""
    from fetalbio.variants import VARIANTS

    for old in ("landmark_variants", "segmentation_variants"):
        if old in raw:
            raise ConfigError(f"{params_path}: {old} is gone; list every variant in one `variant_names` list")
    listed = get_key(raw, "variant_names", str(params_path))
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise ConfigError(f"{params_path}: variant_names must be a list of variant names, got {listed!r}")
    valid = [n for n, spec in VARIANTS.items() if spec.standalone_family]
    for n in listed:
        if n not in VARIANTS or not VARIANTS[n].standalone_family:
            raise ConfigError(f"{params_path}: variant_names: unknown variant {n!r}; valid: {', '.join(valid)}")
    dup = sorted({n for n in listed if listed.count(n) > 1})
    if dup:
        raise ConfigError(f"{params_path}: variant_names: {dup} listed twice")
    if not listed:
        raise ConfigError(f"{params_path}: variant_names is empty")
    return list(listed)


def compared_names(raw: dict, params_path: Path) -> list[str]:
    """What ``compare`` tabulates (:func:`fetalbio.variants.compared_methods` of ``variant_names``)."""
    from fetalbio.variants import compared_methods

    return compared_methods(read_variant_names(raw, params_path))


def read_seed(params_path: Path) -> int:
    seed = get_key(read_params(params_path), "seed", str(params_path))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{params_path}: seed must be an integer, got {seed!r}")
    return seed
