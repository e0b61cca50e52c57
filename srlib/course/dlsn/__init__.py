"""Helpers of notebook 03 (DLSN / GLA): :mod:`srlib.course.dlsn.study` measures (no drawing),
:mod:`srlib.course.dlsn.figures` draws what it measured (matplotlib)."""
