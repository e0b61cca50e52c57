"""Helpers of notebook 05 (LCoAN): :mod:`srlib.course.lcoan.study` measures (no drawing),
:mod:`srlib.course.lcoan.figures` draws what it measured (matplotlib)."""
