"""The package's old name, kept for one release so `python -m exporter` still works.

The code moved to `sandbox_exporter`: a top-level module called `exporter` is a name
other distributions also install. This shim only forwards `python -m exporter`;
it is removed in 0.3.0.
"""
