"""What runs inside the serving image (built from containers/vllm/Dockerfile)."""
