"""GPU instances the planner may choose from, EC2 and their SageMaker twins.

GPU memory is `memory.total` as nvidia-smi reports it on each GPU (what vLLM's
gpu_memory_utilization is a fraction of), not the marketing figure.
"""

from __future__ import annotations

from dataclasses import dataclass

EC2_PRICE_SOURCE = "aws.amazon.com/ec2/pricing/on-demand, Linux, us-east-1, read 2025-10 (after the 2025-06 P4/P5 cut)"
SAGEMAKER_PRICE_SOURCE = "aws.amazon.com/sagemaker/pricing, real-time inference, us-east-1, read 2025-10"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int  # nvidia-smi memory.total
    compute_capability: float
    fp8: bool  # native FP8 tensor cores (Ada, Hopper)
    bf16: bool


# nvidia-smi memory.total per GPU, as published in AWS and NVIDIA docs (2025).
T4 = Gpu("NVIDIA T4", 15_360, 7.5, fp8=False, bf16=False)
A10G = Gpu("NVIDIA A10G", 23_028, 8.6, fp8=False, bf16=True)
L4 = Gpu("NVIDIA L4", 23_034, 8.9, fp8=True, bf16=True)
L40S = Gpu("NVIDIA L40S", 46_068, 8.9, fp8=True, bf16=True)
A100_40 = Gpu("NVIDIA A100 40GB", 40_960, 8.0, fp8=False, bf16=True)
A100_80 = Gpu("NVIDIA A100 80GB", 81_920, 8.0, fp8=False, bf16=True)
H100 = Gpu("NVIDIA H100 80GB", 81_559, 9.0, fp8=True, bf16=True)
H200 = Gpu("NVIDIA H200", 143_771, 9.0, fp8=True, bf16=True)


@dataclass(frozen=True)
class GpuInstance:
    name: str
    gpu: Gpu
    gpu_count: int
    vcpus: int
    memory_gib: int
    nvme_gb: int
    price_usd_hour: float  # EC2 on-demand, EC2_PRICE_SOURCE
    sagemaker_price_usd_hour: float | None  # ml.<name>, SAGEMAKER_PRICE_SOURCE; None: not offered

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def sagemaker_name(self) -> str | None:
        return f"ml.{self.name}" if self.sagemaker_price_usd_hour is not None else None

    @property
    def gpu_memory_bytes(self) -> int:
        return self.gpu.memory_mib * 2**20


INSTANCES: tuple[GpuInstance, ...] = (
    GpuInstance("g4dn.xlarge", T4, 1, 4, 16, 125, 0.526, 0.7364),
    GpuInstance("g4dn.2xlarge", T4, 1, 8, 32, 225, 0.752, 0.94),
    GpuInstance("g4dn.12xlarge", T4, 4, 48, 192, 900, 3.912, 4.89),
    GpuInstance("g4dn.metal", T4, 8, 96, 384, 1800, 7.824, None),
    GpuInstance("g5.xlarge", A10G, 1, 4, 16, 250, 1.006, 1.408),
    GpuInstance("g5.2xlarge", A10G, 1, 8, 32, 450, 1.212, 1.515),
    GpuInstance("g5.12xlarge", A10G, 4, 48, 192, 3800, 5.672, 7.09),
    GpuInstance("g5.48xlarge", A10G, 8, 192, 768, 7600, 16.288, 20.36),
    GpuInstance("g6.xlarge", L4, 1, 4, 16, 250, 0.8048, 1.1267),
    GpuInstance("g6.2xlarge", L4, 1, 8, 32, 450, 0.9776, 1.3718),
    GpuInstance("g6.12xlarge", L4, 4, 48, 192, 3760, 4.6016, 6.4422),
    GpuInstance("g6.48xlarge", L4, 8, 192, 768, 7520, 13.3504, 18.6906),
    GpuInstance("g6e.xlarge", L40S, 1, 4, 32, 250, 1.861, 2.6054),
    GpuInstance("g6e.2xlarge", L40S, 1, 8, 64, 450, 2.24208, 3.1389),
    GpuInstance("g6e.12xlarge", L40S, 4, 48, 384, 3800, 10.49264, 14.6897),
    GpuInstance("g6e.48xlarge", L40S, 8, 192, 1536, 7600, 30.13118, 42.1836),
    GpuInstance("p4d.24xlarge", A100_40, 8, 96, 1152, 8000, 21.96, 25.2504),
    GpuInstance("p4de.24xlarge", A100_80, 8, 96, 1152, 8000, 27.44705, 31.5641),
    GpuInstance("p5.48xlarge", H100, 8, 192, 2048, 30720, 55.04, 63.296),
    GpuInstance("p5e.48xlarge", H200, 8, 192, 2048, 30720, 63.296, 72.7904),
)


class CatalogError(ValueError):
    """An instance type the catalog does not hold."""


def instance(name: str) -> GpuInstance:
    """Look up an EC2 (`g6e.xlarge`) or SageMaker (`ml.g6e.xlarge`) instance type."""
    bare = name.removeprefix("ml.")
    for candidate in INSTANCES:
        if candidate.name == bare:
            return candidate
    raise CatalogError(f"instance type {name!r} is not in the GPU catalog; known: {[i.name for i in INSTANCES]}")
