"""The notebooks read as one course (issue 13): one heading scheme, prose numbers taken from outputs,
checked exercises with separate worked solutions."""

from __future__ import annotations

import re

import pytest

from tests import notebook_text as nt

IDS = lambda p: p.name  # noqa: E731


def test_there_is_a_primer_and_every_course_notebook():
    names = [p.stem for p in nt.COURSE]
    assert names[0].startswith("00a_"), f"the course starts with the SR primer, got {names[:2]}"
    assert len(names) >= 8


@pytest.mark.parametrize("nb", nt.COURSE, ids=IDS)
def test_headings_follow_the_scheme(nb):
    """Every H2 heading is '## N. <part>' with consecutive N and parts in the scheme's order; every notebook
    has Context and Exercises; the paper notebooks (01-05) have all seven parts."""
    heads = nt.h2_headings(nt.load(nb))
    parts = []
    for n, h in enumerate(heads, 1):
        m = nt.HEADING.match(h)
        assert m, f"{nb.name}: heading {h!r} is not one of '## N. {{{', '.join(nt.SCHEME)}}}'"
        assert int(m.group(1)) == n, f"{nb.name}: heading {h!r} should be number {n}"
        parts.append(m.group(2))
    order = [nt.SCHEME.index(p) for p in parts]
    assert order == sorted(order) and len(set(parts)) == len(parts), f"{nb.name}: parts out of order: {parts}"
    assert parts[0] == "Context" and parts[-1] == "Exercises", f"{nb.name}: {parts}"
    if re.match(r"0[1-5]_", nb.name):
        assert parts == list(nt.SCHEME), f"{nb.name}: a paper notebook has all seven parts, got {parts}"


@pytest.mark.parametrize("nb", nt.COURSE + nt.SOLUTIONS, ids=IDS)
def test_prose_numbers_come_from_outputs(nb):
    """A decimal number in a markdown cell must have been printed (or written) by a code cell above it, up to
    the rounding shown; lines quoting a paper carry the invisible marker ``<!-- quoted -->``."""
    bad = nt.unsourced_numbers(nt.load(nb))
    assert not bad, f"{nb.name}: prose numbers not found in any earlier output:\n" + "\n".join(
        f"  cell {i}: {n}  in: {line}" for i, n, line in bad)


@pytest.mark.parametrize("nb", nt.COURSE, ids=IDS)
def test_every_exercise_has_a_label_and_a_solution(nb):
    """The exercises section lists each exercise with a difficulty label; each exercise that has a check is
    called in the notebook and solved in notebooks/solutions/<stem>_solutions.ipynb."""
    from srlib.course.exercises import DIFFICULTIES, list_exercises

    cells = nt.load(nb)
    key = nb.name.split("_")[0]
    exercises = list_exercises(key)
    assert exercises, f"{nb.name}: no exercises registered in srlib/course/exercises/nb{key}.py"
    md = "\n".join(nt.text(c) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join(nt.text(c) for c in cells if c["cell_type"] == "code")
    sol = nt.NOTEBOOKS / "solutions" / f"{nb.stem}_solutions.ipynb"
    assert sol.exists(), f"{nb.name}: no worked solutions at {sol.relative_to(nt.NOTEBOOKS.parent)}"
    sol_code = "\n".join(nt.text(c) for c in nt.load(sol) if c["cell_type"] == "code")
    for ex in exercises:
        assert ex.key in md, f"{nb.name}: exercise {ex.key} is registered but not in the notebook"
        assert ex.difficulty.split()[0] in md, f"{nb.name}: no difficulty label for {ex.key}"
        assert ex.difficulty in DIFFICULTIES
        if ex.checker is not None:
            assert f'check("{ex.key}"' in code, f"{nb.name}: exercise {ex.key} has a check the notebook never calls"
            assert f'check("{ex.key}"' in sol_code, f"{sol.name}: no worked solution calling check('{ex.key}', ...)"
        else:
            assert ex.key in "\n".join(nt.text(c) for c in nt.load(sol)), f"{sol.name}: open question {ex.key} unanswered"


@pytest.mark.parametrize("nb", nt.SOLUTIONS, ids=IDS)
def test_solutions_check_out(nb):
    """Every check a solutions notebook calls printed 'correct' when it was executed."""
    for c in nt.load(nb):
        if c["cell_type"] == "code" and "check(" in nt.text(c):
            out = nt.output_text(c)
            assert "not yet" not in out, f"{nb.name}: a worked solution fails its own check:\n{out}"


# ------------------------------------------------------------------ the checker itself can fail
def _md(src):
    return {"cell_type": "markdown", "source": src, "metadata": {}}


def _code(src, out):
    return {"cell_type": "code", "source": src, "metadata": {},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": out}]}


def test_prose_checker_catches_a_typed_number():
    cells = [_code("x = measure()", "overlap 0.630\n"), _md("The overlap is about 0.45 here.")]
    assert [(i, n) for i, n, _ in nt.unsourced_numbers(cells)] == [(1, "0.45")]


def test_prose_checker_accepts_rounded_outputs_code_constants_maths_and_quotes():
    cells = [
        _code("lr = 5e-4\nres_scale = 0.1", "overlap 0.6304\nPSNR -0.372 dB\n"),
        _md("Overlap 0.63 (0.630), a loss of 0.37 dB, res_scale 0.1, $\\sigma = 2.5$, `eps=1.5`,\n"
            "NLSN reports 38.34 dB. <!-- quoted -->\n[paper](https://arxiv.org/abs/2103.04322)\n"
            "**01.3** ★★ practice: see exercise 01.2"),
    ]
    assert nt.unsourced_numbers(cells) == []


def test_prose_checker_skips_exercise_keys():
    cells = [_md("**01.3** ★★ practice — see exercise 00.3; the overlap is 0.45.")]
    assert [n for _, n, _ in nt.unsourced_numbers(cells)] == ["0.45"]


def test_prose_checker_only_looks_above():
    cells = [_md("We will see 0.82."), _code("", "0.82\n")]
    assert [n for _, n, _ in nt.unsourced_numbers(cells)] == ["0.82"]


def test_heading_scheme_rejects_free_headings():
    assert nt.HEADING.match("## 3. Paper figures: Fig. 4")
    assert not nt.HEADING.match("## 3b. Several rounds (Eq. 11)")
    assert not nt.HEADING.match("## 4. Buckets on a real image")


DEEP_DIVE = "*(deep dive)*"


@pytest.mark.parametrize("nb", nt.COURSE, ids=IDS)
def test_core_and_deep_dive_sections_are_marked(nb):
    """Sections a course may skip end their heading with ``*(deep dive)*`` (the site's syllabus lists them);
    every notebook has both core and deep-dive subsections, and the mark is written one way only."""
    heads = [line.strip() for cell in nt.load(nb) if cell["cell_type"] == "markdown"
             for line in nt.text(cell).splitlines() if re.match(r"#{2,4} ", line.strip())]
    subs = [h for h in heads if h.startswith("### ")]
    deep = [h for h in subs if h.endswith(DEEP_DIVE)]
    assert deep, f"{nb.name}: no subsection marked {DEEP_DIVE!r}"
    assert len(deep) < len(subs), f"{nb.name}: every subsection is a deep dive; mark only what a course may skip"
    loose = [h for h in heads if "deep dive" in h.lower() and not h.endswith(DEEP_DIVE)]
    assert not loose, f"{nb.name}: deep-dive marks must end the heading as {DEEP_DIVE!r}: {loose}"
