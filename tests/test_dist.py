"""What ships: the wheel carries the Ruby scripts, the lab runner and the stub files.

A missing data file only shows up after `pipx install`, so build the wheel and look inside.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_data_file(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = list(tmp_path.glob("glcleanup-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"glcleanup/gitlab/ruby/{p.name}" for p in (ROOT / "glcleanup" / "gitlab" / "ruby").glob("*.rb")}
    expected |= {f"glcleanup/stub/files/{p.name}" for p in (ROOT / "stub").iterdir() if p.is_file()}
    expected |= {"glcleanup/lab/rails/gitlab-rails", "glcleanup/lab/rails/gitlab_env.rb", "glcleanup/py.typed"}
    # every module of the tree: pyproject lists the packages by hand (for the stub/ mapping)
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "glcleanup").rglob("*.py")}
    assert {"glcleanup/gitlab/ruby/scan.rb", "glcleanup/gitlab/ruby/stop_loop.rb",
            "glcleanup/stub/files/stubctl.sh", "glcleanup/ops/scan.py"} <= expected
    assert expected <= names, sorted(expected - names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "glcleanup = glcleanup.cli:main" in entry_points
