"""Pure-Python stand-in for temporalio's native core module (``temporalio.bridge.temporal_sdk_bridge``).

Placeholder: filled in by the engine work.
"""
