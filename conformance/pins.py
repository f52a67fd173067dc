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

# Paths (relative to the upstream checkout root) that are never collected: release
# tooling needs upstream's scripts/.
ALWAYS_IGNORED: tuple[str, ...] = ("tests/test_prepare_release.py",)

# The plugin suites. Collected only when asked for (`--contrib`, or a selection under
# this path); the default run is the core suite.
CONTRIB_DIR = "tests/contrib"

# What each contrib suite needs beyond TEST_REQUIREMENTS: upstream's optional groups
# (pyproject `[project.optional-dependencies]` and the dev group), at versions the
# registry serves that resolve together with the pins above. Since temporalio 1.34 the
# AI plugins are separate packages serving `temporalio.<name>` (temporalio's own
# `temporalio.contrib.<name>` only re-exports their public API), so each suite also
# installs its plugin package. Installed into the runner's venv only for the suites a
# run selects (see conformance/contrib.py); the venv records which are in.
_MCP = "mcp==1.30.0"
CONTRIB_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "aws": (
        "aioboto3==15.5.0",
        "types-aioboto3[s3]==15.5.0",
        "moto[s3,server]==5.2.6",
        "opentelemetry-exporter-otlp-proto-grpc==1.45.2",
        "opentelemetry-semantic-conventions==0.66b2",
        "opentelemetry-sdk-extension-aws==2.1.0",
    ),
    "deepagents": (
        "temporalio-deepagents==0.0.3",
        "deepagents==0.7.15",
        "langchain==1.4.6",
        "langchain-core==1.6.10",
    ),
    "google_adk_agents": ("temporalio-google-adk==0.0.1", "google-adk==2.14.1",
                          "google-genai==2.34.0", _MCP,
                          "openinference-instrumentation-google-adk==1.0.5", "litellm==1.83.0"),
    "google_genai": ("temporalio-google-genai==0.1.0", "google-genai==2.34.0", _MCP),
    "langgraph": ("temporalio-langgraph==0.1.0", "langgraph==1.2.24", "langchain-core==1.6.10"),
    "langsmith": ("temporalio-langsmith==0.1.0", "langsmith==0.12.6"),
    "openai_agents": ("temporalio-openai-agents==1.1.0", "openai-agents==0.22.3",
                      "openai==3.63.0", _MCP),
    "opentelemetry": (),
    "pydantic": (),
    "strands": ("temporalio-strands-agents==0.1.0", "strands-agents==1.65.0",
                "strands-agents-tools==0.8.10", _MCP),
    "workflow_streams": (),
}

# What is exported from the upstream commit into the work dir.
EXPORT_PATHS: tuple[str, ...] = ("tests", "pyproject.toml")
