"""Offers carry the repository URLs the dispatcher holds when it writes them: a refreshed signed
grant (`Dispatcher.use_config`) reaches the offers written after it, not the ones before."""

from __future__ import annotations

from dataclasses import replace

from service.storage import open_storage
from tests.integration.engine._world import CONFIG, World


def _queries(world: World) -> dict[str, str]:
    out: dict[str, str] = {}
    for device in world.fleet.ids:
        desired = world.hub.get_twin(device).desired_service or {}
        repository = desired.get("repository") or {}
        if desired.get("workflow"):
            out[device] = str(repository.get("query", ""))
    return out


def test_offers_after_a_refresh_carry_the_new_grant() -> None:
    world = World(open_storage("memory:"))
    world.step()
    first = _queries(world)
    assert first and set(first.values()) == {""}

    world.dispatcher.use_config(replace(CONFIG, query="sig=fresh"))
    world.run_until({"completed"})
    later = {d: q for d, q in _queries(world).items() if d not in first}
    assert later, "the rollout offered no device after the refresh"
    assert set(later.values()) == {"sig=fresh"}
    assert all(_queries(world)[d] == "" for d in first)
