"""cdk-nag, cfn-lint and checkov on every synthesized template; every exception has a written reason.

Every variant is checked: the HTTPS fleet synthesized in-process, with its gateway and without it, and
the plain-HTTP one the real CDK CLI produced from cdk.json defaults.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from llmfleet.stacks.compliance import NAG_PACKS, acknowledge, add_compliance_checks, checkov_skip
from tests.conftest import REPO
from llmfleet.stacks.fleet import compose_fleet
from tests.synth.conftest import CliSynth, Synthesized, cdk_json_context

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
SECURITY_SECTION_START = "\n## Security\n"


def security_section() -> str:
    """The README's security section: every acknowledgement and skip must be listed there."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(SECURITY_SECTION_START)
    end = readme.find("\n## ", start + len(SECURITY_SECTION_START))
    return readme[start : end if end != -1 else None]


@pytest.fixture(scope="session", params=["secure_fleet", "public_fleet", "cli_synth"])
def assembly_dir(request: pytest.FixtureRequest) -> Path:
    synthesized: Synthesized | CliSynth = request.getfixturevalue(request.param)
    if isinstance(synthesized, CliSynth):
        assert synthesized.returncode == 0, synthesized.output[-4000:]
    templates = sorted(synthesized.outdir.glob("*.template.json"))
    assert len(templates) >= 6, templates
    return synthesized.outdir


def acknowledgements(synth: Synthesized) -> dict[str, set[str]]:
    """cdk-nag acknowledgements of either pack in the app: finding id -> reasons."""
    found: dict[str, set[str]] = {}
    for construct in synth.fleet.base.node.root.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for finding, reason in entry.data.items():
                    if finding.removeprefix("Annotation::").startswith(NAG_PACKS):
                        found.setdefault(finding.removeprefix("Annotation::"), set()).add(reason)
    return found


def checkov_skips(outdir: Path) -> list[tuple[str, str, str, str]]:
    """(template, logical id, check id, comment) of every checkov skip written into the templates."""
    skips = []
    for template in sorted(outdir.glob("*.template.json")):
        for logical_id, resource in json.loads(template.read_text())["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                skips.append((template.name, logical_id, skip["id"], skip.get("comment", "")))
    return skips


@pytest.fixture(scope="module")
def loose_fleet(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Every opt-out at once (no certificate, no WAF, no deletion protection): their acknowledgements count too."""
    outdir = tmp_path_factory.mktemp("loose-fleet")
    app = cdk.App(context=cdk_json_context(waf="off", deletion_protection="off"), outdir=str(outdir))
    fleet = compose_fleet(app)
    app.synth()
    return Synthesized(fleet=fleet, outdir=outdir)


@pytest.mark.parametrize("variant", ["secure_fleet", "public_fleet", "loose_fleet"])
def test_cdk_nag_passes_with_every_acknowledgement_reasoned_and_documented(variant: str, request: pytest.FixtureRequest) -> None:
    # Reaching here means synthesis (with both cdk-nag packs attached) raised no finding.
    synthesized: Synthesized = request.getfixturevalue(variant)
    report = synthesized.outdir / "validation-report.json"
    if report.exists():
        conclusions = {r["pluginName"]: r["conclusion"] for r in json.loads(report.read_text())["pluginReports"]}
        assert set(conclusions.values()) <= {"success"}, conclusions
    found = acknowledgements(synthesized)
    assert {finding.split("-")[0] for finding in found} == {"AwsSolutions", "NIST.800.53.R5"}, sorted(found)
    documented = security_section()
    for finding, reasons in found.items():
        assert all(len(r.split()) >= 4 for r in reasons), (finding, reasons)
        rule = re.sub(r"\[.*", "", finding)
        assert f"`{rule}`" in documented, f"{rule} is acknowledged but not listed in the README's security section"


def test_cdk_nag_is_live_and_fails_an_unreasoned_insecure_bucket(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    s3.Bucket(stack, "Plain")
    add_compliance_checks(app)
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed.*AwsSolutions-S1.*NIST\.800\.53\.R5-S3BucketLoggingEnabled"):
        app.synth()
    with pytest.raises(ValueError, match="needs a reason"):
        acknowledge(stack, "AwsSolutions-S1", " ")
    with pytest.raises(ValueError, match="needs a reason"):
        checkov_skip(s3.Bucket(stack, "Other"), "CKV_AWS_18", "")


def test_cfn_lint_reports_nothing(assembly_dir: Path) -> None:
    templates = [str(t) for t in sorted(assembly_dir.glob("*.template.json"))]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", *templates], capture_output=True, text=True, timeout=600
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)[:4000]
    assert result.returncode == 0, result.stderr[-2000:]


def test_checkov_fails_nothing_and_every_skip_is_reasoned_used_and_documented(assembly_dir: Path) -> None:
    templates = [str(t) for t in sorted(assembly_dir.glob("*.template.json"))]
    result = subprocess.run(
        [str(CHECKOV), "--framework", "cloudformation", "--output", "json", "--skip-download", "--compact",
         *[arg for t in templates for arg in ("-f", t)]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(f["file_path"], f["resource"], f["check_id"], f["check_name"]) for f in results["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 100 and report["summary"]["parsing_errors"] == 0
    used = {(Path(f["file_path"]).name, f["resource"].split(".")[-1], f["check_id"]) for f in results.get("skipped_checks", [])}
    documented = security_section()
    for template, logical_id, check_id, comment in checkov_skips(assembly_dir):
        assert len(comment.split()) >= 4, (template, logical_id, check_id, comment)
        assert (template, logical_id, check_id) in used, f"stale skip {check_id} on {logical_id} in {template}"
        assert f"`{check_id}`" in documented, f"{check_id} is skipped but not listed in the README's security section"
