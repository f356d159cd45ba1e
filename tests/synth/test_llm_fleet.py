"""LlmFleet in a platform team's own app (examples/own-app/app.py): the team's stack holds its
VPC, KMS key, log bucket and model bucket, and the fleet uses them, creates none of them, grants
on the team's bucket by name, imposes no check on the team's stack, and passes cdk-nag's packs
when the team adds them; cfn-lint and checkov as for the example fleet."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.stacks.compliance import NAG_PACKS, add_compliance_checks
from llmfleet.stacks.config import StackConfigError
from llmfleet.stacks.llm_fleet import LlmFleet, LlmFleetProps
from llmfleet.stacks.store import DOCKERFILE
from tests.conftest import REPO
from tests.synth import test_compliance as compliance
from tests.synth.conftest import as_list, assert_serving_role_grants, only

# The example fleet's cfn-lint and checkov checks, run on this module's assembly_dir.
test_cfn_lint_reports_nothing = compliance.test_cfn_lint_reports_nothing
test_checkov_fails_nothing_and_every_skip_is_reasoned_used_and_documented = (
    compliance.test_checkov_fails_nothing_and_every_skip_is_reasoned_used_and_documented
)

OWN_APP = REPO / "examples" / "own-app"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/acme/vllm-serving:1.4.0"


def own_app_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_app", OWN_APP / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OWN = own_app_module()


@dataclass(frozen=True)
class OwnApp:
    stack: cdk.Stack
    outdir: Path

    @property
    def fleet(self) -> LlmFleet:
        return self.stack.fleet

    def template(self) -> Template:
        return Template.from_json(json.loads((self.outdir / f"{self.stack.artifact_id}.template.json").read_text()))

    def logical_id(self, construct) -> str:
        return self.stack.get_logical_id(construct.node.default_child)

    def team_key_arn(self) -> dict:
        return {"Fn::GetAtt": [self.logical_id(self.stack.key), "Arn"]}

    def role_statements(self, role_id: str) -> list[dict]:
        policies = self.template().find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
        return [s for policy in policies.values() for s in policy["Properties"]["PolicyDocument"]["Statement"]]


def synth_own_app(outdir: Path, *, nag: bool, plain_bucket: bool = False) -> OwnApp:
    """The example app as `cdk synth` runs it (its cdk.json context), from a working directory
    that holds neither the example nor containers/: the image must be found beside the package."""
    context = json.loads((OWN_APP / "cdk.json").read_text())["context"]
    app = cdk.App(context=context, outdir=str(outdir))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(outdir.parent)
        stack = OWN.build(app)
        if plain_bucket:  # something of the team's that cdk-nag would refuse
            s3.Bucket(stack, "Plain")
        if nag:
            add_compliance_checks(app)
        app.synth()
    return OwnApp(stack=stack, outdir=outdir)


@pytest.fixture(scope="module")
def with_nag(tmp_path_factory: pytest.TempPathFactory) -> OwnApp:
    # Reaching the fixture means synthesis, with both packs over the whole app, raised no finding.
    return synth_own_app(tmp_path_factory.mktemp("own-app-nag") / "cdk.out", nag=True)


@pytest.fixture(scope="module")
def assembly_dir(with_nag: OwnApp) -> Path:
    return with_nag.outdir


@pytest.fixture(scope="module")
def without_nag(tmp_path_factory: pytest.TempPathFactory) -> OwnApp:
    return synth_own_app(tmp_path_factory.mktemp("own-app") / "cdk.out", nag=False, plain_bucket=True)


def test_the_fleet_uses_the_teams_vpc_key_and_buckets_and_creates_none_of_them(with_nag: OwnApp) -> None:
    stack, template = with_nag.stack, with_nag.template()
    assert with_nag.fleet.network is None and with_nag.fleet.vpc is stack.vpc
    assert list(template.find_resources("AWS::EC2::VPC")) == [with_nag.logical_id(stack.vpc)]
    buckets = {with_nag.logical_id(stack.logs), with_nag.logical_id(stack.models)}
    assert set(template.find_resources("AWS::S3::Bucket")) == buckets
    # The fleet's one key is the team's (the model bucket's); the only other key guards a model's API key secret.
    assert stack.resolve(with_nag.fleet.store.key.key_arn) == stack.resolve(stack.key.key_arn)
    keys = set(template.find_resources("AWS::KMS::Key"))
    api_key_keys = {with_nag.logical_id(s.gpu_service.api_key_encryption) for s in with_nag.fleet.models.values()}
    assert keys == {with_nag.logical_id(stack.key)} | api_key_keys
    # Not given, so created: the alarm topic, the image repository.
    template.resource_count_is("AWS::SNS::Topic", 1)
    template.resource_count_is("AWS::ECR::Repository", 1)
    # The servers run in the team's private subnets.
    private = sorted(stack.resolve(subnet.subnet_id)["Ref"] for subnet in stack.vpc.private_subnets)
    instances = only(template.find_resources("AWS::AutoScaling::AutoScalingGroup"))["VPCZoneIdentifier"]
    assert sorted(subnet["Ref"] for subnet in instances) == private


def test_servers_are_granted_on_the_teams_bucket_by_its_name_and_decrypt_with_its_key(with_nag: OwnApp) -> None:
    (_, plans) = load_and_plan(OWN_APP / "fleet.yaml")
    (plan,) = plans
    template = with_nag.template()
    task = only(template.find_resources("AWS::ECS::TaskDefinition"))
    sagemaker_model = only(template.find_resources("AWS::SageMaker::Model"))
    roles = {
        "ecs": task["TaskRoleArn"]["Fn::GetAtt"][0],
        "sagemaker": sagemaker_model["ExecutionRoleArn"]["Fn::GetAtt"][0],
    }
    for target, role_id in roles.items():
        assert_serving_role_grants(
            template, role_id, plan.model_name, plan.stage, target, bucket=OWN.MODEL_BUCKET, prefix="llm"
        )
        decrypt = [s for s in with_nag.role_statements(role_id) if "kms:Decrypt" in s["Action"]]
        assert decrypt and all(s["Resource"] == with_nag.team_key_arn() for s in decrypt)


def test_ci_publishes_adapters_into_the_teams_bucket_with_its_key(with_nag: OwnApp) -> None:
    statements = {s["Sid"]: s for s in with_nag.role_statements(with_nag.logical_id(with_nag.stack.ci.role))}
    adapters = f":s3:::{OWN.MODEL_BUCKET}/llm/adapters/qwen3-small/*"
    assert as_list(statements["PublishAdapters"]["Resource"]) == [
        {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, adapters]]}
    ]
    assert statements["StoreKey"]["Resource"] == with_nag.team_key_arn()


def test_the_teams_bucket_policy_makes_published_manifests_write_once(with_nag: OwnApp) -> None:
    policy = only(
        with_nag.template().find_resources(
            "AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": with_nag.logical_id(with_nag.stack.models)}}}
        )
    )
    statements = policy["PolicyDocument"]["Statement"]
    (write_once,) = [s for s in statements if s.get("Sid") == "PublishedVersionsAreWriteOnce"]
    assert write_once["Effect"] == "Deny" and write_once["Condition"] == {"Null": {"s3:if-none-match": "true"}}


def test_the_image_is_built_from_the_dockerfile_beside_the_package_not_the_working_directory(with_nag: OwnApp) -> None:
    assets = json.loads((with_nag.outdir / f"{with_nag.stack.artifact_id}.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == DOCKERFILE
    assert (with_nag.outdir / image["source"]["directory"] / DOCKERFILE).is_file()


def test_cdk_nag_passes_and_the_fleet_acknowledges_findings_only_on_its_own_resources(with_nag: OwnApp) -> None:
    report = with_nag.outdir / "validation-report.json"
    if report.exists():
        conclusions = {r["pluginName"]: r["conclusion"] for r in json.loads(report.read_text())["pluginReports"]}
        assert set(conclusions.values()) <= {"success"}, conclusions
    stack = with_nag.stack
    teams_own = {c.node.path for c in (stack.logs, stack.models, stack.vpc, *stack.vpc.public_subnets)}
    outside = [
        (path, finding)
        for path, finding in nag_acknowledgements(stack.node.root)
        if path not in teams_own and not path.startswith(with_nag.fleet.node.path + "/")
    ]
    assert outside == []
    assert nag_acknowledgements(with_nag.fleet)  # the fleet's own exceptions, on its own resources


def nag_acknowledgements(scope) -> list[tuple[str, str]]:
    """(construct path, finding) of every cdk-nag acknowledgement at or under `scope`."""
    return [
        (construct.node.path, finding)
        for construct in scope.node.find_all()
        for entry in construct.node.metadata
        if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for finding in entry.data
        if finding.removeprefix("Annotation::").startswith(NAG_PACKS)
    ]


def test_without_the_checks_nothing_is_imposed_and_the_template_is_alike(with_nag: OwnApp, without_nag: OwnApp) -> None:
    # The team's plain bucket would fail both packs; without them, the app synthesizes.
    checked = with_nag.template().to_json()
    unchecked = without_nag.template().to_json()
    plain = without_nag.logical_id(without_nag.stack.node.find_child("Plain"))
    assert unchecked["Resources"].pop(plain)["Type"] == "AWS::S3::Bucket"
    assert unchecked == checked


def test_an_image_uri_is_served_as_given_and_nothing_is_built(tmp_path: Path) -> None:
    _, plans = load_and_plan(OWN_APP / "fleet.yaml")
    app = cdk.App(context=json.loads((OWN_APP / "cdk.json").read_text())["context"], outdir=str(tmp_path))
    stack = cdk.Stack(app, "Team", env=cdk.Environment(region="us-east-1"))
    fleet = LlmFleet(stack, "Fleet", LlmFleetProps(plans=plans, image_uri=IMAGE_URI))
    app.synth()
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::ECR::Repository", 0)
    assert json.loads((tmp_path / "Team.assets.json").read_text()).get("dockerImages", {}) == {}
    (container,) = only(template.find_resources("AWS::ECS::TaskDefinition"))["ContainerDefinitions"]
    assert IMAGE_URI.split("/", 1)[1] in json.dumps(container["Image"])
    assert only(template.find_resources("AWS::SageMaker::Model"))["PrimaryContainer"]["Image"] == IMAGE_URI
    # Created where not given: the network, the store bucket (named as the manifest's store), the key.
    assert fleet.network is not None
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.has_resource_properties("AWS::S3::Bucket", {"BucketName": OWN.MODEL_BUCKET})


def props_error(**given) -> str:
    _, plans = load_and_plan(OWN_APP / "fleet.yaml")
    with pytest.raises(StackConfigError) as caught:
        LlmFleetProps(plans=plans, **given)
    return str(caught.value)


def test_props_refuse_what_the_fleet_cannot_use_and_say_why() -> None:
    stack = cdk.Stack(cdk.App(), "Team")
    other = s3.Bucket.from_bucket_name(stack, "Other", "someone-elses-bucket")
    assert "is named 'someone-elses-bucket', but the manifest's store is 'acme-ml-models'" in props_error(
        store_bucket=other
    )
    assert "has no name of its own" in props_error(store_bucket=s3.Bucket(stack, "Unnamed"))
    assert "is not an ECR image URI" in props_error(image_uri="docker.io/vllm/vllm-openai:latest")
    assert "give one" in props_error(image_uri=IMAGE_URI, image_tag="v1")
    topic = sns.Topic(stack, "Topic")
    assert "subscribe the address to your topic" in props_error(alarm_topic=topic, alarm_email="ops@example.com")
    assert "pinned by digest" in props_error()  # nothing to serve: no image, no tag, no base to build from
    keyed = s3.Bucket(stack, "Keyed", bucket_name="acme-ml-models", encryption_key=kms.Key(stack, "BucketKey"))
    assert "encrypted with another key" in props_error(store_bucket=keyed, key=kms.Key(stack, "OtherKey"))
    _, plans = load_and_plan(OWN_APP / "fleet.yaml")
    assert LlmFleetProps(plans=plans, store_bucket=keyed, key=keyed.encryption_key, image_uri=IMAGE_URI).key is not None
    with pytest.raises(StackConfigError, match="LlmFleetProps.plans: no plans"):
        LlmFleetProps(plans=[])
