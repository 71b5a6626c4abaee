"""`slipstream import openslo|sloth FILE` and `slipstream validate CATALOGUE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from slipstream.catalogue_file import load_catalogue
from slipstream.slo.catalogue import CatalogueError, parse_catalogue
from slipstream.spec_import.openslo import import_openslo
from slipstream.spec_import.report import ImportResult
from slipstream.spec_import.sloth import import_sloth

EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2
IMPORTERS = {"openslo": import_openslo, "sloth": import_sloth}


def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    imp = verbs.add_parser(
        "import", parents=[common], help="convert OpenSLO v1 or Sloth prometheus/v1 specs"
    )
    imp.add_argument("format", choices=sorted(IMPORTERS))
    imp.add_argument("file", help="a YAML file (several documents allowed)")
    imp.add_argument("--out", help="write the catalogue here (default: standard output)")
    val = verbs.add_parser("validate", parents=[common], help="check a catalogue file")
    val.add_argument("catalogue_file", metavar="CATALOGUE")


def run_import(args: argparse.Namespace) -> int:
    try:
        docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d is not None]
    except OSError as exc:
        print(f"slipstream import: {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    except yaml.YAMLError as exc:
        print(f"slipstream import: {args.file}: not valid YAML: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result: ImportResult = IMPORTERS[args.format](docs, args.file)
    print(result.report(), file=sys.stderr)
    if not result.imported:
        print("slipstream import: nothing could be imported", file=sys.stderr)
        return EXIT_INVALID
    try:  # what the worker will load must load
        parse_catalogue(result.catalogue, f"(imported from) {args.file}")
    except CatalogueError as exc:
        print(f"slipstream import: the converted catalogue is invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    text = f"# Imported from {args.file} ({args.format}) by slipstream import.\n"
    text += yaml.safe_dump(result.catalogue, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    try:
        catalogue = load_catalogue(args.catalogue_file)
    except CatalogueError as exc:
        print(f"slipstream validate: {exc}", file=sys.stderr)
        return EXIT_INVALID
    slos = catalogue.all_slos()
    print(f"{args.catalogue_file}: valid: {len(catalogue.services)} service(s), "
          f"{len(slos)} SLO(s)")  # fmt: skip
    for slo in slos:
        tiers = ", ".join(f"{t.name} {t.severity} x{t.factor:g}" for t in slo.tiers)
        print(f"  {slo.service}/{slo.name}: {slo.objective_percent:g}% over "
              f"{slo.period_days}d, {slo.sli.kind}; tiers: {tiers or 'none'}")  # fmt: skip
    return EXIT_OK
