"""The one table of what each hardware id's real-time cores can hold and run.

Admission reads every budget from here. The numbers follow the device profiles the simulated
cores enforce (`firmware/icc/_profiles.py`; a unit test keeps the two equal, since the service may
not import firmware) and `shared/reference/mt3620-tinyml.md`: an MT3620 M4 core has 192 KiB TCM +
64 KiB SYSRAM, shared by the core firmware, the received model bytes and the tensor arena.

Invariants:
- `model_ram_bytes` = core RAM − the RAM the core firmware keeps for itself; a model's length
  plus its arena must fit in it.
- `operators` is what the target's TFLM firmware registers; a model may use nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUDGETS", "KIB", "HardwareBudget", "budget_for"]

KIB = 1024

# The operators the tinyfleet core firmware's TFLM op resolver registers (runtime tflm-2026.10).
TFLM_2026_10 = frozenset(
    {
        "AVERAGE_POOL_2D",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "FULLY_CONNECTED",
        "LOGISTIC",
        "QUANTIZE",
        "RELU",
        "RESHAPE",
        "SOFTMAX",
        "TANH",
    }
)


@dataclass(frozen=True)
class HardwareBudget:
    hardware_id: str
    cores: tuple[str, ...]
    tcm_bytes: int
    sysram_bytes: int
    firmware_reserved_bytes: int  # RAM the largest shipped core firmware keeps (code, stack)
    max_firmware_bytes: int  # largest core firmware image the device accepts
    firmware_updates: bool  # whether the device installs core firmware over the air
    runtime: str
    operators: frozenset[str]

    @property
    def core_ram_bytes(self) -> int:
        return self.tcm_bytes + self.sysram_bytes

    @property
    def model_ram_bytes(self) -> int:
        return self.core_ram_bytes - self.firmware_reserved_bytes

    def describe(self) -> str:
        return (
            f"{self.tcm_bytes // KIB} KiB TCM + {self.sysram_bytes // KIB} KiB SYSRAM "
            f"- {self.firmware_reserved_bytes // KIB} KiB firmware = {self.model_ram_bytes} bytes"
        )


BUDGETS: dict[str, HardwareBudget] = {
    b.hardware_id: b
    for b in (
        # Azure Sphere: the OS installs core firmware (image packages), never the agent.
        HardwareBudget(
            hardware_id="mt3620",
            cores=("m4-0", "m4-1"),
            tcm_bytes=192 * KIB,
            sysram_bytes=64 * KIB,
            firmware_reserved_bytes=48 * KIB,
            max_firmware_bytes=1024 * KIB,
            firmware_updates=False,
            runtime="tflm-2026.10",
            operators=TFLM_2026_10,
        ),
        # STM32MP1-class: 64 KiB RETRAM (as TCM) + 384 KiB MCU SRAM; Linux remoteproc loads
        # the M4 firmware, so the agent may replace it.
        HardwareBudget(
            hardware_id="linux-a7-m4",
            cores=("m4-0",),
            tcm_bytes=64 * KIB,
            sysram_bytes=384 * KIB,
            firmware_reserved_bytes=48 * KIB,
            max_firmware_bytes=1024 * KIB,
            firmware_updates=True,
            runtime="tflm-2026.10",
            operators=TFLM_2026_10,
        ),
    )
}


def budget_for(hardware_id: str) -> HardwareBudget | None:
    return BUDGETS.get(hardware_id)
