"""Loads an SLO catalogue from YAML (the pure model lives in ``slo.catalogue``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from slipstream.slo.catalogue import Catalogue, CatalogueError, parse_catalogue

EXAMPLE = "example.yaml"


def example_catalogue_text() -> str:
    return (resources.files("slipstream.catalogues") / EXAMPLE).read_text()


def load_catalogue(path: str | None) -> Catalogue:
    """The catalogue at ``path``, or the shipped example when no path is set."""
    if not path:
        return parse_catalogue(yaml.safe_load(example_catalogue_text()), f"(example) {EXAMPLE}")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CatalogueError(f"{path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalogue(raw, path)
