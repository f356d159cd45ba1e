"""The serving container's entrypoint: sync, validate, supervise vLLM, hot-swap adapters, drain."""
