#!/usr/bin/env python3
"""CDK app: the fleet manifest named by context `fleet` -> plans -> stacks (stacks/fleet.py).

`npx cdk synth` needs no AWS credentials: stacks name the manifest's region, no account.
"""

import sys

import aws_cdk as cdk

from llmfleet.model_store.errors import LlmfleetError
from llmfleet.stacks.fleet import compose_fleet

app = cdk.App()
try:
    compose_fleet(app)
except LlmfleetError as exc:
    print(f"llmfleet: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
app.synth()
