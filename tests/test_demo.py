"""The README's first command: the end-to-end demo runs and shows what it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


@pytest.mark.slow
def test_demo_shows_lf_across_shards_and_fixes_clearing_everywhere(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    out = result.stdout
    # Run 1 records both failures, from two shards.
    assert "still failing: ['test_cart.py::test_total', 'test_search.py::test_fuzzy']" in out
    # Run 2: fresh runners with swapped files rerun exactly the other shard's failure.
    assert "shard A (--lf test_users.py test_search.py): 1 failed, 3 deselected" in out
    assert "shard B (--lf test_cart.py test_prices.py): 1 failed, 3 deselected" in out
    # Run 3: the fix seen on one shard clears the failure for all.
    assert "still failing: ['test_search.py::test_fuzzy']" in out
    assert "shard B (--lf test_users.py test_search.py): 1 failed, 3 deselected" in out
    assert (tmp_path / "shared-store").is_dir()
