"""The pure device-to-cloud wire contract: twin shapes and the telemetry schema (standard library only)."""
