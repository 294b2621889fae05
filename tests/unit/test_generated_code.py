"""gen/ is reproducible with one command and up to date with protos/."""

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right)
    found = [f"only in gen/: {name}" for name in comparison.left_only]
    found += [f"missing from gen/: {name}" for name in comparison.right_only]
    found += [f"stale: {name}" for name in comparison.diff_files]
    for name, sub in comparison.subdirs.items():
        found += [f"{name}/{entry}" for entry in _differences(Path(sub.left), Path(sub.right))]
    return found


@pytest.mark.skipif(shutil.which("go") is None, reason="go is needed for protoc-gen-openapiv2")
def test_gen_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen"), str(tmp_path)], check=True, cwd=ROOT)
    stale = _differences(ROOT / "gen", tmp_path / "gen")
    assert not stale, "gen/ is stale; run `make gen` and commit:\n" + "\n".join(stale)
