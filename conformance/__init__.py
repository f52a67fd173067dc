"""Conformance runner: the unmodified upstream temporalio/sdk-python test suite, run on dbosify.

`python -m conformance --help` from the repo root; see conformance/README.md.
The runner itself uses only the standard library; the suite runs in an isolated venv
under conformance/.work/.
"""
