"""Pure-Python stand-in for temporalio's native core module (``temporalio.bridge.temporal_sdk_bridge``).

Placeholder: filled in by the engine work.
"""

# --- Import-time placeholders (added by the import-hook work) -----------------
# temporalio's Python modules import these names from the native module when
# they are first imported (bridge/client.py: RPCError; bridge/worker.py:
# CustomSlotSupplier, PollShutdownError; envconfig.py imports the `envconfig`
# submodule, which is real). They only exist so that `import temporalio.client`
# / `temporalio.worker` succeed; the engine work replaces them with the real
# implementations.


class RPCError(RuntimeError):  # placeholder
    """Placeholder for the native RPC error type."""


class PollShutdownError(Exception):  # placeholder
    """Placeholder for the native poll-shutdown error type."""


class CustomSlotSupplier:  # placeholder
    """Placeholder for the native custom slot supplier wrapper."""


# --- end of import-time placeholders ------------------------------------------
