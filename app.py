#!/usr/bin/env python3
"""CDK app: the fleet manifest named by context `fleet` -> plans -> stacks (stacks/fleet.py).

`npx cdk synth` needs no AWS credentials: stacks name the manifest's region, no account.
"""

import sys

import aws_cdk as cdk

from model_store.manifest import ManifestError
from model_store.plan import PlanError
from stacks.config import StackConfigError
from stacks.fleet import compose_fleet

app = cdk.App()
try:
    compose_fleet(app)
except (ManifestError, PlanError, StackConfigError) as exc:
    sys.exit(f"llmfleet: {exc}")
app.synth()
