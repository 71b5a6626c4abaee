"""What an import produced: a catalogue mapping, and every field it could not express."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NAME_CHARS = re.compile(r"[^a-z0-9_-]+")


@dataclass
class ImportResult:
    catalogue: dict[str, Any] = field(default_factory=lambda: {"services": {}})
    unsupported: list[str] = field(default_factory=list)  # "path: why"
    skipped: list[str] = field(default_factory=list)  # SLOs not imported, with the reason
    imported: int = 0

    def note(self, path: str, why: str) -> None:
        self.unsupported.append(f"{path}: {why}")

    def add_slo(self, service: str, slo: dict[str, Any]) -> None:
        services = self.catalogue["services"]
        services.setdefault(service, {"slos": []})["slos"].append(slo)
        self.imported += 1

    def report(self) -> str:
        lines = [f"imported {self.imported} SLO(s)"]
        if self.skipped:
            lines.append("not imported:")
            lines += [f"  - {s}" for s in self.skipped]
        if self.unsupported:
            lines.append("cannot be expressed in a slipstream catalogue (left out):")
            lines += [f"  - {u}" for u in self.unsupported]
        return "\n".join(lines)


def slo_name(raw: str) -> str:
    """A catalogue SLO name from another tool's (lower case, [a-z0-9_-], 63 chars)."""
    name = _NAME_CHARS.sub("-", raw.lower()).strip("-_")
    return name[:63] or "slo"
