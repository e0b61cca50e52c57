"""Every visible reference case of the official implementations, through srlib's case runner."""

from pathlib import Path

import pytest
import torch

from srlib.reference import CASE_RUNNERS, CaseError, _load_runners, expected_outputs, load_case, run_case

# Every kind of case the official reference data holds; each must have a runner (a new kind of case file
# would be run as soon as a runner for it is registered).
REQUIRED = {
    "NonLocalAttention", "NonLocalSparseAttention", "nlsn",  # NLSN paper (+ dense NLA)
    "ENLCA", "enlcn",  # ENLCN
    "GLA", "dlsn",  # DLSN
    "HSPA", "hspan",  # HSPAN
    "RecurrentNonLocalKmeansAttention", "lcoan",  # LCoAN
}


def _case_files():
    from tests.conftest import _reference_dir

    root = _reference_dir()
    return sorted((root / "modules").glob("*.pt")) + sorted((root / "networks").glob("*.pt"))


def test_required_runners_are_registered():
    _load_runners()
    assert REQUIRED <= set(CASE_RUNNERS)


@pytest.mark.parametrize("path", _case_files(), ids=lambda p: p.name)
def test_reference_case(path: Path):
    case = load_case(path)
    name = case.get("module", case.get("model"))
    _load_runners()
    if name not in CASE_RUNNERS:
        assert name not in REQUIRED
        pytest.skip(f"no srlib runner for {name} yet")
    got = run_case(case)
    expected = expected_outputs(case)
    assert expected, f"{path.name} has no expected values"
    for key, want in expected.items():
        assert key in got, f"runner for {name} did not return {key!r}"
        torch.testing.assert_close(got[key].to(want.dtype), want, rtol=1e-10, atol=1e-10, msg=f"{path.name}:{key}")
    # The default-sort output differs: evidence the comparison can fail on tie order.
    if "output_default_sort" in case:
        assert not torch.allclose(case["output_default_sort"], case["output"], rtol=0, atol=1e-12)


def test_bad_case_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_case(tmp_path / "nope.pt")
    torch.save({"foo": 1}, tmp_path / "x.pt")
    with pytest.raises(CaseError, match="not a reference case"):
        load_case(tmp_path / "x.pt")
    torch.save({"module": "Unknown", "dtype": "torch.float64"}, tmp_path / "y.pt")
    with pytest.raises(CaseError, match="no srlib runner"):
        run_case(tmp_path / "y.pt")
