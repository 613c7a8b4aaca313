"""Comparing two halves of the input: string equality (with its copying variant) and set
disjointness (Bhattamishra et al. §2).

Both have a two-layer Transformer of size O(log³ N) while any RNN needs mp >= N/2 bits: the
second half can only be judged against an exact memory of the first (papers.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.tasks.base import Batch, Task, Vocab, register

SEP, TRUE, FALSE = "[SEP]", "[TRUE]", "[FALSE]"
VARIANTS = ("random", "one_off", "copy")
PAPER_ALPHABET = {"random": 2, "one_off": 1024, "copy": 1024}


def _even_length(task: Task, length: int) -> int:
    check_int(task.name, "length", length, task.min_length, task.max_length())
    if length % 2:
        raise SepbenchError(f"{task.name}: length must be an even integer, got {length}")
    return length


def _label_ids(task: Task, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(B, 1) ``[TRUE]``/``[FALSE]`` completions and their answer strings."""
    true, false = task.vocab.ids([TRUE, FALSE])
    return np.where(labels, true, false)[:, None], np.where(labels, TRUE, FALSE).tolist()


@register
class StringEquality(Task):
    """String equality ``w [SEP] w'`` -> ``[TRUE]`` iff w = w', or copying ``w [SEP]`` -> ``w``.

    ``length`` = N, the symbols of both halves (even, >= 2): |w| = |w'| = N/2. Symbols are
    ``a<i>``, i < ``vocab_size``; w is i.i.d. uniform. Variants (papers.md §2, appendix H):

    - ``random``: negatives pair w with an independent uniform w' != w (redrawn while equal).
    - ``one_off``: negatives change one uniform position of w to a uniform other symbol.
    - ``copy``: the next-character-prediction variant; prompt ``w [SEP]``, completion ``w``,
      correct only when every token is (the paper's "every prefix predicted correctly").

    Classification variants are positive with probability 1/2. ``vocab_size`` defaults to the
    paper's alphabet: 2 for ``random``, 1024 for ``one_off`` and ``copy``. Training lengths are
    k ~ U{L, L+2, .., N} with L the smallest even number >= max(2, N/10) (the paper writes
    N/10, which may be odd); the test length is exactly N.
    """

    name = "string_equality"
    paper = "Bhattamishra et al. §2"
    summary = "are the two halves equal (or copy the first): needs an exact memory of N/2 symbols"
    length_meaning = "symbols in both halves together (even)"
    min_length = 2

    def __init__(self, *, variant: str = "random", vocab_size: int | None = None) -> None:
        self.variant = str(check_choice(self.name, "variant", variant, VARIANTS))
        size = PAPER_ALPHABET[self.variant] if vocab_size is None else vocab_size
        self.vocab_size = check_int(self.name, "vocab_size", size, 2)
        labels = [] if self.variant == "copy" else [TRUE, FALSE]
        self.vocab = Vocab([*(f"a{i}" for i in range(self.vocab_size)), SEP, *labels])
        self.symbol0, self.sep = self.vocab.ids(["a0", SEP])
        self.strings = np.array(self.vocab.tokens, dtype=object)  # id array -> token strings

    def validate_length(self, length: int) -> int:
        return _even_length(self, length)

    def completion_cap(self, length: int) -> int:
        return length // 2 if self.variant == "copy" else 1

    def chance(self, length: int) -> float:
        """1/2 for the balanced label; ``copy``: (1/``vocab_size``)^(N/2), a uniform word."""
        self.validate_length(length)
        return self.vocab_size ** -(length // 2) if self.variant == "copy" else 0.5

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        low = max(2, -(-length // 10))
        low += low % 2
        return low + 2 * rng.integers(0, (length - low) // 2 + 1, batch_size)

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        first = rng.integers(0, self.vocab_size, (batch_size, length // 2))
        seps = np.full((batch_size, 1), self.sep)
        if self.variant == "copy":
            copies = first + self.symbol0
            answers = [" ".join(row) for row in self.strings[copies].tolist()]
            return Batch.from_arrays(np.concatenate([copies, seps], axis=1), copies, answers)
        labels = rng.random(batch_size) < 0.5
        second = first.copy()
        negatives = np.flatnonzero(~labels)
        if self.variant == "random":
            while len(negatives):
                second[negatives] = rng.integers(0, self.vocab_size, (len(negatives), length // 2))
                negatives = negatives[(second[negatives] == first[negatives]).all(axis=1)]
        else:
            where = rng.integers(0, length // 2, len(negatives))
            shift = rng.integers(1, self.vocab_size, len(negatives))
            second[negatives, where] = (first[negatives, where] + shift) % self.vocab_size
        prompts = np.concatenate([first + self.symbol0, seps, second + self.symbol0], axis=1)
        return Batch.from_arrays(prompts, *_label_ids(self, labels))

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        tokens, answer = [int(t) for t in prompt], [int(t) for t in completion]
        symbols = range(self.symbol0, self.symbol0 + self.vocab_size)
        if self.variant == "copy":
            word_ok = len(tokens) >= 2 and tokens[-1] == self.sep
            return word_ok and all(t in symbols for t in tokens[:-1]) and answer == tokens[:-1]
        half = len(tokens) // 2
        if len(tokens) < 3 or len(tokens) % 2 == 0 or tokens[half] != self.sep:
            return False
        first, second = tokens[:half], tokens[half + 1 :]
        if any(t not in symbols for t in first + second):
            return False
        equal = True
        for a, b in zip(first, second):
            equal = equal and a == b
        return answer == self.vocab.ids([TRUE if equal else FALSE])


@register
class Disjointness(Task):
    """Set disjointness ``A [SEP] B`` -> ``[TRUE]`` iff A and B share no element.

    ``length`` = N = |A| + |B| (even, >= 2), |A| = |B| = N/2, elements ``a<i>``,
    i < ``vocab_size``; N <= ``vocab_size`` so that two disjoint sets fit. Papers.md §2 gives
    only the theory, so the instance distribution is ours: A and B are the first and second N/2
    of a uniform permutation of the alphabet (hence disjoint); with probability 1/2 the example
    is made intersecting by overwriting one uniform element of B with one uniform element of A,
    so intersecting sets share exactly one element (the hardest case: a single witness).
    Elements are written in random order (the permutation's), not sorted, so no position lines
    the shared element up. Training and test both use exactly N.
    """

    name = "disjointness"
    paper = "Bhattamishra et al. §2"
    summary = "do two sets of N/2 symbols intersect: needs an exact memory of the first set"
    length_meaning = "elements of both sets together (even)"
    min_length = 2

    def __init__(self, *, vocab_size: int = 64) -> None:
        self.vocab_size = check_int(self.name, "vocab_size", vocab_size, 2)
        self.vocab = Vocab([*(f"a{i}" for i in range(self.vocab_size)), SEP, TRUE, FALSE])
        self.symbol0, self.sep = self.vocab.ids(["a0", SEP])

    def max_length(self) -> int:
        return self.vocab_size - self.vocab_size % 2

    def validate_length(self, length: int) -> int:
        check_int(self.name, "length", length, self.min_length)
        if length > self.vocab_size:
            raise SepbenchError(
                f"{self.name}: alphabet too small for two disjoint sets of {length // 2} "
                f"elements: length {length} needs vocab_size >= {length}, got {self.vocab_size}"
            )
        return _even_length(self, length)

    def completion_cap(self, length: int) -> int:
        return 1

    def chance(self, length: int) -> float:
        """1/2: each example is intersecting with probability 1/2."""
        self.validate_length(length)
        return 0.5

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        half = length // 2
        sets = np.argsort(rng.random((batch_size, self.vocab_size)), axis=1)[:, :length]
        labels = rng.random(batch_size) < 0.5
        shared = np.flatnonzero(~labels)
        taken = rng.integers(0, half, len(shared))
        placed = half + rng.integers(0, half, len(shared))
        sets[shared, placed] = sets[shared, taken]
        sets += self.symbol0
        seps = np.full((batch_size, 1), self.sep)
        prompts = np.concatenate([sets[:, :half], seps, sets[:, half:]], axis=1)
        return Batch.from_arrays(prompts, *_label_ids(self, labels))

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        tokens = [int(t) for t in prompt]
        half = len(tokens) // 2
        if len(tokens) < 3 or len(tokens) % 2 == 0 or tokens[half] != self.sep:
            return False
        in_a = [False] * self.vocab_size
        in_b = [False] * self.vocab_size
        for marks, part in ((in_a, tokens[:half]), (in_b, tokens[half + 1 :])):
            for t in part:
                i = t - self.symbol0
                if not 0 <= i < self.vocab_size or marks[i]:
                    return False
                marks[i] = True
        disjoint = not any(a and b for a, b in zip(in_a, in_b))
        return [int(t) for t in completion] == self.vocab.ids([TRUE if disjoint else FALSE])
