"""gRPC channel setup shared by the Hallmark example clients."""

from __future__ import annotations

import grpc

# For a unix: target, grpcio (seen with 1.85) sends the socket path as the
# HTTP/2 :authority. The h2 crate under tonic rejects that value as a
# malformed authority and resets the stream with PROTOCOL_ERROR, so unix
# targets send "localhost" instead.
UNIX_SOCKET_AUTHORITY = "localhost"


def open_channel(target: str) -> grpc.Channel:
    """Open an insecure channel to target, host:port or unix:/abs/path."""
    options: list[tuple[str, str]] = []
    if target.startswith("unix:"):
        options.append(("grpc.default_authority", UNIX_SOCKET_AUTHORITY))
    return grpc.insecure_channel(target, options=options)
