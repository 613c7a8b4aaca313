"""Scores and verdicts of the suite: per family and length, a model's metric over its seeds at
the learning rate chosen on validation, and, at the judged length, which baselines it behaves
like.

A family's outcome for one model is ``solves`` (mean at or above the judge's ``pass``),
``fails`` (at or below ``fail``) or ``between``. A model behaves like the baselines whose
outcome it shares: "like a Transformer" when it shares every Transformer baseline's and no
recurrent one's, "like a recurrent model" the other way round, "like both" when the baselines do
not separate at this budget, and otherwise by name (the recurrent baselines themselves differ
where linear-state models do: parity out of distribution, papers.md §3); "neither" when its
mean lies between the thresholds or no baseline shares its outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sepbench.aggregate import Estimate, Selection, estimate, group_runs
from sepbench.store import Store
from sepbench.suite.definition import Judge, Suite, SuiteRun

LR = "train.lr"


@dataclass(frozen=True)
class Score:
    """A model's metric at one family and length: one value per seed, at the chosen rate."""

    values: tuple[float, ...]
    lr: float

    @property
    def estimate(self) -> Estimate:
        return estimate(list(self.values))


# family -> length -> score (a length whose runs all failed is missing)
Scores = dict[str, dict[int, Score]]


@dataclass(frozen=True)
class Peer:
    """A baseline as a verdict sees it: its label, kind and score at the judged length."""

    label: str
    kind: str
    score: Score | None


def scores(suite: Suite, planned: Sequence[SuiteRun], store: Store) -> Scores:
    """Each family's scores from the store's finished runs of ``planned``: per length, the
    learning rate with the best mean validation accuracy over the seeds, and its metric."""
    result: Scores = {}
    for name, family in suite.families.items():
        for length in family.lengths:
            hashes = {r.experiment.config_hash() for r in planned
                      if r.family == name and r.length == length}
            records = [store.lookup_finished(h) for h in sorted(hashes)]
            found = [record for record in records if record is not None]
            groups = group_runs(found, Selection((LR,)))
            if not groups:
                continue
            values = groups[0].values(family.judge.metric).get(length)
            if values:
                lr = float(groups[0].chosen[LR])
                result.setdefault(name, {})[length] = Score(tuple(values), lr)
    return result


def outcome(judge: Judge, score: Score | None) -> str:
    return "missing" if score is None else judge.outcome(score.estimate.mean)


def behaves_like(judge: Judge, score: Score | None, peers: Sequence[Peer]) -> str:
    """Which baselines the model's outcome matches (see the module docstring)."""
    mine = outcome(judge, score)
    if mine in ("missing", "between"):
        return "neither" if mine == "between" else "not run"
    sides = {"transformer": [], "recurrent": []}
    for peer in peers:
        if outcome(judge, peer.score) != "missing":
            sides[peer.kind].append(outcome(judge, peer.score) == mine)
    shares_tf = bool(sides["transformer"]) and all(sides["transformer"])
    shares_rnn = bool(sides["recurrent"]) and all(sides["recurrent"])
    if shares_tf and shares_rnn:
        return "like both (no separation at this budget)"
    if shares_tf and not any(sides["recurrent"]):
        return "like a Transformer"
    if shares_rnn and not any(sides["transformer"]):
        return "like a recurrent model"
    named = [p.label for p in peers
             if outcome(judge, p.score) == mine]
    return f"like {', '.join(named)}" if named else "neither"
