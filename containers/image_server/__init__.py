"""The image server: a diffusers text-to-image pipeline behind OpenAI's images API and SageMaker's
`/invocations`, with the LLM path's store sync, API key, metrics and drain (docs/container.md)."""
