"""What the gateway tells operators: Prometheus metrics, log context, the request log."""
