"""The gateway container: LiteLLM's proxy in config mode with llmfleet's plug-ins.

`python -m llmfleet.containers.gateway` renders LiteLLM's config from LLMFLEET_GATEWAY_CONFIG
and starts the proxy; `auth.user_api_key_auth` (custom auth: keys, model access, limits,
budget) and `usage.usage_logger` (usage rows in Postgres, counters in Redis, EMF lines) are
the plug-ins it names. Decisions live in model_store/gateway/policy.py.
"""
