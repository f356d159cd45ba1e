"""`python -m llmfleet.containers.entrypoint`: the serving container's entrypoint (see supervisor.py)."""

from llmfleet.containers.entrypoint.supervisor import main

raise SystemExit(main())
