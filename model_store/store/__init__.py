"""The model store: its S3 layout and transfers, adapter validation, the registry, access policies, the compile-cache key, the container's boot decision. Never imports planning/."""
