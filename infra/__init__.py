"""The local stack: mock IoT hub, local blob store, simulated fleet, orchestration."""
