"""The one place where the conformance run is pinned.

Changing anything here makes the runner rebuild its venv (the venv stores a hash of
these values) and export a fresh copy of the upstream tests.
"""

from __future__ import annotations

# Upstream test suite: temporalio/sdk-python at the commit after tag 1.31.0 that the
# dev-server baseline (shared/conformance/dev-server-baseline.tsv) was measured on.
UPSTREAM_REPO = "temporalio/sdk-python"
UPSTREAM_URL = "https://github.com/temporalio/sdk-python.git"
UPSTREAM_SHA = "3a464f9b56bad49926f03aa7b421209dbaa784f8"
UPSTREAM_DESCRIBE = "1.31.0-58-g3a464f9b"

# The temporalio wheel the suite runs against (only its native module is replaced).
TEMPORALIO = "temporalio==1.35.0"

# Test-only dependencies of the upstream suite (its conftest and the non-contrib tests).
# pytest 9.2 breaks upstream collection and pytest-asyncio 1.x breaks its session
# event_loop fixture, hence the exact pins.
TEST_REQUIREMENTS: tuple[str, ...] = (
    "pytest==9.1.1",
    "pytest-asyncio==0.21.2",
    "pytest-timeout==2.4.0",
    "pytest-xdist==3.8.0",
    "opentelemetry-api==1.45.2",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-grpc==1.45.2",  # upstream's dev dependency (opentelemetry.proto)
    "pydantic==2.14.4",
    "httpx==0.28.1",
    "grpcio==1.85.3",
    "cryptography==46.0.7",
    "psutil==5.9.8",
    "googleapis-common-protos==1.76.0",
)

# Paths (relative to the upstream checkout root) that are never collected: the contrib
# integrations are separate products, and release tooling needs upstream's scripts/.
ALWAYS_IGNORED: tuple[str, ...] = (
    "tests/contrib",
    "tests/test_prepare_release.py",
)

# What is exported from the upstream commit into the work dir.
EXPORT_PATHS: tuple[str, ...] = ("tests", "pyproject.toml")
