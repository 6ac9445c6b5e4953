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
    """``landmark_variants`` + ``segmentation_variants`` of the params, each checked against the
    registry (an unknown name or a name under the wrong family is a :class:`ConfigError`)."""
    from fetalbio.variants import VARIANTS

    names: list[str] = []
    for family in ("landmark", "segmentation"):
        key = f"{family}_variants"
        listed = get_key(raw, key, str(params_path))
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ConfigError(f"{params_path}: {key} must be a list of variant names, got {listed!r}")
        for n in listed:
            if n not in VARIANTS:
                raise ConfigError(f"{params_path}: {key}: unknown variant {n!r}; valid: {', '.join(VARIANTS)}")
            if VARIANTS[n].family != family:
                raise ConfigError(f"{params_path}: {key}: {n!r} is a {VARIANTS[n].family} variant")
        names += listed
    if not names:
        raise ConfigError(f"{params_path}: landmark_variants and segmentation_variants are both empty")
    return names


def read_seed(params_path: Path) -> int:
    seed = get_key(read_params(params_path), "seed", str(params_path))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{params_path}: seed must be an integer, got {seed!r}")
    return seed
