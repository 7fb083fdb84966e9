"""wss:// to a server whose certificate is signed by your own (private) certificate authority.

Two ways, both shown here against an embedded TLS server on 127.0.0.1:

1. In code: build an ``ssl.SSLContext`` that trusts your CA and pass it as ``ssl=``; every
   keyword that ResilientConnection does not know goes to ``websockets.connect``, on every
   reconnect. Certificate errors are fatal by default (state FAILED, no retry storm).
2. The command line (and any program using Python's default context): point
   ``SSL_CERT_FILE`` at the CA bundle. Note that this *replaces* the system trust store for
   that process; concatenate your CA with the system bundle if you also need public sites.

Run (needs the ``openssl`` command to make a throw-away CA and server certificate)::

    python examples/tls_private_ca.py
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from resilient_conn import ResilientConnection
from resilient_conn.testing import ScriptedServer


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """Create ``ca.pem`` and a ``server.pem``/``server.key`` for 127.0.0.1, signed by the CA."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=Example Private CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.pem")  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def client_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only ``ca`` (hostname checking stays on)."""
    return ssl.create_default_context(cafile=str(ca))


async def main() -> dict[str, object]:
    """Echo over wss:// with ``ssl=``, then run the CLI's ``check`` with SSL_CERT_FILE."""
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = make_ca_and_server_cert(Path(tmp))
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        async with ScriptedServer(ssl=server_ctx) as server:
            url = server.url.replace("ws://", "wss://")
            async with ResilientConnection(url, ssl=client_context(ca)) as conn:
                await conn.send("hello over TLS")
                echoed = await conn.recv()
                print(f"in code: ssl=context -> echoed {echoed!r}")

            # Without the CA the certificate is rejected: FAILED at once, no retry storm.
            failed = ResilientConnection(url, ssl=ssl.create_default_context())
            gave_up = anyio.Event()
            failed.on_state_change(
                lambda change: gave_up.set() if change.new.value == "failed" else None
            )
            async with failed:
                with anyio.fail_after(10):
                    await gave_up.wait()
            print(f"without the CA: {failed.state.value} after {failed.stats.dials} dial(s)")

            env = {**os.environ, "SSL_CERT_FILE": str(ca)}
            cli = [sys.executable, "-m", "resilient_conn", "check", url, "--timeout", "5"]
            done = await anyio.run_process(cli, env=env, check=False)
            print(f"CLI with SSL_CERT_FILE: exit {done.returncode}")
    return {"echoed": echoed, "without_ca": failed.state.value, "cli_exit": done.returncode}


if __name__ == "__main__":
    anyio.run(main)
