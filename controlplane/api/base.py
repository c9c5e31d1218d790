"""Shared pieces of the resource models: camelCase models, metadata, durations."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel


class IstioModel(BaseModel):
    """Base of every Istio spec model.

    Field names are Istio's camelCase. A field Istio does not define is an error (CP0104), as
    ``istioctl validate`` and ``kubectl apply`` with strict field validation treat it: a
    misspelt ``rulez:`` must never turn a DENY policy into one that matches nothing. Fields
    Istio defines that the compiler does not implement yet are declared in the models and
    reported as warnings (``controlplane.api.support``).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class KubeModel(BaseModel):
    """Base of the Kubernetes input models: we read the fields we use and ignore the rest."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class ObjectMeta(KubeModel):
    name: str
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: datetime | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


# google.protobuf.Duration: seconds within +-315,576,000,000 (10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000


def parse_duration(value: Any) -> float:
    """Parse a protobuf/Go style duration (``1.5s``, ``100ms``, ``1h30m``) into seconds.

    Refuses what protobuf's Duration cannot hold (more than 315,576,000,000 s)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration string such as '1.5s' or '100ms'")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_DURATION_SECONDS:
            raise ValueError(f"duration {value!r} is outside protobuf's limits")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError("must be a duration string such as '1.5s' or '100ms'")
    text = value.strip()
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError(f"invalid duration {value!r}; use a form such as '1.5s' or '100ms'")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if total > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {value!r} is longer than protobuf's limit of {MAX_DURATION_SECONDS}s"
        )
    return total


def format_duration(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


# Seconds as a float inside Python; a duration string on the wire and in schemas.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "description": "A duration such as 1.5s or 100ms"}),
]


# Integer types of the Istio protos, with their ranges: a value outside them is refused by
# istiod's parser, and Envoy's fields are never wider.
# (Checked after parsing, not declared as schema bounds: the CRDs check types only and leave
# every reason to the webhook, see controlplane.api.crds.)
def _in_range(name: str, low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range for {name} ({low}..{high})")
        return value

    return check


Int32 = Annotated[int, AfterValidator(_in_range("int32", -(2**31), 2**31 - 1))]
UInt32 = Annotated[int, AfterValidator(_in_range("uint32", 0, 2**32 - 1))]
UInt64 = Annotated[int, AfterValidator(_in_range("uint64", 0, 2**64 - 1))]


def _zero_is_unset(value: int | None) -> int | None:
    return value or None


# A proto3 uint32 that is 0 is not set: a match on port 0 is a match on any port, as in istiod.
OptionalPort = Annotated[UInt32 | None, AfterValidator(_zero_is_unset)]
