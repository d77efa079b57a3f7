from tests.integration.firmware.conftest import spawn_core

__all__ = ["spawn_core"]
