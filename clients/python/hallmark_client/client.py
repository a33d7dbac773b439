"""gRPC client that signs output manifests with a Hallmark sidecar."""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import grpc

from hallmark_client._proto.hallmark.v1 import signer_pb2, signer_pb2_grpc
from hallmark_client.canonical import CANONICALIZATIONS, JCS, canonicalize
from hallmark_client.errors import (
    HallmarkError,
    InvalidRequestError,
    InvalidResponseError,
    error_from_code,
    error_from_rpc,
)
from hallmark_client.timeutil import timestamp_to_datetime

#: For unix: targets grpcio sends the socket path as the HTTP/2 :authority,
#: which the server's h2 stack rejects; "localhost" is a valid authority.
UNIX_SOCKET_AUTHORITY = "localhost"

#: Configuration names of the signature algorithms, by protobuf enum value.
ALGORITHM_NAMES: Dict[int, str] = {
    signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256: "rsa-pss-sha256",
    signer_pb2.SIGNATURE_ALGORITHM_RSA_PKCS1V15_SHA256: "rsa-pkcs1-sha256",
    signer_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256: "ecdsa-p256-sha256",
    signer_pb2.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384: "ecdsa-p384-sha384",
    signer_pb2.SIGNATURE_ALGORITHM_ED25519: "ed25519",
}
#: Hash that each algorithm's digest must be made with.
HASH_FOR_ALGORITHM: Dict[str, str] = {
    "rsa-pss-sha256": "sha256",
    "rsa-pkcs1-sha256": "sha256",
    "ecdsa-p256-sha256": "sha256",
    "ecdsa-p384-sha384": "sha384",
    "ed25519": "sha256",
}
ECDSA_ALGORITHMS = ("ecdsa-p256-sha256", "ecdsa-p384-sha384")
SIGNATURE_ENCODINGS: Dict[str, int] = {
    "der": signer_pb2.SIGNATURE_ENCODING_DER,
    "p1363": signer_pb2.SIGNATURE_ENCODING_P1363,
}
_HASH_ENUMS: Dict[str, int] = {
    "sha256": signer_pb2.HASH_ALGORITHM_SHA256,
    "sha384": signer_pb2.HASH_ALGORITHM_SHA384,
}
_STATE_NAMES: Dict[int, str] = {
    signer_pb2.KEY_STATE_NEXT: "next",
    signer_pb2.KEY_STATE_ACTIVE: "active",
    signer_pb2.KEY_STATE_RETIRED: "retired",
    signer_pb2.KEY_STATE_REVOKED: "revoked",
}


@dataclass(frozen=True)
class KeyInfo:
    """One published key version, as ListKeys reports it."""

    key_id: str
    key_name: str
    version: int
    state: str
    algorithm: str
    pss_salt_length: int
    key_bits: int
    created_at: Optional[datetime]
    activates_at: Optional[datetime]
    rotates_at: Optional[datetime]
    verify_until: Optional[datetime]
    public_key_pem: str
    previous_key_id: str
    next_key_id: str

    @property
    def hash_name(self) -> str:
        """Name of the hash ("sha256" or "sha384") that this version's digests are made with."""
        return HASH_FOR_ALGORITHM.get(self.algorithm, "sha256")


def _key_info(key: signer_pb2.KeyVersion) -> KeyInfo:
    """Convert a KeyVersion message to a KeyInfo."""
    return KeyInfo(
        key_id=key.key_id,
        key_name=key.key_name,
        version=key.version,
        state=_STATE_NAMES.get(key.state, "unspecified"),
        algorithm=ALGORITHM_NAMES.get(key.algorithm, f"unknown-{key.algorithm}"),
        pss_salt_length=key.pss_salt_length,
        key_bits=key.key_bits,
        created_at=timestamp_to_datetime(key.created_at),
        activates_at=timestamp_to_datetime(key.activates_at),
        rotates_at=timestamp_to_datetime(key.rotates_at),
        verify_until=timestamp_to_datetime(key.verify_until),
        public_key_pem=key.public_key_pem,
        previous_key_id=key.previous_key_id,
        next_key_id=key.next_key_id,
    )


class Client:
    """Signs output manifests through a Hallmark server's Sign RPC.

    target is ``unix:/abs/path`` for the sidecar's socket or ``host:port``.
    timeout is the deadline of each RPC in seconds, and key_name selects a
    configured key ("" for the server's default key). The client is safe to
    share between threads; close it, or use it as a context manager, to
    close its channel.
    """

    def __init__(self, target: str, *, timeout: float = 5.0, key_name: str = "") -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be 'unix:/abs/path' or 'host:port', got {target!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.target = target
        self.timeout = float(timeout)
        self.key_name = key_name
        options: List[tuple] = []
        if target.startswith("unix:"):
            options.append(("grpc.default_authority", UNIX_SOCKET_AUTHORITY))
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = signer_pb2_grpc.SignerServiceStub(self._channel)
        self._lock = threading.Lock()
        self._hash_name: Optional[str] = None

    def close(self) -> None:
        """Close the gRPC channel; the client cannot be used afterwards."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def list_keys(self) -> List[KeyInfo]:
        """Return every published key version (NEXT, ACTIVE, RETIRED and REVOKED) from ListKeys."""
        response = self._call(self._stub.ListKeys, signer_pb2.ListKeysRequest())
        return [_key_info(key) for key in response.keys]

    def sign_output(
        self,
        manifest: Dict[str, Any],
        *,
        canonicalization: str = JCS,
        request_id: Optional[str] = None,
        signature_encoding: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Sign a manifest and return the signed output document.

        The manifest is serialized with canonicalization (``"jcs"`` or
        ``"python-sort-keys"``), hashed with the hash that the key's algorithm
        requires (SHA-384 for ECDSA P-384, SHA-256 otherwise) and signed.
        signature_encoding (``"der"`` or ``"p1363"``) applies to ECDSA keys;
        None means DER. request_id, when None, is a fresh random ID.

        The document contains the manifest itself (not a copy) under ``output``,
        with ``signature`` (hex), ``signing_key_id``, ``key_version``,
        ``algorithm``, ``canonicalization``, ``signed_at`` and, for ECDSA,
        ``signature_encoding``.

        Raises ValueError for a manifest that cannot be canonicalized (NaN,
        infinities, non-str keys) or for bad arguments, and a HallmarkError
        subclass when the RPC fails.
        """
        if not isinstance(manifest, dict):
            raise ValueError(f"manifest must be a dict, got {type(manifest).__name__}")
        if canonicalization not in CANONICALIZATIONS:
            raise ValueError(
                f"canonicalization must be one of {', '.join(CANONICALIZATIONS)}, got {canonicalization!r}"
            )
        if signature_encoding is not None and signature_encoding not in SIGNATURE_ENCODINGS:
            raise ValueError(
                f"signature_encoding must be None, 'der' or 'p1363', got {signature_encoding!r}"
            )
        request_id = request_id if request_id is not None else f"hallmark-py-{uuid.uuid4().hex}"
        message = canonicalize(manifest, canonicalization)
        response = self._sign(message, request_id, signature_encoding)
        return self._document(manifest, response, canonicalization)

    def sign_outputs(
        self,
        manifests: Sequence[Dict[str, Any]],
        *,
        canonicalization: str = JCS,
        signature_encoding: Optional[str] = None,
    ) -> List[Union[Dict[str, Any], HallmarkError]]:
        """Sign several manifests with one SignBatch call, on one session of the token.

        Returns one entry per manifest, in order: the signed output document,
        exactly as sign_output would return it, or the HallmarkError of that
        manifest alone (for example UnavailableError when the token failed
        while signing it). A manifest that failed can be signed again on its
        own; one that has a document must not be, as it is signed.

        The whole call raises a HallmarkError when the batch as a whole is
        refused: too many manifests for the server's signing.max_batch, an
        unknown key, a caller over its rate, or an unavailable token or audit
        log. Raises ValueError for an empty list or a manifest that cannot be
        canonicalized.
        """
        if not manifests:
            raise ValueError("manifests is empty; pass at least one manifest")
        for manifest in manifests:
            if not isinstance(manifest, dict):
                raise ValueError(f"each manifest must be a dict, got {type(manifest).__name__}")
        if canonicalization not in CANONICALIZATIONS:
            raise ValueError(
                f"canonicalization must be one of {', '.join(CANONICALIZATIONS)}, got {canonicalization!r}"
            )
        if signature_encoding is not None and signature_encoding not in SIGNATURE_ENCODINGS:
            raise ValueError(
                f"signature_encoding must be None, 'der' or 'p1363', got {signature_encoding!r}"
            )
        messages = [canonicalize(manifest, canonicalization) for manifest in manifests]
        request_ids = [f"hallmark-py-{uuid.uuid4().hex}" for _ in manifests]
        candidates = [self._hash_name] if self._hash_name else self._resolve_hashes()
        error: Optional[HallmarkError] = None
        for hash_name in candidates:
            request = signer_pb2.SignBatchRequest(
                items=[
                    signer_pb2.SignBatchItem(
                        digest=hashlib.new(hash_name, message).digest(), request_id=request_id
                    )
                    for message, request_id in zip(messages, request_ids)
                ],
                hash_algorithm=_HASH_ENUMS[hash_name],
                key_name=self.key_name,
                signature_encoding=SIGNATURE_ENCODINGS.get(signature_encoding or "", 0),
            )
            try:
                response = self._call(self._stub.SignBatch, request)
            except InvalidRequestError as rejected:
                error = rejected
                continue
            with self._lock:
                self._hash_name = hash_name
            return self._batch_documents(
                response, manifests, request_ids, hash_name, canonicalization, signature_encoding
            )
        assert error is not None
        raise error

    def _batch_documents(
        self,
        response: signer_pb2.SignBatchResponse,
        manifests: Sequence[Dict[str, Any]],
        request_ids: Sequence[str],
        hash_name: str,
        canonicalization: str,
        signature_encoding: Optional[str],
    ) -> List[Union[Dict[str, Any], HallmarkError]]:
        """Turn a SignBatchResponse into documents and errors, checking it against the request."""
        if len(response.results) != len(manifests):
            raise InvalidResponseError(
                "INVALID_RESPONSE",
                f"the response has {len(response.results)} results for {len(manifests)} manifests",
                self.target,
            )
        entries: List[Union[Dict[str, Any], HallmarkError]] = []
        for manifest, request_id, result in zip(manifests, request_ids, response.results):
            if result.HasField("error"):
                entries.append(error_from_code(result.error.code, result.error.message, self.target))
                continue
            # The single-signature checks apply to each item.
            single = signer_pb2.SignResponse(
                signature=result.signature,
                key=response.key,
                signed_at=response.signed_at,
                request_id=result.request_id,
                signature_encoding=response.signature_encoding,
            )
            self._check_response(single, request_id, hash_name, signature_encoding)
            entries.append(self._document(manifest, single, canonicalization))
        return entries

    def _document(
        self, manifest: Dict[str, Any], response: signer_pb2.SignResponse, canonicalization: str
    ) -> Dict[str, Any]:
        """Build the signed output document of manifest from a checked response."""
        algorithm = ALGORITHM_NAMES[response.key.algorithm]
        document: Dict[str, Any] = {
            "output": manifest,
            "signature": response.signature.hex(),
            "signing_key_id": response.key.key_id,
            "key_version": response.key.version,
            "algorithm": algorithm,
            "canonicalization": canonicalization,
            "signed_at": response.signed_at.ToJsonString(),
        }
        if algorithm in ECDSA_ALGORITHMS:
            p1363 = response.signature_encoding == signer_pb2.SIGNATURE_ENCODING_P1363
            document["signature_encoding"] = "p1363" if p1363 else "der"
        return document

    def _sign(
        self, message: bytes, request_id: str, signature_encoding: Optional[str]
    ) -> signer_pb2.SignResponse:
        """Hash message with the key's hash, call Sign and check the response.

        When the key's hash is not known (several key names with different
        hashes and no key_name), SHA-256 is tried first and SHA-384 after an
        INVALID_ARGUMENT response. A cached hash that the server rejects (the
        key's algorithm changed with a new version) is looked up again once.
        """
        cached = self._hash_name
        if not cached:
            return self._sign_with(message, request_id, signature_encoding, self._resolve_hashes())
        try:
            return self._sign_with(message, request_id, signature_encoding, [cached])
        except InvalidRequestError:
            with self._lock:
                self._hash_name = None
            retry = [name for name in self._resolve_hashes() if name != cached]
            if not retry:
                raise
            return self._sign_with(message, request_id, signature_encoding, retry)

    def _sign_with(
        self,
        message: bytes,
        request_id: str,
        signature_encoding: Optional[str],
        candidates: Sequence[str],
    ) -> signer_pb2.SignResponse:
        """Call Sign with each hash in candidates until one is accepted, and cache it."""
        error: Optional[HallmarkError] = None
        for hash_name in candidates:
            request = signer_pb2.SignRequest(
                digest=hashlib.new(hash_name, message).digest(),
                hash_algorithm=_HASH_ENUMS[hash_name],
                key_name=self.key_name,
                request_id=request_id,
                signature_encoding=SIGNATURE_ENCODINGS.get(signature_encoding or "", 0),
            )
            try:
                response = self._call(self._stub.Sign, request)
            except InvalidRequestError as rejected:
                error = rejected
                continue
            self._check_response(response, request_id, hash_name, signature_encoding)
            with self._lock:
                self._hash_name = hash_name
            return response
        assert error is not None
        raise error

    def _resolve_hashes(self) -> List[str]:
        """Return the hashes to try for this client's key, in order, from ListKeys.

        The list has one hash when the ACTIVE versions of the key name (or,
        for the default key, of every key name) agree on it. Otherwise it is
        SHA-256, then SHA-384.
        """
        keys = self.list_keys()
        chosen = [key for key in keys if key.state == "active"]
        if self.key_name:
            chosen = [key for key in chosen if key.key_name == self.key_name] or [
                key for key in keys if key.key_name == self.key_name
            ]
        hashes = sorted({key.hash_name for key in chosen})
        if len(hashes) == 1:
            return hashes
        return ["sha256", "sha384"]

    def _check_response(
        self,
        response: signer_pb2.SignResponse,
        request_id: str,
        hash_name: str,
        signature_encoding: Optional[str],
    ) -> None:
        """Raise InvalidResponseError if a SignResponse breaks the protocol."""
        problem = ""
        key = response.key
        algorithm = ALGORITHM_NAMES.get(key.algorithm)
        if response.request_id != request_id:
            problem = f"the response echoes request_id {response.request_id!r}, expected {request_id!r}"
        elif algorithm is None:
            problem = f"the response names unknown signature algorithm {key.algorithm}"
        elif HASH_FOR_ALGORITHM[algorithm] != hash_name:
            problem = f"the {algorithm} key signed a {hash_name} digest"
        elif not key.key_id or key.version < 1:
            problem = f"the response names key_id {key.key_id!r} version {key.version}"
        elif not response.signature:
            problem = "the response has an empty signature"
        elif (
            algorithm in ECDSA_ALGORITHMS
            and signature_encoding == "p1363"
            and response.signature_encoding != signer_pb2.SIGNATURE_ENCODING_P1363
        ):
            problem = "a P1363 signature was requested but the response is in another encoding"
        if problem:
            raise InvalidResponseError("INVALID_RESPONSE", problem, self.target)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        """Call a unary RPC with the client's deadline, converting gRPC errors to HallmarkError."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise error_from_rpc(error, self.target) from error
