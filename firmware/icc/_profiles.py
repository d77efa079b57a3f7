"""Device profiles: the one typed place for the numbers that bound the inter-core link.

A profile describes one hardware family: how large one inter-core message may be, how much RAM
each real-time core has, how many cores there are, and whether the application core may replace
the cores' firmware. Both ends of the link take their limits from the same profile object, built
once by the composition root (`profile_named`) and passed down; nothing here is read at import
time from the environment.

Invariants:
 * `max_message_bytes` bounds a whole ICC frame (header, payload and CRC), because it is what one
   `send()` on the transport may carry.
 * `window` frames fit in the transport's buffering, so the sender never blocks for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.icc._errors import ConfigurationError

__all__ = ["LINUX_A7_M4", "MT3620", "PROFILES", "DeviceProfile", "profile_named"]

KIB = 1024


@dataclass(frozen=True)
class DeviceProfile:
    """The hard limits of one device family.

    Attributes:
        name: profile name used on command lines (`mt3620`, `linux-a7-m4`).
        transport: how messages travel (`seqpacket` for Azure Sphere's `Application_Connect`
            socket, `rpmsg` for a Linux RPMsg endpoint).
        max_message_bytes: largest message (one whole ICC frame) the transport carries.
        core_ids: names of the real-time cores the agent drives.
        tcm_bytes: fast private RAM per core (MT3620: TCM).
        sysram_bytes: slower RAM per core (MT3620: SYSRAM).
        agent_memory_budget_bytes: RAM the application-core agent may use for an update.
        firmware_updates_allowed: whether the agent may replace core firmware images itself.
        window: frames a sender may have in flight before it must wait for an acknowledgement.
        retransmit_timeout_s: time without an acknowledgement before unacknowledged frames are
            sent again the first time; it doubles with each further round of the same frame...
        max_retransmit_timeout_s: ...up to this (0.25 s doubling to 2 s over 12 rounds: the
            peer is declared unresponsive after about 20 s of silence, not 3 s).
        max_retransmits: retransmissions of one frame before the peer is declared unresponsive.
    """

    name: str
    transport: str
    max_message_bytes: int
    core_ids: tuple[str, ...]
    tcm_bytes: int
    sysram_bytes: int
    agent_memory_budget_bytes: int
    firmware_updates_allowed: bool
    window: int = 8
    retransmit_timeout_s: float = 0.25
    max_retransmit_timeout_s: float = 2.0
    max_retransmits: int = 12

    def __post_init__(self) -> None:
        if not 64 <= self.max_message_bytes <= 65535:
            raise ConfigurationError(f"{self.name}: max_message_bytes must be in 64..65535")
        if not 1 <= self.window <= 64:
            raise ConfigurationError(f"{self.name}: window must be in 1..64")
        if (
            self.retransmit_timeout_s <= 0
            or self.max_retransmit_timeout_s < self.retransmit_timeout_s
            or self.max_retransmits < 1
        ):
            raise ConfigurationError(f"{self.name}: retransmission limits must be positive")
        if not self.core_ids:
            raise ConfigurationError(f"{self.name}: a profile needs at least one core")

    @property
    def core_ram_bytes(self) -> int:
        """All RAM of one core: what code, stack, model bytes and tensor arena share."""
        return self.tcm_bytes + self.sysram_bytes


# MT3620 (Azure Sphere): 1 KiB inter-core messages, 192 KB TCM + 64 KB SYSRAM per M4 core,
# 256 KiB for the high-level app; the OS, not the app, installs core firmware.
MT3620 = DeviceProfile(
    name="mt3620",
    transport="seqpacket",
    max_message_bytes=1024,
    core_ids=("m4-0", "m4-1"),
    tcm_bytes=192 * KIB,
    sysram_bytes=64 * KIB,
    agent_memory_budget_bytes=256 * KIB,
    firmware_updates_allowed=False,
)

# STM32MP1-class part: RPMsg buffers of 512 bytes carry 496 bytes after the 16-byte RPMsg
# header; one Cortex-M4 with 64 KB RETRAM (counted as tcm) and 384 KB MCU SRAM (as sysram).
# Linux loads the M4 firmware through remoteproc, so the agent may replace it.
LINUX_A7_M4 = DeviceProfile(
    name="linux-a7-m4",
    transport="rpmsg",
    max_message_bytes=496,
    core_ids=("m4-0",),
    tcm_bytes=64 * KIB,
    sysram_bytes=384 * KIB,
    agent_memory_budget_bytes=1024 * KIB,
    firmware_updates_allowed=True,
)

PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (MT3620, LINUX_A7_M4)}


def profile_named(name: str) -> DeviceProfile:
    """Return the profile called `name`.

    Raises:
        ConfigurationError: no such profile; the message lists the known ones.
    """
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ConfigurationError(f"unknown device profile {name!r} (known: {known})") from None
