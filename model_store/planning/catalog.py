"""GPU instances the planner may choose from, EC2 and their SageMaker twins.

GPU memory is `memory.total` as nvidia-smi reports it on each GPU (what vLLM's
gpu_memory_utilization is a fraction of), not the marketing figure.

Every instance names where its two prices were read and when (`price_source`,
`sagemaker_price_source`); `llmfleet catalog` prints them. A SageMaker price of None means
SageMaker real-time inference does not offer the type, or no price for it was found: the
planner then never places a SageMaker target on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError

EC2_PRICE_SOURCE = "aws.amazon.com/ec2/pricing/on-demand, Linux, us-east-1, read 2025-10 (after the 2025-06 P4/P5 cut)"
SAGEMAKER_PRICE_SOURCE = "aws.amazon.com/sagemaker/pricing, real-time inference, us-east-1, read 2025-10"

# The rows added in 2026-12. instances.vantage.sh republishes the AWS Price List; its snapshot
# of 2026-01-21 is kept in github.com/tsaol/aws-gpu (data/<family>_instances.js). Its figures
# for the older rows agree with EC2_PRICE_SOURCE to the cent, except that it has no us-east-1
# price at all for p5e.48xlarge, whose row here is therefore unconfirmed.
VANTAGE_EC2_PRICE_SOURCE = (
    "instances.vantage.sh (AWS Price List), Linux on-demand, us-east-1, snapshot 2026-01-21 "
    "(github.com/tsaol/aws-gpu data/*_instances.js), read 2026-12-01"
)
SAGEMAKER_UNPRICED = (
    "no SageMaker real-time inference price found for us-east-1 (searched 2026-12-01); "
    "treated as not offered"
)


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int  # nvidia-smi memory.total
    compute_capability: float
    fp8: bool  # native FP8 tensor cores (Ada, Hopper, Blackwell)
    bf16: bool
    fp4: bool = False  # native FP4 tensor cores (Blackwell: NVFP4, MXFP4)
    # Published speeds (dense tensor-core rates, no 2:4 sparsity), read by model_store.planning.performance;
    # 0 where none is known, and the performance model then refuses to predict on this GPU.
    hbm_gb_per_s: float = 0.0  # memory bandwidth, 10^9 bytes/s
    tflops_16bit: float = 0.0  # BF16 (FP16 on T4) tensor, 10^12 FLOP/s
    tflops_fp8: float = 0.0  # FP8 tensor; 0: no FP8 tensor cores
    speed_source: str = ""


# nvidia-smi memory.total per GPU, as published in AWS and NVIDIA docs (2025). Speeds: the
# vendor datasheet's dense figures (the "with sparsity" rates halved), as quoted below.
T4 = Gpu(
    "NVIDIA T4", 15_360, 7.5, fp8=False, bf16=False, hbm_gb_per_s=320, tflops_16bit=65,
    speed_source="NVIDIA T4 datasheet: 320 GB/s GDDR6, 65 TFLOPS mixed-precision FP16",
)
A10G = Gpu(
    "NVIDIA A10G", 23_028, 8.6, fp8=False, bf16=True, hbm_gb_per_s=600, tflops_16bit=70,
    speed_source="AWS G5 page: 600 GB/s; NVIDIA publishes no A10G datasheet, ~70 TFLOPS BF16 tensor is the "
    "commonly quoted figure for its lower clocks (the A10 datasheet says 125): unconfirmed",
)
L4 = Gpu(
    "NVIDIA L4", 23_034, 8.9, fp8=True, bf16=True, hbm_gb_per_s=300, tflops_16bit=121, tflops_fp8=242.5,
    speed_source="NVIDIA L4 datasheet: 300 GB/s, BF16 242 / FP8 485 TFLOPS with sparsity",
)
L40S = Gpu(
    "NVIDIA L40S", 46_068, 8.9, fp8=True, bf16=True, hbm_gb_per_s=864, tflops_16bit=362.05, tflops_fp8=733,
    speed_source="NVIDIA L40S datasheet: 864 GB/s, BF16 362.05 (733 sparse), FP8 733 (1,466 sparse) TFLOPS",
)
A100_40 = Gpu(
    "NVIDIA A100 40GB", 40_960, 8.0, fp8=False, bf16=True, hbm_gb_per_s=1555, tflops_16bit=312,
    speed_source="NVIDIA A100 datasheet (SXM 40GB): 1,555 GB/s, BF16 312 TFLOPS (624 sparse)",
)
A100_80 = Gpu(
    "NVIDIA A100 80GB", 81_920, 8.0, fp8=False, bf16=True, hbm_gb_per_s=2039, tflops_16bit=312,
    speed_source="NVIDIA A100 datasheet (SXM 80GB): 2,039 GB/s, BF16 312 TFLOPS (624 sparse)",
)
H100 = Gpu(
    "NVIDIA H100 80GB", 81_559, 9.0, fp8=True, bf16=True, hbm_gb_per_s=3350, tflops_16bit=989.5, tflops_fp8=1979,
    speed_source="NVIDIA H100 datasheet (SXM): 3.35 TB/s, BF16 1,979 / FP8 3,958 TFLOPS with sparsity",
)
H200 = Gpu(
    "NVIDIA H200", 143_771, 9.0, fp8=True, bf16=True, hbm_gb_per_s=4800, tflops_16bit=989.5, tflops_fp8=1979,
    speed_source="NVIDIA H200 datasheet (SXM): 4.8 TB/s, BF16 1,979 / FP8 3,958 TFLOPS with sparsity",
)
# "NVIDIA B200, 183359 MiB, compute capability 10.0": nvidia-smi --query-gpu on B200 hosts in
# published run logs (2026-05 to 2026-09, drivers 570 to 595); AWS lists p6-b200's 8 GPUs as
# 1,432 GB, 179 GB each, which is these 183,359 MiB (179.06 GiB).
B200 = Gpu(
    "NVIDIA B200", 183_359, 10.0, fp8=True, bf16=True, fp4=True, hbm_gb_per_s=8000, tflops_16bit=2250, tflops_fp8=4500,
    speed_source="NVIDIA HGX B200 datasheet, per GPU (8 GPUs): 64 TB/s, FP16/BF16 36 / FP8 72 PFLOPS with sparsity",
)


@dataclass(frozen=True)
class GpuInstance:
    name: str
    gpu: Gpu
    gpu_count: int
    vcpus: int
    memory_gib: int
    nvme_gb: int
    price_usd_hour: float  # EC2 on-demand, see price_source
    sagemaker_price_usd_hour: float | None  # ml.<name>, see sagemaker_price_source; None: not offered
    price_source: str = EC2_PRICE_SOURCE
    sagemaker_price_source: str = SAGEMAKER_PRICE_SOURCE

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def sagemaker_name(self) -> str | None:
        return f"ml.{self.name}" if self.sagemaker_price_usd_hour is not None else None

    @property
    def gpu_memory_bytes(self) -> int:
        return self.gpu.memory_mib * 2**20

    def to_record(self) -> dict[str, Any]:
        """Every field (the GPU as a nested object) and the derived ones, as JSON types.

        The keys are `llmfleet catalog --json`'s; `from_record` reads a record back."""
        record = {field.name: getattr(self, field.name) for field in fields(self)}
        record["gpu"] = asdict(self.gpu)
        return record | {name: getattr(self, name) for name in DERIVED_KEYS}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GpuInstance:
        values = {key: value for key, value in record.items() if key not in DERIVED_KEYS}
        return cls(**(values | {"gpu": Gpu(**values["gpu"])}))


DERIVED_KEYS = ("family", "sagemaker_name", "gpu_memory_bytes")

# Rows that name no sources were read from EC2_PRICE_SOURCE and SAGEMAKER_PRICE_SOURCE.
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
    # Every G6e size. NVMe, disks x size as AWS's G6e table gives them (vantage lists the same
    # disk counts): 4xlarge 1 x 600 GB, 8xlarge 2 x 450 GB, 16xlarge 2 x 950 GB, 24xlarge
    # 2 x 1.9 TB. The four new sizes have no us-east-1 SageMaker real-time row in what could be
    # read; the Price List's us-west-2 Batch Transform rows ($3.7553, $5.6607, none, $18.8319875)
    # are not real-time prices.
    # To review: the Price List's us-east-1 hosting rows (USE1-Host, read 2026-09-20 and
    # 2026-10-05) give ml.g6e.2xlarge $2.8026 and ml.g6e.12xlarge $13.1158, not the 3.1389 and
    # 14.6897 below (which are 1.4 x EC2, as are the g6 SageMaker figures above).
    GpuInstance("g6e.xlarge", L40S, 1, 4, 32, 250, 1.861, 2.6054),
    GpuInstance("g6e.2xlarge", L40S, 1, 8, 64, 450, 2.24208, 3.1389),
    GpuInstance("g6e.4xlarge", L40S, 1, 16, 128, 600, 3.00424, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED),
    GpuInstance("g6e.8xlarge", L40S, 1, 32, 256, 900, 4.52856, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED),
    GpuInstance("g6e.12xlarge", L40S, 4, 48, 384, 3800, 10.49264, 14.6897),
    GpuInstance("g6e.16xlarge", L40S, 1, 64, 512, 1900, 7.57719, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED),
    GpuInstance("g6e.24xlarge", L40S, 4, 96, 768, 3800, 15.06559, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED),
    GpuInstance("g6e.48xlarge", L40S, 8, 192, 1536, 7600, 30.13118, 42.1836),
    GpuInstance("p4d.24xlarge", A100_40, 8, 96, 1152, 8000, 21.96, 25.2504),
    GpuInstance("p4de.24xlarge", A100_80, 8, 96, 1152, 8000, 27.44705, 31.5641),
    # One H100, 1 x 3.84 TB NVMe (3800 GB as EC2 and vantage report it). SageMaker lists
    # ml.p5.4xlarge for endpoints, but no real-time price for it was found.
    GpuInstance("p5.4xlarge", H100, 1, 16, 256, 3800, 6.88, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED),
    GpuInstance("p5.48xlarge", H100, 8, 192, 2048, 30720, 55.04, 63.296),
    GpuInstance("p5e.48xlarge", H200, 8, 192, 2048, 30720, 63.296, 72.7904),
    # 8 x H200, 3,200 Gbps EFAv3, 8 x 3.84 TB NVMe. The SageMaker price is the us-east-2
    # hosting row (no us-east-1 row was found); EC2 charges the same $63.296 in both regions.
    GpuInstance(
        "p5en.48xlarge", H200, 8, 192, 2048, 30720, 63.296, 72.795, VANTAGE_EC2_PRICE_SOURCE,
        "AWS Price List API, AmazonSageMaker usagetype USE2-Host:ml.p5en.48xlarge: us-east-2 real-time "
        "hosting, read 2026-10-03 (no us-east-1 row found)",
    ),
    # 8 x B200, 3,200 Gbps EFAv4, 8 x 3.84 TB NVMe, 2 TiB. Offered in us-east-1, us-east-2 and
    # us-west-2 at the same price; no SageMaker real-time price was found.
    GpuInstance(
        "p6-b200.48xlarge", B200, 8, 192, 2048, 30720, 113.9328, None, VANTAGE_EC2_PRICE_SOURCE, SAGEMAKER_UNPRICED
    ),
)


class CatalogError(LlmfleetError):
    """An instance type the catalog does not hold."""

    exit_code = EXIT_BAD_INPUT


def instance(name: str) -> GpuInstance:
    """Look up an EC2 (`g6e.xlarge`) or SageMaker (`ml.g6e.xlarge`) instance type."""
    bare = name.removeprefix("ml.")
    for candidate in INSTANCES:
        if candidate.name == bare:
            return candidate
    raise CatalogError(f"instance type {name!r} is not in the GPU catalog; known: {[i.name for i in INSTANCES]}")


def with_gpu(text: str, catalog: tuple[GpuInstance, ...] = INSTANCES) -> tuple[GpuInstance, ...]:
    """The instances whose GPU name contains `text`, ignoring case (`h200`, `L40S`, `b200`)."""
    wanted = text.strip().lower()
    return tuple(i for i in catalog if wanted in i.gpu.name.lower())
