"""results/report.html of a real tiny sweep, opened in a real headless browser (Debian's
Chromium, installed with apt-get when missing): no console error, every chart rendered with a
non-zero size; a screenshot is kept (test-artifacts/report.png, or $QUANTSWEEP_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import debian
import pytest
from conftest import REPO

ARTIFACTS = Path(os.environ.get("QUANTSWEEP_TEST_ARTIFACTS", REPO / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
# what the page says to the test: errors from the moment the head is parsed; the size of every
# chart once the page has loaded
LISTEN = ("<script>window.__errors=[];addEventListener('error',e=>__errors.push(String(e.message)));"
          "const __ce=console.error;console.error=(...a)=>{__errors.push(a.join(' '));__ce(...a)};</script>")
MEASURE = ("<script>addEventListener('load',()=>{const p=document.createElement('pre');p.id='qs-check';"
           "p.textContent=JSON.stringify({errors:__errors,charts:[...document.querySelectorAll('svg')]"
           ".map(s=>{const r=s.getBoundingClientRect();return [r.width,r.height]})});"
           "document.body.appendChild(p)})</script>")


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_the_report_renders_in_a_browser_without_errors(paddleslim_sweep: Path, tmp_path: Path) -> None:
    why = debian.ensure(("chromium",), ("chromium",))
    if why:
        pytest.skip(why)
    page = (paddleslim_sweep / "results" / "report.html").read_text()
    assert page.count("<svg") >= 2  # the heatmap and the accuracy-latency plot at least
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("<head>", "<head>" + LISTEN, 1).replace("</body>", MEASURE + "</body>", 1))
    r = chromium("--dump-dom", probe.as_uri(), cwd=tmp_path)
    m = re.search(r'<pre id="qs-check">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the page did not load: {r.stderr[-2000:]}"
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("rror" in ln or "Uncaught" in ln)]
    assert seen["errors"] == [] and console == []
    assert len(seen["charts"]) == page.count("<svg")
    assert all(w > 50 and h > 50 for w, h in seen["charts"]), seen["charts"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    r = chromium(f"--screenshot={shot}", "--window-size=1400,2400",
                 (paddleslim_sweep / "results" / "report.html").as_uri(), cwd=tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
