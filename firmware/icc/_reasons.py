"""Reason codes carried in NACK, SELFTEST, REVERT and CAPS messages (one byte on the wire).

The numbers are part of the wire contract: never renumber, only append.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CoreState", "ReasonCode", "SlotState"]


class ReasonCode(IntEnum):
    """Why a core refused a request, failed a step or reverted."""

    OK = 0
    BAD_MESSAGE = 1  # a message that decodes but makes no sense (field out of range)
    VERSION_UNSUPPORTED = 2  # no protocol version in common
    BUSY = 3  # another transfer or trial is in progress
    BAD_STATE = 4  # the request is not valid in the core's current state
    BUDGET_EXCEEDED = 5  # model bytes plus arena do not fit in the core's RAM
    OPERATOR_UNSUPPORTED = 6  # the model uses an operator the firmware lacks
    FIRMWARE_TOO_OLD = 7  # the model needs a newer core firmware
    LENGTH_MISMATCH = 8  # received length differs from the declared length
    HASH_MISMATCH = 9  # received bytes do not hash to the declared sha256
    BAD_OFFSET = 10  # a DATA chunk is not at the next expected offset
    SLOT_INVALID = 11  # the slot does not exist or holds the running model
    MODEL_INVALID = 12  # the runtime cannot load the model
    ARENA_TOO_SMALL = 13  # the declared arena cannot hold the model's tensors
    SELFTEST_FAILED = 14  # outputs differ from the expected vectors beyond tolerance
    SHAPE_MISMATCH = 15  # declared tensor shapes or dtypes differ from the model's
    CONFIRM_TIMEOUT = 16  # no CONFIRM arrived before the deadline: reverted
    HOST_REQUESTED = 17  # the host asked for the revert
    REVERTED_ON_BOOT = 18  # the core restarted during a trial and went back
    NOTHING_TO_REVERT = 19  # no previous model to go back to
    ABORTED = 20  # the host aborted the transfer
    STORAGE_ERROR = 21  # the core could not persist a slot
    VECTOR_INVALID = 22  # a self-test vector does not match the declared shapes
    NO_MODEL = 23  # there is no model to run
    RUNTIME_ERROR = 24  # the runtime failed while running the model
    FIRMWARE_INCOMPATIBLE = 25  # the stored model cannot run on the booted firmware


class CoreState(IntEnum):
    """What a core is doing, as reported in CAPS and HEARTBEAT."""

    EMPTY = 0  # no model to run
    RUNNING = 1  # running its confirmed model
    RECEIVING = 2  # running its confirmed model (if any) and receiving a new one
    TRIAL = 3  # running a new model that waits for CONFIRM
    FAULT = 4  # a stored model exists but cannot run (see the last reason)


class SlotState(IntEnum):
    """The state of one A/B slot in the core's persisted slot table."""

    EMPTY = 0
    STAGED = 1  # received and verified, never activated
    ACTIVE = 2  # the confirmed model
    TRIAL = 3  # activated, waiting for CONFIRM
    PREVIOUS = 4  # confirmed before: the rollback target
    FAILED = 5  # activated and failed or reverted; kept for diagnostics only
