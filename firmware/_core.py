"""One simulated M4 core: the core end of the inter-core protocol over its A/B slots, its TFLM
runtime and its inference loop. Driven by `firmware.core` (the process entry point) or, in
tests, by an in-memory driver: bytes and time go in, frames come out.

Rules (the wire side is specified in docs/protocol/intercore.md):
 * Nothing but HELLO is handled before a HELLO opened the session; a HELLO drops any transfer
   in progress (the host restarted) but keeps a trial, whose deadline still runs.
 * BEGIN is refused before any byte moves when the model does not fit the RAM budget, needs an
   operator or firmware the core lacks, or targets the running slot.
 * Received bytes go to the inactive slot's partial file and are hashed as they arrive; END
   stages the slot only when length and sha256 match and the model's real operators are
   supported.
 * ACTIVATE records the trial before loading anything, so a crash during loading or the
   self-test reverts at the next boot. A failed self-test reverts at once; a passed one runs
   the new model until CONFIRM or the deadline (then the core reverts by itself).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import IO

from firmware._errors import ModelRejectedError, StorageError
from firmware._image import FirmwareImage
from firmware._runtime import InterpreterCache, ModelRuntime, SelfTestOutcome, check_operators
from firmware._slots import SlotRecord, SlotStore
from firmware.icc import (
    ANOMALY_FLAG_VERSION,
    NO_SLOT,
    PROTOCOL_VERSION,
    SLOT_ANY,
    Abort,
    Ack,
    Activate,
    Begin,
    Caps,
    Confirm,
    CoreState,
    Data,
    DeviceProfile,
    End,
    Heartbeat,
    Hello,
    Inference,
    Log,
    LogLevel,
    Message,
    MessageType,
    Nack,
    ReasonCode,
    ReliableLink,
    Revert,
    SelfTest,
    SlotInfo,
    Status,
    Vector,
    VectorPart,
    negotiate,
)
from firmware.models._datasets import SensorSimulator

__all__ = ["CoreConfig", "CoreMachine"]

_MAX_VECTORS = 8


@dataclass(frozen=True)
class CoreConfig:
    core_id: str
    profile: DeviceProfile
    image: FirmwareImage
    inference_period_s: float = 0.5
    heartbeat_period_s: float = 5.0
    sensor_seed: int = 0


def _numerics_differ(outcome: SelfTestOutcome, record: SlotRecord) -> SelfTestOutcome:
    """The outcome a core whose arithmetic differs from the build's reports for the same run:
    no vector within tolerance, the worst one beyond every tolerance."""
    tolerance = max((tol for _, _, tol in record.vectors), default=0)
    worst = min(max(outcome.max_abs_diff, tolerance + 1), 0xFFFF)
    return replace(outcome, passed=False, passed_count=0, max_abs_diff=worst)


@dataclass
class _Transfer:
    slot: int
    begin: Begin
    handle: IO[bytes]
    received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    vectors: dict[tuple[int, VectorPart], bytearray] = field(default_factory=dict)
    tolerances: dict[int, int] = field(default_factory=dict)


class CoreMachine:
    def __init__(
        self,
        config: CoreConfig,
        store: SlotStore,
        now: float,
        *,
        interpreters: InterpreterCache | None = None,
    ) -> None:
        self.config = config
        self._interpreters = interpreters  # shared with the other cores of this thread, if any
        self.store = store
        self.hooks = store.hooks
        self.link = ReliableLink.for_profile(config.profile)
        self.table = store.load()
        self.established = False
        self.session_version = 0  # the protocol version agreed with the host's last HELLO
        self.inferences = 0
        self.dropped_results = 0
        self._started = now
        self._transfer: _Transfer | None = None
        self._confirm_deadline: float | None = None
        self._next_inference = now + config.inference_period_s
        self._next_heartbeat = now + config.heartbeat_period_s
        self._runtime: ModelRuntime | None = None
        self._sensor: SensorSimulator | None = None
        if self.table.active is not None:
            self._load_running()

    # -- driver interface ----------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        for message in self.link.receive(data):
            if isinstance(message, Hello):
                self._on_hello(message)
            elif self.established:
                self.hooks.message_arrived()
                self._handle(message, now)

    def outbound(self, now: float) -> list[bytes]:
        self._tick(now)
        return self.link.outbound(now)

    def next_deadline(self) -> float:
        times = [self._next_heartbeat]
        if self._runtime is not None and self.config.inference_period_s > 0:
            times.append(self._next_inference)
        if self._confirm_deadline is not None:
            times.append(self._confirm_deadline)
        link = self.link.next_deadline()
        if link is not None:
            times.append(link)
        return min(times)

    @property
    def state(self) -> CoreState:
        if self._transfer is not None:
            return CoreState.RECEIVING
        if self.table.trial is not None:
            return CoreState.TRIAL
        if self._runtime is not None:
            return CoreState.RUNNING
        return (
            CoreState.FAULT
            if self.table.last_reason != ReasonCode.OK and self.table.active is not None
            else CoreState.EMPTY
        )

    # -- session -------------------------------------------------------------------------------

    def _on_hello(self, hello: Hello) -> None:
        image, profile = self.config.image, self.config.profile
        agreed = negotiate(
            hello,
            min_version=image.min_protocol,
            max_version=min(image.max_protocol, PROTOCOL_VERSION),
            max_message_bytes=profile.max_message_bytes,
            window=profile.window,
        )
        if agreed is None:
            detail = f"core speaks {image.min_protocol}..{image.max_protocol}"
            self.link.send_unsequenced(
                Nack(MessageType.HELLO, ReasonCode.VERSION_UNSUPPORTED, detail)
            )
            return
        self._abort_transfer()
        self.link.reset(max_message_bytes=agreed.max_message_bytes, window=agreed.window)
        self.established = True
        self.session_version = agreed.version
        self.link.send_unsequenced(self._caps(hello.nonce, agreed.version))

    def _caps(self, nonce: int, version: int = PROTOCOL_VERSION) -> Caps:
        cfg = self.config
        slots = tuple(
            SlotInfo(
                r.state,
                r.model_id,
                r.version,
                r.length,
                bytes.fromhex(r.sha256 or "00" * 32),
                r.arena_bytes,
            )
            for r in self.table.slots
        )
        return Caps(
            nonce=nonce,
            version=version,
            max_message_bytes=self.link.max_message_bytes,
            window=self.link.window,
            core_id=cfg.core_id,
            firmware_version=cfg.image.version,
            runtime_version=cfg.image.runtime_version,
            tcm_bytes=cfg.profile.tcm_bytes,
            sysram_bytes=cfg.profile.sysram_bytes,
            reserved_bytes=cfg.image.reserved_bytes,
            state=self.state,
            active_slot=NO_SLOT if self.table.active is None else self.table.active,
            trial_slot=NO_SLOT if self.table.trial is None else self.table.trial,
            last_reason=self.table.last_reason,
            slots=slots,
            operators=tuple(sorted(cfg.image.operators)),
        )

    def _handle(self, message: Message, now: float) -> None:
        match message:
            case Status():
                self.link.send(self._caps(0))
            case Begin():
                self._on_begin(message)
            case Vector():
                self._on_vector(message)
            case Data():
                self._on_data(message)
            case End():
                self._on_end()
            case Abort():
                self._abort_transfer()
                self.link.send(Ack(MessageType.ABORT))
            case Activate():
                self._on_activate(message, now)
            case Confirm():
                self._on_confirm(message)
            case Revert():
                self._on_revert()
            case _:
                self._log(LogLevel.WARNING, f"ignored unexpected {type(message).__name__}")

    # -- transfer ------------------------------------------------------------------------------

    def _refuse(self, kind: MessageType, reason: ReasonCode, detail: str) -> None:
        self.link.send(Nack(kind, reason, detail[:200]))

    def _budget_problem(self, begin: Begin) -> str | None:
        cfg = self.config
        total = cfg.profile.core_ram_bytes - cfg.image.reserved_bytes
        running = self.table.running
        kept = self.table.slots[running] if running is not None else SlotRecord()
        # While receiving, the running model and its arena stay live next to the new bytes;
        # during the trial, the old model's bytes stay (for the revert) next to the new arena.
        receiving = kept.length + kept.arena_bytes + begin.length
        trial = kept.length + begin.length + begin.arena_bytes
        needed = max(receiving, trial)
        if needed > total:
            return f"needs {needed} bytes of RAM with the running model kept, {total} available"
        return None

    def _on_begin(self, begin: Begin) -> None:
        reject = lambda reason, detail: self._refuse(MessageType.BEGIN, reason, detail)  # noqa: E731
        image = self.config.image
        if self.table.trial is not None:
            return reject(ReasonCode.BUSY, "a trial is waiting for CONFIRM")
        self._abort_transfer()
        slot = self.table.inactive_slot() if begin.slot == SLOT_ANY else begin.slot
        if (
            slot is None
            or slot >= len(self.table.slots)
            or slot in (self.table.active, self.table.trial)
        ):
            return reject(ReasonCode.SLOT_INVALID, f"slot {begin.slot} is not free")
        problem = self._budget_problem(begin)
        if problem:
            return reject(ReasonCode.BUDGET_EXCEEDED, problem)
        missing = sorted(set(begin.operators) - image.operators)
        if missing:
            return reject(
                ReasonCode.OPERATOR_UNSUPPORTED,
                f"firmware {image.version} lacks {', '.join(missing)}",
            )
        try:
            too_old = not image.at_least(begin.min_firmware_version)
        except ValueError:
            return reject(ReasonCode.BAD_MESSAGE, f"bad version {begin.min_firmware_version!r}")
        if too_old:
            return reject(
                ReasonCode.FIRMWARE_TOO_OLD,
                f"needs {begin.min_firmware_version}, has {image.version}",
            )
        if (
            begin.length == 0
            or begin.vector_count > _MAX_VECTORS
            or not begin.input.nbytes
            or not begin.output.nbytes
        ):
            return reject(ReasonCode.BAD_MESSAGE, "empty model, unknown dtype or too many vectors")
        try:
            self.table.apply(slot, "clear")
            self.store.save(self.table)
            self.hooks.point("begin:cleared")
            handle = self.store.open_partial(slot)
        except StorageError as exc:
            return reject(ReasonCode.STORAGE_ERROR, str(exc))
        self._transfer = _Transfer(slot=slot, begin=begin, handle=handle)
        self.link.send(Ack(MessageType.BEGIN, slot))

    def _fail_transfer(self, kind: MessageType, reason: ReasonCode, detail: str) -> None:
        self._abort_transfer()
        self._refuse(kind, reason, detail)

    def _on_vector(self, vec: Vector) -> None:
        t = self._transfer
        if t is None:
            return self._refuse(MessageType.VECTOR, ReasonCode.BAD_STATE, "no transfer in progress")
        spec = t.begin.input if vec.part == VectorPart.INPUT else t.begin.output
        buffer = t.vectors.setdefault((vec.index, vec.part), bytearray())
        if (
            vec.index >= t.begin.vector_count
            or vec.total != spec.nbytes
            or vec.offset != len(buffer)
            or len(buffer) + len(vec.data) > vec.total
        ):
            return self._fail_transfer(
                MessageType.VECTOR,
                ReasonCode.VECTOR_INVALID,
                f"vector {vec.index} does not match the declared tensors",
            )
        buffer += vec.data
        t.tolerances[vec.index] = vec.tolerance

    def _on_data(self, data: Data) -> None:
        t = self._transfer
        if t is None:
            return self._refuse(MessageType.DATA, ReasonCode.BAD_STATE, "no transfer in progress")
        if data.offset != t.received:
            return self._fail_transfer(
                MessageType.DATA,
                ReasonCode.BAD_OFFSET,
                f"expected offset {t.received}, got {data.offset}",
            )
        if t.received + len(data.data) > t.begin.length:
            return self._fail_transfer(
                MessageType.DATA,
                ReasonCode.LENGTH_MISMATCH,
                f"more than the declared {t.begin.length} bytes",
            )
        try:
            t.handle.write(data.data)
        except OSError as exc:
            return self._fail_transfer(MessageType.DATA, ReasonCode.STORAGE_ERROR, str(exc))
        t.hasher.update(data.data)
        t.received += len(data.data)
        self.hooks.point("data:written")

    def _on_end(self) -> None:
        t = self._transfer
        if t is None:
            return self._refuse(MessageType.END, ReasonCode.BAD_STATE, "no transfer in progress")
        begin = t.begin
        fail = lambda reason, detail: self._fail_transfer(MessageType.END, reason, detail)  # noqa: E731
        if t.received != begin.length:
            return fail(
                ReasonCode.LENGTH_MISMATCH, f"received {t.received} of {begin.length} bytes"
            )
        if t.hasher.digest() != begin.sha256:
            return fail(ReasonCode.HASH_MISMATCH, "received bytes do not match the declared sha256")
        vectors = []
        for index in range(begin.vector_count):
            vin, vout = (
                t.vectors.get((index, VectorPart.INPUT)),
                t.vectors.get((index, VectorPart.EXPECTED)),
            )
            if (
                vin is None
                or vout is None
                or len(vin) != begin.input.nbytes
                or len(vout) != begin.output.nbytes
            ):
                return fail(ReasonCode.VECTOR_INVALID, f"self-test vector {index} is incomplete")
            vectors.append((bytes(vin).hex(), bytes(vout).hex(), t.tolerances[index]))
        try:
            self.store.commit_partial(t.slot, t.handle)
            self.hooks.point("end:renamed")
            check_operators(self.store.read(t.slot), self.config.image)
        except ModelRejectedError as exc:
            return fail(exc.reason, exc.detail)
        except StorageError as exc:
            return fail(ReasonCode.STORAGE_ERROR, str(exc))
        record = SlotRecord(
            model_id=begin.model_id,
            version=begin.version,
            length=begin.length,
            sha256=begin.sha256.hex(),
            arena_bytes=begin.arena_bytes,
            input_dtype=begin.input.dtype,
            input_shape=begin.input.shape,
            output_dtype=begin.output.dtype,
            output_shape=begin.output.shape,
            operators=begin.operators,
            min_firmware_version=begin.min_firmware_version,
            vectors=tuple(vectors),
        )
        self.table.apply(t.slot, "stage", record)
        self.store.save(self.table)
        self.hooks.point("end:recorded")
        self._transfer = None
        self.link.send(Ack(MessageType.END, begin.length))

    def _abort_transfer(self) -> None:
        if self._transfer is not None:
            self.store.discard_partial(self._transfer.slot, self._transfer.handle)
            self._transfer = None

    # -- activation ----------------------------------------------------------------------------

    def _on_activate(self, act: Activate, now: float) -> None:
        slot = act.slot
        if self._transfer is not None or self.table.trial is not None:
            return self._refuse(
                MessageType.ACTIVATE, ReasonCode.BUSY, "a transfer or trial is in progress"
            )
        if slot >= len(self.table.slots) or self.table.slots[slot].state.name != "STAGED":
            return self._refuse(
                MessageType.ACTIVATE, ReasonCode.BAD_STATE, f"slot {slot} is not staged"
            )
        self.table.begin_trial(slot)
        self.store.save(self.table)
        self.hooks.point("activate:recorded")
        record = self.table.slots[slot]
        try:
            runtime = ModelRuntime(
                self.store.read(slot), record, self.config.image, self._interpreters
            )
            outcome = runtime.self_test()
            if self.hooks.selftest_fails(record.version):
                outcome = _numerics_differ(outcome, record)
        except ModelRejectedError as exc:
            return self._trial_failed(slot, exc.reason, exc.detail, 0, 0, 0)
        except (StorageError, RuntimeError, ValueError) as exc:
            return self._trial_failed(slot, ReasonCode.RUNTIME_ERROR, str(exc), 0, 0, 0)
        self.hooks.point("activate:tested")
        if not outcome.passed:
            detail = (
                f"{outcome.passed_count}/{outcome.total} vectors within tolerance, "
                f"max diff {outcome.max_abs_diff}"
            )
            return self._trial_failed(
                slot,
                ReasonCode.SELFTEST_FAILED,
                detail,
                outcome.total,
                outcome.passed_count,
                outcome.max_abs_diff,
            )
        self._use(runtime)
        self._confirm_deadline = now + act.confirm_timeout_ms / 1000.0
        self.link.send(
            SelfTest(
                slot,
                True,
                ReasonCode.OK,
                outcome.total,
                outcome.passed_count,
                outcome.max_abs_diff,
                outcome.latency_us,
            )
        )

    def _trial_failed(
        self, slot: int, reason: ReasonCode, detail: str, total: int, passed: int, diff: int
    ) -> None:
        self.table.fail_trial(reason)
        self.store.save(self.table)
        self._log(LogLevel.WARNING, f"slot {slot} failed activation: {reason.name}: {detail}")
        self.link.send(SelfTest(slot, False, reason, total, passed, diff, 0))

    def _on_confirm(self, confirm: Confirm) -> None:
        if self.table.trial is None and confirm.slot == self.table.active:
            return self.link.send(Ack(MessageType.CONFIRM, confirm.slot))  # a repeated CONFIRM
        if self.table.trial != confirm.slot:
            return self._refuse(
                MessageType.CONFIRM, ReasonCode.BAD_STATE, f"slot {confirm.slot} is not on trial"
            )
        self.table.confirm()
        self.table.last_reason = ReasonCode.OK
        self.store.save(self.table)
        self.hooks.point("confirm:recorded")
        self._confirm_deadline = None
        self.link.send(Ack(MessageType.CONFIRM, confirm.slot))

    def _on_revert(self) -> None:
        if self.table.trial is not None:
            return self._revert_trial(ReasonCode.HOST_REQUESTED)
        if self.table.previous is None or self._transfer is not None:
            return self._refuse(
                MessageType.REVERT, ReasonCode.NOTHING_TO_REVERT, "no previous model"
            )
        self.table.rollback()
        self.table.last_reason = ReasonCode.HOST_REQUESTED
        self.store.save(self.table)
        self._load_running()
        self.link.send(Revert(self._slot_or_none(self.table.active), ReasonCode.HOST_REQUESTED))

    def _revert_trial(self, reason: ReasonCode) -> None:
        self.table.fail_trial(reason)
        self.store.save(self.table)
        self._confirm_deadline = None
        self._load_running()
        self.link.send(Revert(self._slot_or_none(self.table.active), reason))

    @staticmethod
    def _slot_or_none(slot: int | None) -> int:
        return NO_SLOT if slot is None else slot

    def _load_running(self) -> None:
        slot = self.table.running
        self._runtime, self._sensor = None, None
        if slot is None:
            return
        try:
            self._use(
                ModelRuntime(
                    self.store.read(slot),
                    self.table.slots[slot],
                    self.config.image,
                    self._interpreters,
                )
            )
        except ModelRejectedError as exc:
            self.table.last_reason = (
                ReasonCode.FIRMWARE_INCOMPATIBLE
                if exc.reason in (ReasonCode.OPERATOR_UNSUPPORTED, ReasonCode.FIRMWARE_INCOMPATIBLE)
                else exc.reason
            )
            self._log(LogLevel.ERROR, f"cannot run slot {slot}: {exc}")
        except StorageError as exc:
            self.table.last_reason = ReasonCode.STORAGE_ERROR
            self._log(LogLevel.ERROR, str(exc))

    def _use(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime
        self._sensor = SensorSimulator(runtime.record.model_id, self.config.sensor_seed)

    # -- periodic work -------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if self._confirm_deadline is not None and now >= self._confirm_deadline:
            self._revert_trial(ReasonCode.CONFIRM_TIMEOUT)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_period_s
            if self.established and self.link.can_send():
                running = self._slot_or_none(self.table.running)
                self.link.send(
                    Heartbeat(
                        int((now - self._started) * 1000), self.state, running, self.inferences
                    )
                )
        if (
            self._runtime is not None
            and self.config.inference_period_s > 0
            and now >= self._next_inference
        ):
            self._next_inference = now + self.config.inference_period_s
            self._infer()

    def _infer(self) -> None:
        assert self._runtime is not None
        sample = self._sensor.next() if self._sensor is not None else None
        if sample is None:
            return
        self.hooks.inference_starting(self._runtime.record.version)
        try:
            result = self._runtime.infer(sample.features)
        except (RuntimeError, ValueError) as exc:
            self._log(LogLevel.ERROR, f"inference failed: {exc}")
            return
        self.inferences += 1
        # Results are telemetry: when the link is backed up, drop them rather than queue.
        if not (self.established and self.link.can_send()):
            self.dropped_results += 1
            return
        record = self._runtime.record
        slot = self._slot_or_none(self.table.running)
        self.link.send(
            Inference(
                slot,
                self.inferences,
                record.model_id,
                record.version,
                result.label,
                result.score,
                min(result.latency_us, 0xFFFFFFFF),
                sample.truth,
                result.anomaly if self.session_version >= ANOMALY_FLAG_VERSION else None,
            )
        )

    def _log(self, level: LogLevel, text: str) -> None:
        if self.established and self.link.can_send():
            self.link.send(Log(level, text[:300]))
