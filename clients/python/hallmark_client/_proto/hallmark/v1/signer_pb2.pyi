import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HashAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HASH_ALGORITHM_UNSPECIFIED: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA256: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA384: _ClassVar[HashAlgorithm]

class SignatureEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNATURE_ENCODING_UNSPECIFIED: _ClassVar[SignatureEncoding]
    SIGNATURE_ENCODING_DER: _ClassVar[SignatureEncoding]
    SIGNATURE_ENCODING_P1363: _ClassVar[SignatureEncoding]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_NEXT: _ClassVar[KeyState]
    KEY_STATE_ACTIVE: _ClassVar[KeyState]
    KEY_STATE_RETIRED: _ClassVar[KeyState]
    KEY_STATE_REVOKED: _ClassVar[KeyState]

class SignatureAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNATURE_ALGORITHM_UNSPECIFIED: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_RSA_PSS_SHA256: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_RSA_PKCS1V15_SHA256: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_ECDSA_P256_SHA256: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_ECDSA_P384_SHA384: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_ED25519: _ClassVar[SignatureAlgorithm]
HASH_ALGORITHM_UNSPECIFIED: HashAlgorithm
HASH_ALGORITHM_SHA256: HashAlgorithm
HASH_ALGORITHM_SHA384: HashAlgorithm
SIGNATURE_ENCODING_UNSPECIFIED: SignatureEncoding
SIGNATURE_ENCODING_DER: SignatureEncoding
SIGNATURE_ENCODING_P1363: SignatureEncoding
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_NEXT: KeyState
KEY_STATE_ACTIVE: KeyState
KEY_STATE_RETIRED: KeyState
KEY_STATE_REVOKED: KeyState
SIGNATURE_ALGORITHM_UNSPECIFIED: SignatureAlgorithm
SIGNATURE_ALGORITHM_RSA_PSS_SHA256: SignatureAlgorithm
SIGNATURE_ALGORITHM_RSA_PKCS1V15_SHA256: SignatureAlgorithm
SIGNATURE_ALGORITHM_ECDSA_P256_SHA256: SignatureAlgorithm
SIGNATURE_ALGORITHM_ECDSA_P384_SHA384: SignatureAlgorithm
SIGNATURE_ALGORITHM_ED25519: SignatureAlgorithm

class KeyVersion(_message.Message):
    __slots__ = ("key_id", "key_name", "version", "state", "algorithm", "pss_salt_length", "key_bits", "created_at", "activates_at", "rotates_at", "verify_until", "public_key_der", "public_key_pem", "previous_key_id", "next_key_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PSS_SALT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    KEY_BITS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATES_AT_FIELD_NUMBER: _ClassVar[int]
    ROTATES_AT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_DER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    key_name: str
    version: int
    state: KeyState
    algorithm: SignatureAlgorithm
    pss_salt_length: int
    key_bits: int
    created_at: _timestamp_pb2.Timestamp
    activates_at: _timestamp_pb2.Timestamp
    rotates_at: _timestamp_pb2.Timestamp
    verify_until: _timestamp_pb2.Timestamp
    public_key_der: bytes
    public_key_pem: str
    previous_key_id: str
    next_key_id: str
    def __init__(self, key_id: _Optional[str] = ..., key_name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[KeyState, str]] = ..., algorithm: _Optional[_Union[SignatureAlgorithm, str]] = ..., pss_salt_length: _Optional[int] = ..., key_bits: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., activates_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rotates_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verify_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., public_key_der: _Optional[bytes] = ..., public_key_pem: _Optional[str] = ..., previous_key_id: _Optional[str] = ..., next_key_id: _Optional[str] = ...) -> None: ...

class SignRequest(_message.Message):
    __slots__ = ("digest", "hash_algorithm", "key_name", "request_id", "signature_encoding")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    hash_algorithm: HashAlgorithm
    key_name: str
    request_id: str
    signature_encoding: SignatureEncoding
    def __init__(self, digest: _Optional[bytes] = ..., hash_algorithm: _Optional[_Union[HashAlgorithm, str]] = ..., key_name: _Optional[str] = ..., request_id: _Optional[str] = ..., signature_encoding: _Optional[_Union[SignatureEncoding, str]] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("signature", "key", "signed_at", "request_id", "signature_encoding")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    key: KeyVersion
    signed_at: _timestamp_pb2.Timestamp
    request_id: str
    signature_encoding: SignatureEncoding
    def __init__(self, signature: _Optional[bytes] = ..., key: _Optional[_Union[KeyVersion, _Mapping]] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., signature_encoding: _Optional[_Union[SignatureEncoding, str]] = ...) -> None: ...

class SignBatchRequest(_message.Message):
    __slots__ = ("items", "hash_algorithm", "key_name", "signature_encoding")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SignBatchItem]
    hash_algorithm: HashAlgorithm
    key_name: str
    signature_encoding: SignatureEncoding
    def __init__(self, items: _Optional[_Iterable[_Union[SignBatchItem, _Mapping]]] = ..., hash_algorithm: _Optional[_Union[HashAlgorithm, str]] = ..., key_name: _Optional[str] = ..., signature_encoding: _Optional[_Union[SignatureEncoding, str]] = ...) -> None: ...

class SignBatchItem(_message.Message):
    __slots__ = ("digest", "request_id")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    request_id: str
    def __init__(self, digest: _Optional[bytes] = ..., request_id: _Optional[str] = ...) -> None: ...

class SignBatchResponse(_message.Message):
    __slots__ = ("results", "key", "signed_at", "signature_encoding")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SignBatchResult]
    key: KeyVersion
    signed_at: _timestamp_pb2.Timestamp
    signature_encoding: SignatureEncoding
    def __init__(self, results: _Optional[_Iterable[_Union[SignBatchResult, _Mapping]]] = ..., key: _Optional[_Union[KeyVersion, _Mapping]] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signature_encoding: _Optional[_Union[SignatureEncoding, str]] = ...) -> None: ...

class SignBatchResult(_message.Message):
    __slots__ = ("request_id", "signature", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    signature: bytes
    error: ItemError
    def __init__(self, request_id: _Optional[str] = ..., signature: _Optional[bytes] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ...) -> None: ...
