"""`tinyfleet telemetry`: fleet inference telemetry through the API (summary, one device's rows,
dead letters, ingestion stats), and `ingest` to run an ingestion worker against a feed."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import typer

from service.cli._output import console, emit_json, emit_table, fail
from service.cli._remote import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, connect

app = typer.Typer(help="Inference telemetry: summaries, device rows, dead letters, stats.")
app.info.no_args_is_help = True

SinceOpt = Annotated[str | None, typer.Option("--since", help="ISO 8601 UTC start (inclusive).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="ISO 8601 UTC end (exclusive).")]


def _params(**values: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in values.items() if v is not None]


def _num(value: Any, digits: int = 1) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, int | float) else ""


@app.command("summary")
def summary(
    group: Annotated[str | None, typer.Option("--group", help="Device group id.")] = None,
    release: Annotated[str | None, typer.Option("--release", help="Release id.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id.")] = None,
    model_version: Annotated[str | None, typer.Option("--model-version")] = None,
    core: Annotated[str | None, typer.Option("--core", help="Core id (m4-0, m4-1).")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    bucket: Annotated[str, typer.Option("--bucket", help="minute or hour.")] = "hour",
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Aggregates per time bucket, release, model version and core."""
    params = _params(
        group_id=group,
        release_id=release,
        model_id=model,
        model_version=model_version,
        core=core,
        since=since,
        until=until,
        bucket=bucket,
    )
    with connect(server, token, config_profile) as api:
        items = api.get("/telemetry/summary", params)["items"]
    if json_out:
        emit_json(items)
        return
    emit_table(
        f"telemetry ({len(items)} buckets)",
        ["bucket", "release", "model", "core", "count", "p50 us", "p95 us", "score", "anom", "err"],
        [
            (
                i["bucket_start"],
                i.get("release_id") or "",
                f"{i['model_id']}@{i['model_version']}",
                i["core"],
                i["count"],
                _num(i["latency_p50_us"], 0),
                _num(i["latency_p95_us"], 0),
                _num(i["score_mean"], 3),
                _num(i["anomaly_rate"], 3),
                i["errors"],
            )
            for i in items
        ],
    )


@app.command("device")
def device(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows, newest first.")] = 50,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A device's recent inference rows."""
    params = _params(since=since, until=until, limit=limit)
    with connect(server, token, config_profile) as api:
        items = api.get(f"/telemetry/devices/{device_id}", params)["items"]
    if json_out:
        emit_json(items)
        return
    emit_table(
        f"{device_id}: {len(items)} inference rows",
        ["time", "release", "core", "model", "latency us", "score", "label", "anomaly"],
        [
            (
                r["ts"],
                r.get("release_id") or "",
                r["core"],
                f"{r['model_id']}@{r['model_version']}",
                r["latency_us"],
                _num(r["score"], 3),
                r.get("label") or "",
                "" if r.get("anomaly") is None else str(r["anomaly"]).lower(),
            )
            for r in items
        ],
    )


@app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Telemetry the service refused, with the reason."""
    with connect(server, token, config_profile) as api:
        items = list(api.pages("/telemetry/dead-letters", (), limit=limit, follow=all_pages))
    if json_out:
        emit_json(items)
        return
    emit_table(
        f"dead letters ({len(items)})",
        ["id", "received", "device", "reason", "detail"],
        [
            (x["id"], x["received_at"], x.get("device_id") or "", x["reason"], x["detail"])
            for x in items
        ],
    )


@app.command("stats")
def stats(
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingestion counters and the lag of each partition."""
    with connect(server, token, config_profile) as api:
        data = api.get("/telemetry/stats")
    if json_out:
        emit_json(data)
        return
    console.print(
        f"ingested {data['ingested']} messages ({data['records']} records), "
        f"{data['duplicates']} duplicates, {data['dead_letters']} dead letters"
    )
    for reason, count in sorted(data["by_reason"].items()):
        console.print(f"  {reason}: {count}")
    lag = ", ".join(f"{p}: {n}" for p, n in sorted(data["lag"].items())) or "none"
    console.print(f"lag per partition: {lag}")


@app.command("ingest")
def ingest(
    feed: Annotated[str, typer.Option("--feed", help="The mock hub's feed file (feed.sqlite).")],
    db: Annotated[str, typer.Option("--db", help="Database URL (migrated).")],
    partitions: Annotated[
        str | None, typer.Option("--partitions", help="Comma-separated partitions to own.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=1_000_000, help="Events per commit.")] = 5000,
    once: Annotated[bool, typer.Option("--once", help="Drain the feed, then exit.")] = False,
    leases: Annotated[
        bool,
        typer.Option(
            "--leases",
            help="Share the partitions with the other workers by lease in the database "
            "(instead of --partitions).",
        ),
    ] = False,
    lease_ttl: Annotated[
        float,
        typer.Option(min=1, max=3600, help="Seconds before a silent worker's leases expire."),
    ] = 30.0,
    worker_id: Annotated[
        str | None,
        typer.Option("--worker-id", help="This worker's name in the leases (default: unique)."),
    ] = None,
) -> None:
    """Run an ingestion worker on the mock hub's feed until interrupted (or drained: --once)."""
    from datetime import timedelta

    from infra.telemetry_source import FeedSource
    from service.storage import SqlStorage
    from service.telemetry import (
        IngestWorker,
        LeaseConfig,
        SourceConfigError,
        StorageGroups,
        TelemetryStore,
    )

    storage = SqlStorage(db)
    source = FeedSource.open(feed)
    try:
        config = None
        if leases:
            ttl = timedelta(seconds=lease_ttl)
            config = LeaseConfig(ttl, worker_id) if worker_id else LeaseConfig(ttl)
        worker = IngestWorker(
            source,
            TelemetryStore(storage.engine),
            partitions=partitions.split(",") if partitions else None,
            leases=config,
            batch=batch,
            groups_of=StorageGroups(storage),
        )
    except SourceConfigError as exc:
        source.close()
        storage.close()
        fail(f"invalid ingest options: {exc}", code=2)
    try:
        if once:
            total = 0
            while (report := worker.run_once()).received:
                total += report.messages
            worker.close()
            console.print(f"ingested {total} messages")
        else:
            stop = threading.Event()
            try:
                worker.run(stop)
            except KeyboardInterrupt:
                stop.set()
    finally:
        source.close()
        storage.close()
