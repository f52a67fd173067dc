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
    "tests.api.test_grpc_stub": "raw gRPC: serves and calls WorkflowService stubs over a real grpc.aio server",
    "tests.test_tls": "TLS of the gRPC transport against a real TLS server",
    "tests.test_cloud": "Temporal Cloud: needs a cloud namespace and credentials",
    "tests.test_type_errors": "static typing: runs pyright through uv on test sources, not runtime behaviour",
}

# Contrib test modules pinned upstream that no released plugin can run: since temporalio
# 1.34 the AI plugins are separate packages serving `temporalio.<name>`, and
# `temporalio.contrib.<name>` only re-exports their public API, so these modules fail to
# import (on the dev server too) the private modules they reach into. The tests that
# match each released plugin are in that plugin's own repository (temporalio/ai-integrations,
# at the plugin's release tag); no snapshot of it is available to the runner, so they are
# not run. The message says which private module is missing.
def _drift(plugin: str, missing: str) -> str:
    return (f"plugin split: needs private `temporalio.contrib.{missing}` of the pre-split "
            f"plugin, absent from {plugin} (its own tests are in temporalio/ai-integrations, "
            "not available to the runner)")


_OPENAI = "temporalio-openai-agents 1.1.0"
CONTRIB_DRIFT_MODULES: dict[str, str] = {
    "tests.contrib.deepagents.test_backends": _drift("temporalio-deepagents 0.0.3", "deepagents._tools"),
    "tests.contrib.deepagents.test_continue_as_new": _drift("temporalio-deepagents 0.0.3", "deepagents._serde"),
    "tests.contrib.deepagents.test_failures": _drift("temporalio-deepagents 0.0.3", "deepagents._activity"),
    "tests.contrib.deepagents.test_tools": _drift("temporalio-deepagents 0.0.3", "deepagents._tools"),
    "tests.contrib.google_adk_agents.test_mcp": _drift("temporalio-google-adk 0.0.1", "google_adk_agents._mcp"),
    "tests.contrib.google_genai.test_gemini": _drift("temporalio-google-genai 0.1.0", "google_genai._compat"),
    "tests.contrib.google_genai.test_gemini_mcp":
        _drift("temporalio-google-genai 0.1.0", "google_genai._temporal_interactions"),
    "tests.contrib.langsmith.test_background_io": _drift("temporalio-langsmith 0.1.0", "langsmith._interceptor"),
    "tests.contrib.langsmith.test_interceptor": _drift("temporalio-langsmith 0.1.0", "langsmith._interceptor"),
    "tests.contrib.openai_agents.test_openai": _drift(_OPENAI, "openai_agents._invoke_model_activity"),
    "tests.contrib.openai_agents.test_openai_replay": _drift(_OPENAI, "openai_agents._invoke_model_activity"),
    "tests.contrib.openai_agents.test_openai_sandbox": _drift(_OPENAI, "openai_agents._openai_runner"),
    "tests.contrib.openai_agents.test_openai_sandbox_worker_env_value": _drift(_OPENAI, "openai_agents.sandbox"),
    "tests.contrib.openai_agents.test_openai_tool_secrets": _drift(_OPENAI, "openai_agents._invoke_model_activity"),
    "tests.contrib.openai_agents.test_openai_tracing": _drift(_OPENAI, "openai_agents._temporal_openai_agents"),
    "tests.contrib.strands.test_mcp": _drift("temporalio-strands-agents 0.1.0", "strands._temporal_mcp_client"),
}
OUT_OF_SCOPE_MODULES.update(CONTRIB_DRIFT_MODULES)

_GEMINI = "network and credentials: calls Google's Gemini API (needs GOOGLE_API_KEY; skips without it)"
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
    # A parameter set that calls the real model (the mocked one is in scope).
    ("tests.contrib.google_adk_agents.test_google_adk_agents", "test_single_agent[False]"): _GEMINI,
    ("tests.contrib.google_adk_agents.test_google_adk_agents", "test_multi_agent[False]"): _GEMINI,
    ("tests.contrib.google_adk_agents.test_google_adk_agents", "test_mcp_agent[False]"): _GEMINI,
}

# In-scope tests known to fail for a documented reason; each names a docs/COMPATIBILITY.md row.
_NEXUS_ENDPOINT = "COMPAT: Nexus (the test creates a Nexus endpoint, `create_nexus_endpoint`)"
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    (cls, name): _NEXUS_ENDPOINT for cls, name in (
        ("tests.contrib.langsmith.test_integration.TestComprehensiveTracing",
         "test_comprehensive_with_temporal_runs"),
        ("tests.contrib.langsmith.test_integration.TestComprehensiveTracing",
         "test_comprehensive_without_temporal_runs"),
        ("tests.contrib.langsmith.test_integration.TestNexusInboundTracing",
         "test_nexus_direct_traceable_without_temporal_runs"),
        ("tests.contrib.langsmith.test_plugin.TestPluginIntegration",
         "test_comprehensive_plugin_trace_hierarchy"),
        ("tests.contrib.langsmith.test_tracing_env_override.TestTracingEnvOverride",
         "test_no_runs_when_tracing_disabled_for_nexus_start"),
        ("tests.contrib.opentelemetry.test_opentelemetry", "test_opentelemetry_tracing_nexus"),
        ("tests.contrib.opentelemetry.test_opentelemetry_plugin",
         "test_opentelemetry_comprehensive_tracing"),
        ("tests.contrib.workflow_streams.test_workflow_streams", "test_cross_namespace_nexus_stream"),
    )
}

# tests/nexus: what each known failure needs (docs/COMPATIBILITY.md, the Nexus rows).
_NX_STANDALONE = ("COMPAT: Nexus (standalone operations: StartNexusOperationExecution and the describe, list,"
                  " count, cancel and terminate RPCs of operations a client started)")
_NX_CANCEL_TYPES = "COMPAT: Nexus (cancellation types ABANDON and TRY_CANCEL, which Core resolves without an event)"
_NX_SIGNAL_LINKS = ("COMPAT: Nexus (links of a signal sent from a Nexus handler: not recorded on its"
                    " WorkflowExecutionSignaled event)")
_NX_SYSTEM = "COMPAT: Nexus (system Nexus: `signal_with_start` of an external workflow handle)"
_NX_SHUTDOWN = ("COMPAT: Nexus (a handler worker's shutdown without a graceful timeout: the cancelled task's"
                " answer does not fail the caller's operation)")
NEXUS_FAILURES: dict[tuple[str, str], str] = {
    **{("tests.nexus.test_standalone_operations", n): _NX_STANDALONE for n in (
        "test_cancel_operation", "test_count_operations", "test_describe_operation", "test_errors",
        "test_execute_operation", "test_execute_operation_named_service", "test_get_nexus_operation_handle",
        "test_id_conflict_policy_fail", "test_id_conflict_policy_use_existing", "test_interceptor_receives_inputs",
        "test_list_operations", "test_start_async_operation_and_poll_result",
        "test_start_sync_operation_and_get_result", "test_started_workflow_has_link_to_standalone_nexus_operation",
        "test_terminate_operation")},
    **{("tests.nexus.test_temporal_operation", n): _NX_STANDALONE for n in (
        "test_customized_temporal_operation_cancel_activity", "test_customized_temporal_operation_cancel_workflow",
        "test_temporal_operation_backing_activity_does_not_duplicate_links",
        "test_temporal_operation_cancel_activity", "test_temporal_operation_double_start_activity_raises_handler_err",
        "test_temporal_operation_includes_activity_token_in_callback",
        "test_temporal_operation_mixed_start_raises_handler_err", "test_temporal_operation_start_activity",
        "test_temporal_operation_start_activity_raises_error")},
    **{("tests.nexus.test_signal_link_propagation_e2e", n): _NX_STANDALONE for n in (
        "test_standalone_async_signal_operation_links", "test_standalone_sync_signal_operation_links",
        "test_start_from_handler_attaches_on_conflict_options")},
    ("tests.nexus.test_signal_link_propagation_e2e", "test_async_signal_operation_links"): _NX_SIGNAL_LINKS,
    ("tests.nexus.test_signal_link_propagation_e2e", "test_sync_signal_operation_links"): _NX_SIGNAL_LINKS,
    ("tests.nexus.test_workflow_caller_cancellation_types", "test_cancellation_type"): _NX_CANCEL_TYPES,
    ("tests.nexus.test_workflow_caller_cancellation_types_when_cancel_handler_fails", "test_cancellation_type"):
        _NX_CANCEL_TYPES,
    ("tests.nexus.test_temporal_system_nexus",
     "test_signal_with_start_uses_target_workflow_serialization_context"): _NX_SYSTEM,
    ("tests.nexus.test_nexus_worker_shutdown", "test_nexus_worker_shutdown"): _NX_SHUTDOWN,
}

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
    for key in ((classname, name), (classname, base_name(name)), (module, base_name(name))):
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
    if key in NEXUS_FAILURES:
        return "fail", NEXUS_FAILURES[key]
    return "fail", NOT_YET
