"""What a worker does besides temporalio's own workers: liveness and takeover of the dead."""
