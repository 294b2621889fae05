"""gen/ is reproducible with one command and up to date with protos/."""

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# gen/go is a Go module of its own: its go.mod and go.sum are kept beside the generated
# packages, not generated; test_gen_go_module_is_tidy checks them instead.
GO_MODULE_FILES = frozenset({"go/go.mod", "go/go.sum"})


def _differences(left: Path, right: Path, prefix: str = "") -> list[str]:
    comparison = filecmp.dircmp(left, right)
    found = [
        f"only in gen/: {prefix}{name}"
        for name in comparison.left_only
        if prefix + name not in GO_MODULE_FILES
    ]
    found += [f"missing from gen/: {prefix}{name}" for name in comparison.right_only]
    found += [f"stale: {prefix}{name}" for name in comparison.diff_files]
    for name, sub in comparison.subdirs.items():
        found += _differences(Path(sub.left), Path(sub.right), f"{prefix}{name}/")
    return found


@pytest.mark.skipif(
    shutil.which("go") is None, reason="go is needed for the Go and OpenAPI plugins"
)
def test_gen_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen"), str(tmp_path)], check=True, cwd=ROOT)
    stale = _differences(ROOT / "gen", tmp_path / "gen")
    assert not stale, "gen/ is stale; run `make gen` and commit:\n" + "\n".join(stale)


@pytest.mark.skipif(shutil.which("go") is None, reason="go is needed to check gen/go's module")
def test_gen_go_module_is_tidy_and_builds() -> None:
    """gen/go's go.mod and go.sum require exactly what the generated packages import, at
    versions whose runtime the pinned plugins' code compiles against."""
    module = ROOT / "gen" / "go"
    for command in (["go", "mod", "tidy", "-diff"], ["go", "build", "./..."]):
        result = subprocess.run(command, cwd=module, capture_output=True, text=True, check=False)
        assert result.returncode == 0, (
            f"{' '.join(command)} in gen/go:\n{result.stdout}{result.stderr}"
        )
