"""Property-based tests of the whole OpenAPI document, in-process (schemathesis over ASGI):
no generated request makes the server fail (5xx), and every route that declares bearer auth
rejects a request without it. Bounded (a few examples per operation) to fit CI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import ignored_auth, not_a_server_error
from world import World

from sensorlake.api.app import create_app

EXAMPLES = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("schemathesis") / "data", public_tenant=None,
                  start_worker=True)
    yield built
    built.close()


class LazyApp:
    """An ASGI app that forwards to the module world's app once the fixture has built it."""

    target: object = None

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        assert self.target is not None, "the `app` fixture builds the app first"
        await self.target(scope, receive, send)  # type: ignore[operator]


LAZY = LazyApp()
# The document is built without a runtime (routes are static); the cases go to LAZY.
schema = schemathesis.openapi.from_dict(create_app(object(), fast_path=False).openapi()
                                        ).exclude(path="/api/v1/auth/logout")
schema.app = LAZY  # (logging out, excluded above, would end the token the cases use)
schema.config.phases.coverage.enabled = False  # examples + bounded fuzzing: fits CI


@pytest.fixture(scope="module")
def app(world: World) -> Iterator[object]:
    LAZY.target = create_app(world.runtime)
    yield LAZY.target
    LAZY.target = None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_auth_enforced(case: schemathesis.Case, world: World,
                                            app: object) -> None:
    headers = world.headers("a", "owner")
    case.call_and_validate(base_url="http://testserver", headers=headers,
                           checks=[not_a_server_error, ignored_auth])


def test_openapi_declares_bearer_auth_and_examples(world: World) -> None:
    doc = create_app(world.runtime).openapi()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = doc["paths"]
    assert paths["/api/v1/latest"]["get"]["security"] == [{"bearer": []}]
    assert paths["/api/v1/auth/login"]["post"]["security"] == []
    with_examples = [f"{m.upper()} {p}" for p, ops in paths.items() for m, op in ops.items()
                     if "example" in str(op) or "examples" in str(op)]
    assert len(with_examples) >= 6, with_examples
    schemas = doc["components"]["schemas"]
    for name in ("DeviceCreate", "DeviceUpdate", "Login", "TokenCreate", "GrantCreate"):
        assert schemas[name].get("examples"), name


def test_the_app_can_be_built_without_a_runtime(tmp_path: Path) -> None:
    assert create_app(object(), fast_path=False).openapi()["paths"]
