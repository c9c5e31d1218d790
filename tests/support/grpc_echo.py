"""A gRPC echo server that answers like the Gateway API conformance suite's ``grpc-echo``
(``conformance/echo-basic`` of the pinned module), for the GRPCRoute conformance tests.

The messages are the suite's own: ``echo-basic/grpcecho.proto`` of the pinned conformance
module is compiled with grpcio-tools at test time (``load_protos``), so the service
(``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho``) and its answers are exactly what
the suite's client (``conformance/utils/grpc``) reads: ``Echo`` and ``EchoTwo`` answer an
``EchoResponse`` whose assertions carry the fully qualified method, the request headers, the
``:authority`` and the server's context (namespace, pod name, service name); ``EchoThree`` is
left unimplemented (UNIMPLEMENTED), as upstream's is. The suite identifies the backend by the
pod name's prefix (``grpc-infra-backend-v1-...``).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PACKAGE = "gateway_api_conformance.echo_basic.grpcecho"
SERVICE = f"{PACKAGE}.GrpcEcho"
_loaded: dict[str, ModuleType] = {}


def load_protos(conformance_dir: Path) -> ModuleType:
    """The suite's ``grpcecho_pb2`` (generated once per process from the module's proto)."""
    if "pb2" in _loaded:
        return _loaded["pb2"]
    from grpc_tools import protoc

    proto = conformance_dir / "echo-basic" / "grpcecho.proto"
    out = Path(tempfile.mkdtemp(prefix="grpcecho-"))
    (out / "grpcecho.proto").write_bytes(proto.read_bytes())
    code = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", str(out / "grpcecho.proto")])
    if code != 0:
        raise RuntimeError(f"protoc failed on {proto} ({code})")
    sys.path.insert(0, str(out))
    try:
        _loaded["pb2"] = importlib.import_module("grpcecho_pb2")
    finally:
        sys.path.remove(str(out))
    return _loaded["pb2"]


@dataclass(frozen=True)
class EchoIdentity:
    """Who a server says it is (the suite's Context message)."""

    namespace: str
    service: str
    pod: str


def start_echo_server(pb2: ModuleType, identity: EchoIdentity, host: str, port: int) -> grpc.Server:
    """A grpc-echo backend on ``host:port`` (plaintext HTTP/2, as the suite's h2c backends)."""

    def echo(method: str) -> grpc.RpcMethodHandler:
        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            headers = [
                pb2.Header(key=key, value=value if isinstance(value, str) else value.decode())
                for key, value in context.invocation_metadata()
            ]
            authority = dict(context.invocation_metadata()).get(":authority", "")
            assertions = pb2.Assertions(
                fully_qualified_method=f"/{SERVICE}/{method}",
                headers=headers,
                authority=authority,
                context=pb2.Context(
                    namespace=identity.namespace,
                    service_name=identity.service,
                    pod=identity.pod,
                ),
            )
            return pb2.EchoResponse(assertions=assertions, request=request)

        return grpc.unary_unary_rpc_method_handler(
            answer,
            request_deserializer=pb2.EchoRequest.FromString,
            response_serializer=pb2.EchoResponse.SerializeToString,
        )

    # EchoThree is declared by the service and implemented by nobody: not registered here,
    # so grpcio answers UNIMPLEMENTED as the suite's server does.
    generic = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": echo("Echo"), "EchoTwo": echo("EchoTwo")}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((generic,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


@dataclass(frozen=True)
class EchoAnswer:
    code: grpc.StatusCode
    pod: str = ""
    namespace: str = ""
    method: str = ""


def call_echo(
    pb2: ModuleType,
    address: str = "",
    method: str = "Echo",
    authority: str | None = None,
    metadata: dict[str, str] | None = None,
    timeout: float = 5.0,
    channel: grpc.Channel | None = None,
) -> EchoAnswer:
    """One RPC as the suite's client sends it (``/<package>.GrpcEcho/<method>``, metadata
    keys lower-cased as gRPC sends them), on a new channel to ``address`` or on ``channel``;
    the status code and who answered."""
    if channel is None:
        options = [("grpc.default_authority", authority)] if authority else []
        with grpc.insecure_channel(address, options=options) as own:
            return call_echo(pb2, method=method, metadata=metadata, timeout=timeout, channel=own)
    rpc = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=pb2.EchoRequest.SerializeToString,
        response_deserializer=pb2.EchoResponse.FromString,
    )
    pairs = [(k.lower(), v) for k, v in (metadata or {}).items()]
    try:
        response = rpc(pb2.EchoRequest(), metadata=pairs, timeout=timeout)
    except grpc.RpcError as exc:
        return EchoAnswer(exc.code())
    a = response.assertions
    return EchoAnswer(
        grpc.StatusCode.OK, a.context.pod, a.context.namespace, a.fully_qualified_method
    )
