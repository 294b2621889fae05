"""`make test` runs `buf breaking` against the previous commit (scripts/breaking): a change to
the protos that breaks their clients fails it, a compatible one passes."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
ORDER_PROTO = Path("protos/ordermesh/order/v1/order.proto")

pytestmark = pytest.mark.skipif(
    not BUF.exists() or not (ROOT / "build" / "protodeps").is_dir(),
    reason="buf and build/protodeps come with `make tools`",
)


def workspace(where: Path) -> Path:
    """A copy of the buf workspace (buf.yaml, protos/, build/protodeps) as it is now."""
    where.mkdir()
    shutil.copy(ROOT / "buf.yaml", where / "buf.yaml")
    shutil.copytree(ROOT / "protos", where / "protos")
    shutil.copytree(ROOT / "build" / "protodeps", where / "build" / "protodeps")
    return where


def breaking(changed: Path, base: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(changed), "--against", str(base)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def edited(tmp_path: Path, old: str, new: str) -> Path:
    changed = workspace(tmp_path / "changed")
    proto = changed / ORDER_PROTO
    text = proto.read_text()
    assert len(re.findall(re.escape(old), text)) == 1, old
    proto.write_text(text.replace(old, new))
    return changed


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return workspace(tmp_path / "base")


def test_an_unchanged_contract_passes(base: Path, tmp_path: Path) -> None:
    result = breaking(workspace(tmp_path / "same"), base)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renamed_field_fails(base: Path, tmp_path: Path) -> None:
    changed = edited(tmp_path, "string tracking_number = 14;", "string tracking_code = 14;")
    result = breaking(changed, base)
    assert result.returncode != 0
    assert "tracking_number" in result.stdout + result.stderr


def test_a_changed_field_number_fails(base: Path, tmp_path: Path) -> None:
    changed = edited(tmp_path, "string tracking_number = 14;", "string tracking_number = 16;")
    result = breaking(changed, base)
    assert result.returncode != 0
    assert "14" in result.stdout + result.stderr


def test_an_added_field_passes(base: Path, tmp_path: Path) -> None:
    changed = edited(
        tmp_path,
        "string tracking_number = 14;",
        "string tracking_number = 14;\n  string tracking_url = 99;",
    )
    result = breaking(changed, base)
    assert result.returncode == 0, result.stdout + result.stderr
