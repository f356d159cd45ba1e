"""A scale-to-zero SageMaker endpoint serves its model as an inference component, and every call
must name that component. The stack names it with `inference_component_name` and tags the endpoint
with the name; `llmfleet invoke` reads the tag, so one command calls either kind of endpoint.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

TAG_INFERENCE_COMPONENT = "llmfleet:inference-component"
# What DescribeEndpoint/ListTags answer for a caller allowed only to invoke, or for an endpoint that
# is not there: the invocation itself then says what is wrong.
NOT_LOOKED_UP = {"AccessDeniedException", "ValidationException"}


def inference_component_name(endpoint_name: str) -> str:
    """The endpoint's one component carries the endpoint's name (separate namespaces, same 63-character rule)."""
    return endpoint_name


def inference_component_of(sagemaker, endpoint_name: str) -> str | None:
    """The component to name when invoking `endpoint_name` (a `sagemaker` client), or None for a variant endpoint."""
    try:
        arn = sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointArn"]
        tags = sagemaker.list_tags(ResourceArn=arn)["Tags"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_LOOKED_UP:
            return None
        raise
    return next((tag["Value"] for tag in tags if tag["Key"] == TAG_INFERENCE_COMPONENT), None)
