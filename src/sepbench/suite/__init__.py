"""The separation suite: any mixer, the project's own or a user's (``package.module:Class``,
``file.py:Class``), run through one compact configuration per claim family of the three papers
(papers.md §1-§3) and placed beside the shipped baselines (``sepbench suite``).

- :mod:`~sepbench.suite.definition`: the families, budgets (``cpu.yaml``, ``full.yaml``) and
  the experiments they expand to;
- :mod:`~sepbench.suite.verdict`: scores at the learning rate chosen on validation, and which
  baselines a model behaves like;
- :mod:`~sepbench.suite.baselines`: the versioned results file of the project's models;
- :mod:`~sepbench.suite.report`: the table and the HTML report.

Every run goes through the results store like any sweep's, so a stopped suite resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from sepbench import sweep
from sepbench.backends.base import SweepEvent
from sepbench.labels import config_summary
from sepbench.store import Store
from sepbench.suite.baselines import MeasuredModel
from sepbench.suite.definition import Suite, runs
from sepbench.suite.verdict import scores


def measure(
    suite: Suite,
    model: dict,
    kind: str,
    *,
    store: Store,
    seeds: int | None = None,
    workers: int | None = None,
    on_event: Callable[[SweepEvent], None] | None = None,
    per_family: dict[str, dict] | None = None,
) -> tuple[MeasuredModel, sweep.SweepResult]:
    """Run (or serve from the store) every experiment of the suite for ``model`` (changed per
    family by ``per_family``); its scores."""
    planned = runs(suite, model, seeds, per_family)
    experiments = [r.experiment for r in planned]
    result = sweep.run_all(experiments, store=store, workers=workers, on_event=on_event)
    records = [store.lookup_finished(e.config_hash()) for e in result.experiments]
    seconds = sum(r.wall_time_s or 0.0 for r in records if r is not None)
    label = config_summary(experiments[0].resolved())
    measured = MeasuredModel(label, kind, model, scores(suite, planned, store), seconds)
    return measured, result
