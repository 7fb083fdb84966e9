"""The production guide's examples (docs/production.md) run and show what the guide says."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_asgi_lifespan_serves_health_and_the_feed() -> None:
    """Under uvicorn, the lifespan opens the connection (its first send reaches the server)
    and the mounted health app answers /health/livez, /health/readyz and /health/metrics."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    seen = await load("asgi_lifespan").main()
    assert seen == {
        "/health/livez": 200,
        "/health/readyz": 200,
        "/last": 200,
        "/health/metrics": 200,
    }


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_private_ca_in_code_and_on_the_command_line() -> None:
    """ssl= with a context trusting a private CA connects; without it the certificate error is
    fatal after one dial; the CLI trusts the CA through SSL_CERT_FILE (exit 0 = healthy)."""
    result = await load("tls_private_ca").main()
    assert result == {"echoed": "hello over TLS", "without_ca": "failed", "cli_exit": 0}


@pytest.mark.anyio
async def test_http_proxy_from_environment_and_argument() -> None:
    """websockets tunnels through the http_proxy of the environment and through proxy=;
    proxy=None bypasses it."""
    assert await load("http_proxy").main() == {"environment": 1, "explicit": 1, "direct": 0}


@pytest.mark.anyio
async def test_subprotocols_negotiated_on_each_connection() -> None:
    """The preferred subprotocol is chosen when offered, the fallback when the server only has
    it, and a server with none in common makes the connection FAILED."""
    result = await load("subprotocols").main()
    assert result == {"chosen": ["feed.v2", "feed.v1"], "mismatch": "failed"}


@pytest.mark.anyio
async def test_token_refresh_headers_401_and_realtime() -> None:
    """Each dial carries a fresh token, a 401 is retried with the next token, and Realtime joins
    and set_auth carry new tokens."""
    seen, joins = await load("token_refresh").main()
    assert seen == ["Bearer jwt-1", "Bearer jwt-3"]
    assert len(joins) == 2
    assert len(set(joins)) == 2
    assert all(j is not None and j.startswith("rt-") for j in joins)
