"""The fleet's VPC keeps servers private and weights off the NAT."""

from __future__ import annotations

from tests.synth.conftest import Synthesized


def test_two_private_subnets_endpoints_for_s3_ecr_logs_and_flow_logs(secure_fleet: Synthesized) -> None:
    base = secure_fleet.template(secure_fleet.fleet.base)
    subnets = base.find_resources("AWS::EC2::Subnet")
    kinds = [{t["Key"]: t["Value"] for t in s["Properties"]["Tags"]}["aws-cdk:subnet-type"] for s in subnets.values()]
    assert sorted(kinds) == ["Private", "Private", "Public", "Public"]
    endpoints = [e["Properties"] for e in base.find_resources("AWS::EC2::VPCEndpoint").values()]
    services = {str(e["ServiceName"]).rsplit(".", 1)[-1] if isinstance(e["ServiceName"], str) else "s3": e["VpcEndpointType"] for e in endpoints}
    assert services["s3"] == "Gateway"
    for interface in ("api", "dkr", "logs", "secretsmanager"):
        assert services[interface] == "Interface"
    (flow_log,) = base.find_resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    assert flow_log["Properties"]["LogDestinationType"] == "s3"


def test_no_subnet_assigns_public_ips(secure_fleet: Synthesized) -> None:
    subnets = secure_fleet.template(secure_fleet.fleet.base).find_resources("AWS::EC2::Subnet")
    assert len(subnets) == 4
    assert all(subnet["Properties"]["MapPublicIpOnLaunch"] is False for subnet in subnets.values())


def test_gpu_instances_and_tasks_accept_traffic_only_from_their_load_balancer(public_fleet: Synthesized) -> None:
    for plan in public_fleet.fleet.plans:
        if "ecs" not in plan.targets:
            continue
        synthesized = public_fleet.model_template(plan.model_name)
        groups = synthesized.find_resources("AWS::EC2::SecurityGroup")
        open_ingress = [
            (name, rule)
            for name, group in groups.items()
            for rule in group["Properties"].get("SecurityGroupIngress", [])
            if rule.get("CidrIp") == "0.0.0.0/0"
        ]
        # Only the load balancer listens to the world, and only on the HTTPS port.
        assert [(name.startswith("EcsAlbSecurityGroup"), rule["FromPort"]) for name, rule in open_ingress] == [(True, 443)]
        (task_ingress,) = synthesized.find_resources("AWS::EC2::SecurityGroupIngress").values()
        assert task_ingress["Properties"]["FromPort"] == 8000
        assert task_ingress["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0].startswith("EcsAlbSecurityGroup")
