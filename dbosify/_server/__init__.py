"""What a Temporal server answers, a module per RPC family."""
