"""The fault-injection benchmark in its reduced form (benchmarks/faults.py --quick): three
random SIGKILLs of a sweep or its workers, each resumed; nothing lost, duplicated, corrupted or
left running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


@pytest.mark.slow
def test_three_random_kills_lose_nothing_and_leave_no_process() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--kills", "3", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = dict(re.findall(r"(kills|resumes|rows checked|mismatches|running rows|orphans) "
                              r"(\d+)", result.stdout))
    assert figures == {
        "kills": "3", "resumes": "3", "rows checked": figures["rows checked"],
        "mismatches": "0", "running rows": "0", "orphans": "0",
    }
    assert int(figures["rows checked"]) >= 2
