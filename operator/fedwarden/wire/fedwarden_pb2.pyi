from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("training_uid", "num_parameters")
    TRAINING_UID_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    training_uid: str
    num_parameters: int
    def __init__(self, training_uid: _Optional[str] = ..., num_parameters: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("training_uid", "num_parameters", "task_json", "max_chunk_bytes", "max_update_bytes", "client_id", "round", "poll_timeout_seconds")
    TRAINING_UID_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TASK_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    POLL_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    training_uid: str
    num_parameters: int
    task_json: str
    max_chunk_bytes: int
    max_update_bytes: int
    client_id: str
    round: int
    poll_timeout_seconds: float
    def __init__(self, training_uid: _Optional[str] = ..., num_parameters: _Optional[int] = ..., task_json: _Optional[str] = ..., max_chunk_bytes: _Optional[int] = ..., max_update_bytes: _Optional[int] = ..., client_id: _Optional[str] = ..., round: _Optional[int] = ..., poll_timeout_seconds: _Optional[float] = ...) -> None: ...

class PollRequest(_message.Message):
    __slots__ = ("last_round", "last_round_token")
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    last_round: int
    last_round_token: bytes
    def __init__(self, last_round: _Optional[int] = ..., last_round_token: _Optional[bytes] = ...) -> None: ...

class Instruction(_message.Message):
    __slots__ = ("kind", "round", "round_token", "base_digest", "num_parameters", "deadline_seconds", "retry_after_seconds", "reason", "message")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        WAIT: _ClassVar[Instruction.Kind]
        TRAIN: _ClassVar[Instruction.Kind]
        DONE: _ClassVar[Instruction.Kind]
        REFUSED: _ClassVar[Instruction.Kind]
    WAIT: Instruction.Kind
    TRAIN: Instruction.Kind
    DONE: Instruction.Kind
    REFUSED: Instruction.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: Instruction.Kind
    round: int
    round_token: bytes
    base_digest: bytes
    num_parameters: int
    deadline_seconds: float
    retry_after_seconds: float
    reason: str
    message: str
    def __init__(self, kind: _Optional[_Union[Instruction.Kind, str]] = ..., round: _Optional[int] = ..., round_token: _Optional[bytes] = ..., base_digest: _Optional[bytes] = ..., num_parameters: _Optional[int] = ..., deadline_seconds: _Optional[float] = ..., retry_after_seconds: _Optional[float] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("round", "round_token")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    round: int
    round_token: bytes
    def __init__(self, round: _Optional[int] = ..., round_token: _Optional[bytes] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("offset", "data", "total")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total: _Optional[int] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("training_uid", "round", "client_id", "base_digest", "payload_digest", "num_values", "num_examples", "nonce", "round_token", "dtype", "eval_metrics", "eval_examples", "site_epsilon", "site_budget_spent")
    class EvalMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAINING_UID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ROUND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    EVAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    EVAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SITE_EPSILON_FIELD_NUMBER: _ClassVar[int]
    SITE_BUDGET_SPENT_FIELD_NUMBER: _ClassVar[int]
    training_uid: str
    round: int
    client_id: str
    base_digest: bytes
    payload_digest: bytes
    num_values: int
    num_examples: int
    nonce: bytes
    round_token: bytes
    dtype: str
    eval_metrics: _containers.ScalarMap[str, float]
    eval_examples: int
    site_epsilon: float
    site_budget_spent: bool
    def __init__(self, training_uid: _Optional[str] = ..., round: _Optional[int] = ..., client_id: _Optional[str] = ..., base_digest: _Optional[bytes] = ..., payload_digest: _Optional[bytes] = ..., num_values: _Optional[int] = ..., num_examples: _Optional[int] = ..., nonce: _Optional[bytes] = ..., round_token: _Optional[bytes] = ..., dtype: _Optional[str] = ..., eval_metrics: _Optional[_Mapping[str, float]] = ..., eval_examples: _Optional[int] = ..., site_epsilon: _Optional[float] = ..., site_budget_spent: _Optional[bool] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("envelope", "signature")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    signature: bytes
    def __init__(self, envelope: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UpdateMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "reason", "message", "round")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    message: str
    round: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file", "offset", "data", "size")
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    file: str
    offset: int
    data: bytes
    size: int
    def __init__(self, file: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...
