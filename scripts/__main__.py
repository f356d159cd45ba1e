"""`python -m llmfleet.scripts ARGS` = `llmfleet ARGS`, where the console script is not installed
(a GPU host running `make bench-gpu` with the CUDA build's own Python)."""

from llmfleet.scripts.cli import main

main()
