"""The automaton compiler: any DFA (:mod:`~sepbench.constructions.automaton`) into an Elman RNN
or an LSTM of fixed width (papers.md §2, "any RNN computing a language whose minimal DFA has n
states needs mp >= log n", and the constant-size RNN for Dyck-(2, 2)).

The hidden units are the automaton's live transitions (Minsky's construction): unit u = (q, a)
is on at step t iff the state before token t was q and token t is in input class a, and only
transitions into a live state get a unit. With h̃ ∈ {0, 1}^m,

    h̃_t[u] = H( Σ_{u' : δ(u') = q(u)} h̃_{t-1}[u'] + [class(x_t) = a(u)] - 3/2 ),

one threshold unit per transition: the first sum is 1 iff the state before token t is q(u).
Exactly one unit is on while the automaton is alive and none once it is dead, so the state is
exact at every step and the width is the automaton's whatever the input length. The logits
read out the output of the state each active unit leads to (2 for it, plus 1 for the dead
state's output, which wins when no unit is on). The initial state is the one-hot of a unit
leading to the start state (a "boot" unit that never fires again is added when no transition
enters the start state).

Cells (the choices the construction leaves open):

- ``dfa_elman`` with ``activation: step``: the threshold H(z) = [z > 0] itself, run as a loop
  over time (the reference).
- ``dfa_elman`` with ``activation: tanh``: the same pre-activations scaled by ``gain`` on the
  ±1 encoding h = 2h̃ - 1. Every pre-activation is ±gain/2 or further from 0, and tanh
  saturates to exactly ±1 in float32 from 9.01 on, so with the default gain 20 the state is
  exact: this is a ``torch.nn.RNN`` with constructed weights, run by its fused kernel.
- ``dfa_lstm``: ``torch.nn.LSTM`` weights with the input and output gates open (bias +gain),
  the forget gate shut (bias -gain) and the cell input g the tanh pre-activation above, so the
  cell is c_t = ±1 and h_t = tanh(1)·c_t; the recurrent weights undo the tanh(1).

Under a ``precision`` knob every cell runs as a loop that rounds the pre-activations and the
state after every step. :meth:`AutomatonRNN.certificate` checks every transition in one step
from every exactly encoded state, which by induction proves the model right on inputs of every
length.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sepbench.constructions.automaton import Automaton, State, automaton_for
from sepbench.constructions.base import PRECISION_KNOBS, Construction, positive_number
from sepbench.errors import SepbenchError, check_choice
from sepbench.tasks.base import Task

ACTIVATIONS = ("step", "tanh")
MAX_UNITS = 8192
"""The widest RNN compiled (its dense recurrent matrix has MAX_UNITS² entries)."""
TANH_ONE = math.tanh(1.0)


def transition_units(automaton: Automaton) -> tuple[list[tuple[int, int]], list[int], int]:
    """(units as (state, class), the state each unit leads to, the initial unit)."""
    units = [
        (q, a)
        for q, row in enumerate(automaton.delta)
        for a, after in enumerate(row)
        if after is not None
    ]
    leads = [automaton.delta[q][a] for q, a in units]
    if automaton.start in leads:
        return units, leads, leads.index(automaton.start)
    return [*units, (-1, -1)], [*leads, automaton.start], len(units)


class AutomatonRNN(Construction):
    """An RNN whose hidden units are a DFA's transitions (module docstring)."""

    theorem = "papers.md §2: a DFA's RNN, one unit per transition (minimal DFA: mp >= log n)"
    tasks = ("dyck", "parity", "counting")
    any_length = True
    cell: ClassVar[str]

    def __init__(
        self,
        task: Task,
        length: int,
        *,
        activation: str,
        gain: float,
        bound: int | None,
        precision: int | None,
        rounding: str,
    ) -> None:
        super().__init__(task, length, precision, rounding)
        self.activation = str(check_choice(self.name, "activation", activation, ACTIVATIONS))
        self.gain = positive_number(self.name, "gain", gain)
        self.automaton = automaton_for(task, length, bound)
        units, self.leads, self.initial_unit = transition_units(self.automaton)
        self.width = len(units)
        if self.width > MAX_UNITS:
            raise SepbenchError(
                f"{self.name}: the automaton of {task.describe()} at length {length} has "
                f"{self.width} transitions, more units than {MAX_UNITS}; lower the bound"
            )
        state, kind = torch.tensor(units).T
        classes = torch.tensor([self.automaton.token_class[t] for t in range(self.vocab_size)])
        recurrent = ((torch.tensor(self.leads)[None, :] == state[:, None]) & (state[:, None] >= 0))
        inputs = (classes[None, :] == kind[:, None]) & (kind[:, None] >= 0)
        recurrent, inputs = recurrent.float(), inputs.float()
        readout = torch.zeros(self.vocab_size, self.width)
        for u, lead in enumerate(self.leads):
            readout[self.automaton.outputs[lead], u] = 2.0
        readout_bias = torch.zeros(self.vocab_size)
        readout_bias[self.automaton.dead_output] = 1.0
        self.readout = self.constant(readout)
        self.readout_bias = self.constant(readout_bias)
        self._build_cell(recurrent, inputs)

    # -- the cells ------------------------------------------------------------------------

    def _build_cell(self, recurrent: Tensor, inputs: Tensor) -> None:
        """Weights on the cell's own encoding of h̃ (see the module docstring)."""
        g, incoming = self.gain, recurrent.sum(dim=1)
        if self.activation == "step":
            self.weight_hh = self.constant(recurrent)
            self.weight_ih = self.constant(inputs)
            self.bias = self.constant(torch.full((self.width,), -1.5))
            return
        scale = 1.0 if self.cell == "elman" else TANH_ONE
        weight_hh = g / (2 * scale) * recurrent
        weight_ih = g * inputs
        bias = g * (incoming / 2 - 1.5)
        if self.cell == "elman":
            self.module = nn.RNN(self.vocab_size, self.width, batch_first=True)
            weights = (weight_ih, weight_hh, bias, torch.zeros(self.width))
        else:
            self.module = nn.LSTM(self.vocab_size, self.width, batch_first=True)
            gates = torch.full((4 * self.width,), g)
            gates[self.width : 2 * self.width] = -g
            gates[2 * self.width : 3 * self.width] = bias
            zero_ih = torch.zeros(4 * self.width, self.vocab_size)
            zero_hh = torch.zeros(4 * self.width, self.width)
            zero_ih[2 * self.width : 3 * self.width] = weight_ih
            zero_hh[2 * self.width : 3 * self.width] = weight_hh
            weights = (zero_ih, zero_hh, gates, torch.zeros(4 * self.width))
        for parameter, value in zip(self.module.parameters(), weights):
            parameter.data.copy_(value)
            parameter.requires_grad_(False)

    def encode(self, active: Tensor) -> Any:
        """The cell's state for h̃ = ``active`` (B, m) in {0, 1}, rounded as a step rounds it."""
        if self.activation == "step":
            return active
        signs = 2 * active - 1
        return signs if self.cell == "elman" else (self.precision(TANH_ONE * signs), signs)

    def decode(self, hidden: Tensor) -> Tensor:
        """h̃ from the cell's output h (..., m)."""
        if self.activation == "step":
            return hidden
        return (hidden / (1.0 if self.cell == "elman" else TANH_ONE) + 1) / 2

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        if self.activation == "tanh" and self.precision.bits is None:
            hidden, state = self._fused(tokens, state)
        else:
            hidden, state = self.stepwise(tokens, state)
        return self.decode(hidden) @ self.readout.T + self.readout_bias, state

    def _fused(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """torch's RNN/LSTM kernel on one-hot tokens."""
        onehot = nn.functional.one_hot(tokens, self.vocab_size).float()
        if self.cell == "elman":
            hidden, last = self.module(onehot, state[None].contiguous())
            return hidden, last[0]
        hidden, (h, c) = self.module(onehot, (state[0][None].contiguous(), state[1][None]))
        return hidden, (h[0], c[0])

    def initial_state(self, batch: int, device: torch.device) -> Any:
        """The encoded one-hot of the unit that leads to the start state."""
        start = torch.zeros(batch, self.width, device=device)
        start[:, self.initial_unit] = 1.0
        return self.encode(start)

    def stepwise(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """(h for every step, the last state), one step at a time, rounding pre-activations and
        state: the reference form of every cell."""
        rounded, outputs = self.precision, []
        if self.activation == "step":
            drive = self.weight_ih.T[tokens] + self.bias
            for t in range(tokens.shape[1]):
                state = (rounded(state @ self.weight_hh.T + drive[:, t]) > 0).to(drive.dtype)
                outputs.append(state)
            return torch.stack(outputs, dim=1), state
        weight_ih, weight_hh, bias_ih, bias_hh = self.module.parameters()
        drive = weight_ih.T[tokens] + bias_ih + bias_hh
        for t in range(tokens.shape[1]):
            hidden = state if self.cell == "elman" else state[0]
            pre = rounded(hidden @ weight_hh.T + drive[:, t])
            if self.cell == "elman":
                state = rounded(torch.tanh(pre))
                outputs.append(state)
                continue
            gate_i, gate_f, cell_in, gate_o = pre.chunk(4, dim=-1)
            kept = torch.sigmoid(gate_f) * state[1]
            cell = rounded(kept + torch.sigmoid(gate_i) * torch.tanh(cell_in))
            state = (rounded(torch.sigmoid(gate_o) * torch.tanh(cell)), cell)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state

    # -- what the construction promises ---------------------------------------------------

    def states(self, tokens: Tensor) -> list[list[State | None]]:
        """The automaton state each step's hidden vector encodes (None: dead), per example."""
        hidden = self.stepwise(tokens, self.initial_state(tokens.shape[0], tokens.device))[0]
        active = self.decode(hidden) > 0.5
        names = self.automaton.names
        return [
            [names[self.leads[int(row.nonzero()[0, 0])]] if row.any() else None for row in steps]
            for steps in active
        ]

    def certificate(self) -> dict[str, Any]:
        """One step from every exactly encoded state (each unit, and the dead state) on every
        token lands exactly on the encoding of the right unit and predicts the right token:
        by induction the model is right on inputs of every length."""
        previous = torch.cat([torch.eye(self.width), torch.zeros(1, self.width)])
        rows = previous.repeat_interleave(self.vocab_size, dim=0)
        tokens = torch.arange(self.vocab_size).repeat(len(previous))[:, None]
        state = self.encode(rows)
        with torch.no_grad():
            logits, after = self.forward(tokens, state)
        expected = torch.zeros_like(rows)
        predicted = torch.full((len(rows),), self.automaton.dead_output)
        classes, units = self.automaton.token_class, self._units()
        for i, (row, token) in enumerate(zip(rows, tokens[:, 0].tolist())):
            was = row.nonzero()
            if not len(was):
                continue
            target = units.get((self.leads[int(was[0, 0])], classes[token]))
            if target is not None:
                expected[i, target] = 1.0
                predicted[i] = self.automaton.outputs[self.leads[target]]
        exact = self.encode(expected)
        same = (
            torch.equal(after, exact)
            if self.cell == "elman" or self.activation == "step"
            else torch.equal(after[0], exact[0]) and torch.equal(after[1], exact[1])
        )
        right = torch.equal(logits[:, 0].argmax(dim=-1), predicted)
        return {"certified": bool(same and right), "transitions": self.width}

    def _units(self) -> dict[tuple[int, int], int]:
        units, _, _ = transition_units(self.automaton)
        return {unit: u for u, unit in enumerate(units) if unit[0] >= 0}

    def state_size(self, seq_len: int) -> int:
        return self.width if self.cell == "elman" else 2 * self.width

    def size(self) -> dict[str, Any]:
        return {
            "layers": 1, "width": self.width, "states": len(self.automaton.names),
            "classes": len(self.automaton.classes), "cell": self.cell,
            "activation": self.activation, "precision": self.precision.describe(),
        }


class AutomatonElman(AutomatonRNN):
    """The automaton as an Elman RNN, threshold (``step``) or saturating (``tanh``) units."""

    name = "dfa_elman"
    cell = "elman"
    knobs: ClassVar[dict[str, Any]] = {
        "activation": "step", "gain": 20.0, "bound": None, **PRECISION_KNOBS
    }

    def __init__(
        self,
        task: Task,
        length: int,
        *,
        seed: int = 0,
        activation: str = "step",
        gain: float = 20.0,
        bound: int | None = None,
        precision: int | None = None,
        rounding: str = "fixed",
    ) -> None:
        super().__init__(
            task, length, activation=activation, gain=gain, bound=bound, precision=precision,
            rounding=rounding,
        )


class AutomatonLSTM(AutomatonRNN):
    """The automaton as LSTM weights (gates constant, the cell input the Elman step)."""

    name = "dfa_lstm"
    cell = "lstm"
    knobs: ClassVar[dict[str, Any]] = {"gain": 20.0, "bound": None, **PRECISION_KNOBS}

    def __init__(
        self,
        task: Task,
        length: int,
        *,
        seed: int = 0,
        gain: float = 20.0,
        bound: int | None = None,
        precision: int | None = None,
        rounding: str = "fixed",
    ) -> None:
        super().__init__(
            task, length, activation="tanh", gain=gain, bound=bound, precision=precision,
            rounding=rounding,
        )
