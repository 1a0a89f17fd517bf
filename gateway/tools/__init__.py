"""Operator tools that are not serving code: the metrics report and the fake upstream."""
