"""Every reference case of the official implementations (bundled in tests/reference), through srlib's runner."""

import ast
from pathlib import Path

import pytest
import torch

import srlib
from srlib.reference import (
    BUNDLED_REFERENCE_DIR,
    CASE_RUNNERS,
    CaseError,
    _load_runners,
    expected_outputs,
    load_case,
    reference_dir,
    run_case,
)

# Every kind of case the official reference data holds; each must have a runner (a new kind of case file
# would be run as soon as a runner for it is registered).
REQUIRED = {
    "NonLocalAttention", "NonLocalSparseAttention", "nlsn",  # NLSN paper (+ dense NLA)
    "ENLCA", "enlcn",  # ENLCN
    "GLA", "dlsn",  # DLSN
    "HSPA", "hspan",  # HSPAN
    "RecurrentNonLocalKmeansAttention", "lcoan",  # LCoAN
}


# The cases shipped with the repository (tests/reference/README.md describes each).
BUNDLED_MODULES = {
    "enlca_case1.pt", "enlca_train_case1.pt", "gla_case1.pt", "hspa_case1.pt", "lcoa_case1.pt",
    "lcoa_init_case1.pt", "nla_case1.pt", "nlsa_case1.pt",
}
BUNDLED_NETWORKS = {"dlsn_case1.pt", "enlcn_case1.pt", "hspan_case1.pt", "lcoan_case1.pt", "nlsn_case1.pt"}


def _case_files():
    root = reference_dir()
    return sorted((root / "modules").glob("*.pt")) + sorted((root / "networks").glob("*.pt"))


def test_required_runners_are_registered():
    _load_runners()
    assert REQUIRED <= set(CASE_RUNNERS)


def test_bundled_cases_are_complete():
    """A fresh clone has every case and listing, so no reference test can be skipped for lack of data."""
    root = BUNDLED_REFERENCE_DIR
    assert {p.name for p in (root / "modules").glob("*.pt")} == BUNDLED_MODULES
    assert {p.name for p in (root / "networks").glob("*.pt")} == BUNDLED_NETWORKS
    listings = {p.name for p in (root / "state_dicts").glob("*.json")}
    assert listings == {f"{m}_x{s}.json" for m in ("nlsn", "enlcn", "dlsn", "hspan", "lcoan") for s in (2, 3, 4)}
    assert (root / "README.md").is_file()


def test_reference_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SRLIB_REFERENCE", raising=False)
    assert reference_dir() == BUNDLED_REFERENCE_DIR == Path(srlib.__file__).resolve().parent.parent / "tests" / "reference"
    monkeypatch.setenv("SRLIB_REFERENCE", str(tmp_path))
    assert reference_dir() == tmp_path.resolve()


def test_attention_and_models_do_not_import_reference():
    """The case runners live in srlib.reference; the implementations stand on their own (issue 17)."""
    pkg = Path(srlib.__file__).resolve().parent
    offenders = []
    for path in sorted([*(pkg / "attention").glob("*.py"), *(pkg / "models").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "srlib.reference" or n.startswith("srlib.reference.") for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("path", _case_files(), ids=lambda p: p.name)
def test_reference_case(path: Path):
    case = load_case(path)
    name = case.get("module", case.get("model"))
    _load_runners()
    assert name in CASE_RUNNERS, f"no srlib runner for {name} ({path.name})"
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
