"""Shared pieces of the resource models: camelCase models, metadata, durations."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
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

    Field names are Istio's camelCase. Unknown fields are kept (``model_extra``) so that they
    can be reported as not supported yet instead of being dropped silently.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
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


def parse_duration(value: Any) -> float:
    """Parse a protobuf/Go style duration (``1.5s``, ``100ms``, ``1h30m``) into seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration string such as '1.5s' or '100ms'")
    if isinstance(value, int | float):
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
