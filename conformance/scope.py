"""Which upstream tests are targets, and why the others are not.

These rules generated the initial conformance/expectations.tsv (see
`python -m conformance --init-expectations BASELINE_TSV`) and classify any test id
that the expectations file does not know yet (e.g. after the upstream pin moves).
A test is out of scope only for what it *needs* that dbosify does not aim to provide;
anything else is in scope, even if it looks hard.
"""

from __future__ import annotations

import re

# Whole modules (classname prefixes), with the reason.
OUT_OF_SCOPE_MODULES: dict[str, str] = {
    "tests.nexus": "Nexus: operations, endpoints and handlers need Temporal's Nexus service",
    "tests.api.test_grpc_stub": "raw gRPC: serves and calls WorkflowService stubs over a real grpc.aio server",
    "tests.test_tls": "TLS of the gRPC transport against a real TLS server",
    "tests.test_cloud": "Temporal Cloud: needs a cloud namespace and credentials",
    "tests.test_type_errors": "static typing: runs pyright through uv on test sources, not runtime behaviour",
}

_DEPLOYMENTS = "worker-deployment versioning: deployment versions, routing config, ramping on the server"

# Single tests (classname, test name without parameters), with the reason.
OUT_OF_SCOPE_TESTS: dict[tuple[str, str], str] = {
    ("tests.worker.test_worker", "test_continue_as_new_with_ramping_version"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_continue_as_new_with_version_upgrade"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_worker_deployment_dynamic_workflow_with_auto_upgrade_versioning"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_worker_deployment_dynamic_workflow_with_pinned_versioning"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_worker_deployment_ramp"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_worker_with_worker_deployment_config"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_workflows_can_use_default_versioning_behavior"): _DEPLOYMENTS,
    ("tests.worker.test_worker", "test_workflows_can_use_versioning_override"): _DEPLOYMENTS,
    ("tests.test_client", "test_build_id_interactions"):
        "legacy build-id versioning: worker build-id compatibility sets and reachability on the server",
    ("tests.test_service", "test_rpc_execution_not_unknown"):
        "raw gRPC: calls every WorkflowService/OperatorService/TestService RPC by name",
    ("tests.test_serialization_context", "test_nexus_payload_codec_operations_lack_context"):
        OUT_OF_SCOPE_MODULES["tests.nexus"],
}

# In-scope tests known to fail for a documented reason; each names a docs/COMPATIBILITY.md row.
# (None at present: the time-skipping tests pass since start_time_skipping() has a virtual clock.)
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

NOT_YET = "not yet"

_PARAMS = re.compile(r"\[.*\]$")


def base_name(name: str) -> str:
    return _PARAMS.sub("", name)


def out_of_scope_reason(classname: str, name: str) -> str | None:
    for prefix, reason in OUT_OF_SCOPE_MODULES.items():
        if classname == prefix or classname.startswith(prefix + "."):
            return reason
    module = classname
    # strip a trailing test class ("tests.test_activity.TestDescribe")
    while module and module.rsplit(".", 1)[-1][:1].isupper():
        module = module.rsplit(".", 1)[0]
    for key in ((classname, base_name(name)), (module, base_name(name))):
        if key in OUT_OF_SCOPE_TESTS:
            return OUT_OF_SCOPE_TESTS[key]
    return None


def classify(classname: str, name: str, baseline_outcome: str | None = None,
             baseline_message: str = "") -> tuple[str, str]:
    """(expect, reason) for a test id, from the rules and its dev-server baseline outcome."""
    reason = out_of_scope_reason(classname, name)
    if reason is not None:
        if baseline_outcome == "failed":
            reason += " (also fails on the dev server)"
        return "out-of-scope", reason
    key = (classname, base_name(name))
    if baseline_outcome == "failed":
        msg = " ".join(baseline_message.split())
        if len(msg) > 110:
            msg = msg[:107] + "..."
        reason = f"fails on the dev server too: {msg}" if msg else "fails on the dev server too"
        if key in KNOWN_FAILURES:
            reason = f"{KNOWN_FAILURES[key]}; {reason}"
        return "baseline-fail", reason
    if key in KNOWN_FAILURES:
        return "fail", KNOWN_FAILURES[key]
    return "fail", NOT_YET
