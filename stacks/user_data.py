"""What the GPU instances run at boot, as plain text: a pure function of its inputs, so tests read it.

Every boot: instance-store NVMe becomes the model cache (a stopped warm-pool instance comes back with
blank instance storage, and user data runs only at the first boot, so this is a cloud-init per-boot
script). With a warm pool, the first boot also pulls the serving image and the instance tells Auto
Scaling it is ready only once user data is done: the warm pool stops it then, image on its root volume.
"""

from __future__ import annotations

from llmfleet.model_store.contract.plan import DEFAULT_MODEL_ROOT

# The serving image runs as this user (containers/vllm/Dockerfile, USER); it must own the cache.
SERVING_UID = 10001
# cloud-init runs the scripts in this directory at every boot, before the ECS agent starts.
PER_BOOT_DIR = "/var/lib/cloud/scripts/per-boot"
MODEL_CACHE_SCRIPT = f"{PER_BOOT_DIR}/llmfleet-model-cache.sh"
READY_SCRIPT = "/usr/local/bin/llmfleet-ready"
READY_UNIT = "llmfleet-ready.service"
# The launch lifecycle hook the ready unit completes (GpuServiceConstruct names the hook so).
LAUNCH_HOOK_NAME = "llmfleet-instance-ready"
IMDS = "http://169.254.169.254/latest"

MODEL_CACHE = f"""\
#!/bin/bash
# Instance-store NVMe (if any) becomes the model cache: RAID-0 over all of them, XFS.
mkdir -p {DEFAULT_MODEL_ROOT}
mountpoint -q {DEFAULT_MODEL_ROOT} && exit 0
devices=$(lsblk -dpno NAME,MODEL | awk '/Instance Storage/ {{print $1}}')
count=$(echo "$devices" | grep -c . || true)
if [ "$count" -gt 1 ]; then
  command -v mdadm >/dev/null || dnf install -y mdadm
  mdadm --stop --scan || true  # an array the kernel assembled from an earlier boot's devices
  mdadm --create /dev/md0 --run --level=0 --raid-devices="$count" $devices
  mkfs.xfs -f /dev/md0 && mount /dev/md0 {DEFAULT_MODEL_ROOT}
elif [ "$count" -eq 1 ]; then
  mkfs.xfs -f $devices && mount $devices {DEFAULT_MODEL_ROOT}
fi
chown {SERVING_UID} {DEFAULT_MODEL_ROOT}"""

AGENT_CONFIG = """\
# Tasks use their own role, never the instance's; keep the ~10 GB image between task restarts.
echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config
echo ECS_IMAGE_PULL_BEHAVIOR=prefer-cached >> /etc/ecs/ecs.config"""


def _ready_script(region: str) -> str:
    """Completes the launch lifecycle hook: into the warm pool (stop now) or into service (take tasks)."""
    return f"""\
#!/bin/bash
token=$(curl -sX PUT {IMDS}/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')
id=$(curl -s -H "X-aws-ec2-metadata-token: $token" {IMDS}/meta-data/instance-id)
group=$(aws autoscaling describe-auto-scaling-instances --region {region} --instance-ids "$id" \\
  --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text)
aws autoscaling complete-lifecycle-action --region {region} --lifecycle-hook-name {LAUNCH_HOOK_NAME} \\
  --auto-scaling-group-name "$group" --instance-id "$id" --lifecycle-action-result CONTINUE"""


def _warm_pool_commands(region: str, image_uri: str) -> str:
    registry = image_uri.split("/", 1)[0]
    return f"""\
# The agent joins the cluster only once the instance leaves the warm pool (ECS agent >= 1.59).
echo ECS_WARM_POOLS_CHECK=true >> /etc/ecs/ecs.config
# Pull the serving image now, while the instance warms, not while a task waits for it.
command -v aws >/dev/null || dnf install -y awscli-2
systemctl start docker
{{ aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry} \\
  && docker pull {image_uri}; }} || echo "llmfleet: image pre-pull failed; the ECS agent pulls it at task start" >&2
# Ready once cloud-init is done (user data included), at this boot and every later one.
cat > {READY_SCRIPT} <<'READY'
{_ready_script(region)}
READY
chmod 755 {READY_SCRIPT}
cat > /etc/systemd/system/{READY_UNIT} <<'UNIT'
[Unit]
Description=llmfleet: tell Auto Scaling this instance is ready
After=cloud-final.service
[Service]
Type=oneshot
ExecStart={READY_SCRIPT}
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable {READY_UNIT}
systemctl start --no-block {READY_UNIT}"""


def instance_user_data(*, region: str, image_uri: str, warm_pool: bool) -> str:
    """The launch template's user data (after `#!/bin/bash`; CDK appends the ECS cluster's lines).

    `image_uri` may be a deploy-time token: it only appears as a word of the script.
    """
    parts = [
        f"mkdir -p {PER_BOOT_DIR}",
        f"cat > {MODEL_CACHE_SCRIPT} <<'CACHE'\n{MODEL_CACHE}\nCACHE",
        f"chmod 755 {MODEL_CACHE_SCRIPT}",
        MODEL_CACHE_SCRIPT,  # cloud-init ran the per-boot scripts of this first boot before user data
        AGENT_CONFIG,
    ]
    if warm_pool:
        parts.append(_warm_pool_commands(region, image_uri))
    return "\n".join(parts)
