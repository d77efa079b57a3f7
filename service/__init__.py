"""The tinyfleet cloud service: storage, registry and groups, releases, rollouts, telemetry, API."""
