"""The main job end to end, in its smoke size: sweep -> store -> table -> report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image


def test_demo_smoke_writes_a_report_with_every_figure(tmp_path: Path) -> None:
    store, out = tmp_path / "s.sqlite", tmp_path / "report"
    args = [sys.executable, "-m", "sepbench", "demo", "--smoke", "--workers", "2"]
    args += ["--out", str(out), "--store", str(store)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    for model in ("transformer", "lstm", "mamba"):
        assert model in first.stdout
    page = (out / "report.html").read_text()
    pngs = sorted(out.glob("*.png"))
    assert {p.stem for p in pngs} == {
        "index_lookup_accuracy", "index_lookup_state_size", "index_lookup_curves"
    }
    assert page.index("<h2>Claims</h2>") < page.index("<h2>index_lookup</h2>")
    verdicts = [line for line in first.stdout.splitlines() if line.startswith("claim ")]
    assert len(verdicts) == 2 and all("(§2;" in line for line in verdicts)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == len(pngs)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(png).shape[0] > 100
        assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("served from the store") == 6
