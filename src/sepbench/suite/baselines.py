"""The shipped baselines: the project's own models measured on the suite, stored as a
versioned JSON file inside the package (``baselines-<budget>.json``), with provenance (commit,
machine, date, seeds, the command) and the digest of the suite definition they were measured
on, so a user's run is compared without re-running them. ``sepbench suite
--refresh-baselines`` measures and rewrites the file.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from sepbench.errors import SepbenchError
from sepbench.store import git_sha
from sepbench.suite.definition import Suite
from sepbench.suite.verdict import Score, Scores

FORMAT = 1


@dataclass(frozen=True)
class MeasuredModel:
    """One model's suite scores: its label, kind, model config and wall time (CPU-seconds of
    its runs summed)."""

    label: str
    kind: str
    model: dict[str, Any]
    scores: Scores
    run_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "kind": self.kind, "model": self.model,
            "run_seconds": round(self.run_seconds, 1),
            "scores": {
                family: {str(n): {"values": list(s.values), "lr": s.lr} for n, s in by_n.items()}
                for family, by_n in self.scores.items()
            },
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MeasuredModel:
        scores = {
            family: {int(n): Score(tuple(s["values"]), float(s["lr"])) for n, s in by_n.items()}
            for family, by_n in raw["scores"].items()
        }
        return cls(raw["label"], raw["kind"], raw["model"], scores, float(raw["run_seconds"]))


@dataclass(frozen=True)
class Baselines:
    """A baselines file: the models and the provenance of their measurement."""

    suite_digest: str
    provenance: dict[str, Any]
    models: list[MeasuredModel]

    def stale(self, suite: Suite) -> bool:
        """Measured on another definition of the suite than ``suite``."""
        return self.suite_digest != suite.digest()


def path(budget: str) -> Path:
    return Path(str(resources.files("sepbench") / "suite" / f"baselines-{budget}.json"))


def load(suite: Suite) -> Baselines | None:
    """The shipped baselines of the suite's budget (None when never measured)."""
    file = path(suite.budget)
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text())
        models = [MeasuredModel.from_json(m) for m in raw["models"]]
        return Baselines(raw["suite_digest"], raw["provenance"], models)
    except (ValueError, KeyError, TypeError) as error:
        raise SepbenchError(f"suite baselines {file.name}: unreadable ({error})") from None


def save(suite: Suite, models: list[MeasuredModel], seeds: int, command: str) -> Path:
    """Write the baselines file of the suite's budget with this machine's provenance."""
    provenance = {
        "command": command,
        "commit": git_sha(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "seeds": seeds,
    }
    data = {"format": FORMAT, "budget": suite.budget, "suite_digest": suite.digest(),
            "provenance": provenance, "models": [m.to_json() for m in models]}
    file = path(suite.budget)
    file.write_text(json.dumps(data, indent=1) + "\n")
    return file
