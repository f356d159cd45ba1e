#!/usr/bin/env python3
"""CDK app: fleet manifest (context `fleet`) -> plans -> stacks. `npx cdk synth` needs no AWS credentials."""

import sys

import aws_cdk as cdk

from model_store.manifest import ManifestError
from model_store.plan import PlanError
from stacks.compliance import add_compliance_checks
from stacks.config import FleetSettings, StackConfigError, plan_manifest
from stacks.fleet import fleet_stacks

app = cdk.App()
try:
    settings = FleetSettings.from_context(app.node)
    fleet, plans = plan_manifest(settings.fleet_path, settings.stage)
    fleet_stacks(app, fleet, plans, settings)
except (ManifestError, PlanError, StackConfigError) as exc:
    sys.exit(f"llmfleet: {exc}")
add_compliance_checks(app)
app.synth()
