"""`python -m containers.entrypoint`: the serving container's entrypoint (see supervisor.py)."""

from containers.entrypoint.supervisor import main

raise SystemExit(main())
