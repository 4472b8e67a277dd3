"""Render the Envoy configuration from `GatewaySettings` and the descriptor set.

Which RPCs are public is data, read from the descriptor set: every method with a
`google.api.http` annotation is public and routed; every other method (ConsumeQuote, the admin
API) is internal and unreachable through the gateway, as REST and as raw gRPC alike.
`python -m gateway.render [out.yaml]` writes the config (JSON, which is valid YAML).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.config import GatewaySettings
from service_kit.grpc_server import ERROR_DOMAIN

LUA = Path(__file__).with_name("reason_status.lua")

# gRPC package → (cluster name, settings attribute holding its upstream address).
UPSTREAMS: dict[str, tuple[str, str]] = {
    "pendulumpay.quote.v1": ("quote", "quote_upstream"),
    "pendulumpay.ramp.v1": ("ramp", "ramp_upstream"),
}

# Envoy's own replies (parse errors, 413, 429, 503) as google.rpc.Status-shaped JSON with an
# ErrorInfo reason, as the services' errors have: a client handles both the same way.
LOCAL_REPLY_CODES = {
    400: (3, "INVALID_REQUEST_BODY"),  # the transcoder: not JSON, wrong types, unknown enums
    404: (5, "NO_SUCH_ENDPOINT"),
    405: (12, "METHOD_NOT_ALLOWED"),
    408: (4, "REQUEST_TIMEOUT"),
    413: (8, "BODY_TOO_LARGE"),
    415: (3, "UNSUPPORTED_MEDIA_TYPE"),
    429: (8, "RATE_LIMITED"),
    500: (13, "GATEWAY_ERROR"),
    503: (14, "UPSTREAM_UNAVAILABLE"),
    504: (4, "UPSTREAM_TIMEOUT"),
}


def _error_info(reason: str) -> list[dict[str, str]]:
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": ERROR_DOMAIN,
        }
    ]


NOT_FOUND = json.dumps(
    {"code": 5, "message": "no such endpoint", "details": _error_info("NO_SUCH_ENDPOINT")}
)


def _local_reply_config() -> dict[str, Any]:
    return {
        "mappers": [
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {
                                "default_value": status,
                                "runtime_key": f"local_reply_{status}",
                            },
                        }
                    }
                },
                "body_format_override": {
                    "json_format": {
                        "code": code,
                        "message": "%LOCAL_REPLY_BODY%",
                        "details": _error_info(reason),
                    },
                    "content_type": "application/json",
                },
            }
            for status, (code, reason) in LOCAL_REPLY_CODES.items()
        ]
    }


@dataclass(frozen=True)
class PublicMethod:
    """A method with an HTTP mapping, the cluster that serves it, and whether it is a read
    (mapped to GET only: safe to send again)."""

    service: str
    name: str
    cluster: str
    read: bool = False

    @property
    def grpc_path(self) -> str:
        """The HTTP/2 path of the gRPC method."""
        return f"/{self.service}/{self.name}"


def public_methods(descriptor_path: Path) -> list[PublicMethod]:
    """Every annotated method of our packages in the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes()).file
    methods = []
    for file in files:
        if file.package not in UPSTREAMS:
            continue
        cluster = UPSTREAMS[file.package][0]
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    verbs = {r.WhichOneof("pattern") for r in (rule, *rule.additional_bindings)}
                    methods.append(
                        PublicMethod(
                            f"{file.package}.{service.name}", method.name, cluster, verbs == {"get"}
                        )
                    )
    return methods


def _typed(type_name: str, **config: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **config}


def _endpoint(address: str) -> dict[str, Any]:
    host, port = address.strip().rsplit(":", 1)
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}


def _cluster(name: str, addresses: str, settings: GatewaySettings) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                # A service runs one process per core on one SO_REUSEPORT port, and the kernel
                # gives each process whole connections: with Envoy's default of one connection
                # per worker thread, a busy gateway could feed a single process of the service.
                explicit_http_config={
                    "http2_protocol_options": {
                        "max_concurrent_streams": settings.upstream_streams_per_connection
                    }
                },
            )
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [_endpoint(a) for a in addresses.split(",") if a.strip()]}
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": f"{settings.health_interval_s}s",
                # Without these an idle or failed cluster is re-checked only every 60 s, so a
                # gateway started before its upstreams would report unhealthy for a minute.
                "no_traffic_interval": f"{settings.health_interval_s}s",
                "unhealthy_interval": f"{settings.health_interval_s}s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": ""},
            }
        ],
    }


# Reads only: a pod that is stopping, or gone but still in DNS, refuses the connection or the
# stream before it saw the request, and another pod can answer. Never a write (a register or
# start reaching two pods), never a 5xx in general (the request may have had its effect).
READ_RETRY_POLICY = {
    "retry_on": "connect-failure,refused-stream,reset-before-request",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": _typed(
                "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            ),
        }
    ],
    "host_selection_retry_max_attempts": 3,
}


def _routes(methods: list[PublicMethod], settings: GatewaySettings) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = [
        {
            "match": {
                "path": "/v1/openapi.json",
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "direct_response": {"status": 200, "body": {"filename": str(settings.openapi_path)}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
    ]
    if methods and settings.origins():
        # A preflight from an allowed origin needs a forwarding route so the CORS filter (which
        # ignores direct responses) answers it; it never reaches the upstream.
        origins = "|".join(re.escape(o) for o in settings.origins())
        routes.append(
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": ":method", "string_match": {"exact": "OPTIONS"}},
                        {
                            "name": "origin",
                            "string_match": {"safe_regex": {"regex": f"^({origins})$"}},
                        },
                        {"name": "access-control-request-method", "present_match": True},
                    ],
                },
                "route": {"cluster": methods[0].cluster, "timeout": "1s"},
            }
        )
    for method in methods:
        route: dict[str, Any] = {
            "cluster": method.cluster,
            "timeout": f"{settings.route_timeout_s}s",
        }
        if method.read:
            route["retry_policy"] = READ_RETRY_POLICY
        # After transcoding, a public REST call is a gRPC call on this exact path.
        routes.append({"match": {"path": method.grpc_path, "grpc": {}}, "route": route})
    routes.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
    )
    return routes


def _lua_source(settings: GatewaySettings) -> str:
    overrides = ", ".join(
        f"{reason} = {status}" for reason, status in settings.status_overrides().items()
    )
    return LUA.read_text().replace("{}  -- @@OVERRIDES@@", "{" + overrides + "}")


def _http_filters(
    services: list[str], clusters: list[str], settings: GatewaySettings
) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.filters.http.health_check",
            "typed_config": _typed(
                "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                pass_through_mode=False,
                headers=[{"name": ":path", "string_match": {"exact": "/healthz"}}],
                # Ready while every routed cluster has a healthy host: one failing pod of a
                # service must not take every gateway replica out of service. Envoy fails the
                # check when 100 × healthy < hosts × percentage (the percentage truncated to an
                # integer) or the cluster is empty, so 1 means one healthy host of up to 100.
                cluster_min_healthy_percentages={c: {"value": 1} for c in clusters},
            ),
        },
        {
            "name": "envoy.filters.http.cors",
            "typed_config": _typed("envoy.extensions.filters.http.cors.v3.Cors"),
        },
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": _typed(
                "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                stat_prefix="per_client",
                token_bucket={
                    "max_tokens": settings.rate_limit_tokens,
                    "tokens_per_fill": settings.rate_limit_per_s,
                    "fill_interval": "1s",
                },
                filter_enabled={
                    "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                    "runtime_key": "per_client_enabled",
                },
                filter_enforced={
                    "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                    "runtime_key": "per_client_enforced",
                },
                # One bucket per client address: the remote_address action yields the entry and
                # the value-less descriptor matches every address (dynamic descriptors).
                rate_limits=[{"actions": [{"remote_address": {}}]}],
                descriptors=[
                    {
                        "entries": [{"key": "remote_address"}],
                        "token_bucket": {
                            "max_tokens": settings.rate_limit_tokens,
                            "tokens_per_fill": settings.rate_limit_per_s,
                            "fill_interval": "1s",
                        },
                    }
                ],
                max_dynamic_descriptors=10000,
                # Otherwise every request also takes a token from the filter-wide bucket, which
                # all clients share: the per-client limit would be one limit for everybody.
                always_consume_default_token_bucket=False,
                response_headers_to_add=[
                    {
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        "header": {"key": "retry-after", "value": "1"},
                    }
                ],
                local_rate_limit_per_downstream_connection=False,
            ),
        },
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": _typed(
                "envoy.extensions.filters.http.buffer.v3.Buffer",
                max_request_bytes=settings.max_body_bytes,
            ),
        },
        {
            "name": "envoy.filters.http.lua",
            "typed_config": _typed(
                "envoy.extensions.filters.http.lua.v3.Lua",
                default_source_code={"inline_string": _lua_source(settings)},
            ),
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": _typed(
                "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor=str(settings.descriptor_path),
                services=services,
                convert_grpc_status=True,
                print_options={
                    "always_print_primitive_fields": True,
                    "always_print_enums_as_ints": False,
                    "preserve_proto_field_names": False,
                },
                request_validation_options={
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
                max_request_body_size=settings.max_body_bytes,
                max_response_body_size=4 * 1024 * 1024,
            ),
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
        },
    ]


ACCESS_LOG_FORMAT = {
    "ts": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
}


def render_config(settings: GatewaySettings) -> dict[str, Any]:
    """The whole Envoy bootstrap for these settings."""
    upstreams = {cluster: getattr(settings, attr) for cluster, attr in UPSTREAMS.values()}
    methods = [m for m in public_methods(settings.descriptor_path) if upstreams[m.cluster]]
    clusters = sorted({m.cluster for m in methods})
    services = sorted({m.service for m in methods})
    cors = {
        "allow_origin_string_match": [{"exact": o} for o in settings.origins()],
        "allow_methods": "GET, POST, OPTIONS",
        "allow_headers": "content-type, idempotency-key, x-request-id, authorization",
        "expose_headers": "x-request-id, retry-after",
        "max_age": "600",
    }
    hcm = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="rest",
        codec_type="AUTO",
        generate_request_id=True,
        # Edge requests would get a fresh x-request-id; the services keep a well-formed one.
        preserve_external_request_id=True,
        # The client address (rate-limit bucket, access log) is the peer's, or the one the
        # trusted proxies in front put into X-Forwarded-For; never one a client wrote there.
        use_remote_address=True,
        xff_num_trusted_hops=settings.xff_trusted_hops,
        local_reply_config=_local_reply_config(),
        request_timeout="30s",
        stream_idle_timeout="30s",
        access_log=[
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": _typed(
                    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    log_format={"json_format": ACCESS_LOG_FORMAT},
                ),
            }
        ],
        route_config={
            "name": "rest",
            "max_direct_response_body_size_bytes": 1024 * 1024,
            "virtual_hosts": [
                {
                    "name": "rest",
                    "domains": ["*"],
                    "routes": _routes(methods, settings),
                    "typed_per_filter_config": {
                        "envoy.filters.http.cors": _typed(
                            "envoy.extensions.filters.http.cors.v3.CorsPolicy", **cors
                        )
                    },
                }
            ],
        },
        http_filters=_http_filters(services, clusters, settings),
    )
    return {
        "admin": {
            "address": {
                "socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "address": {
                        "socket_address": {"address": settings.host, "port_value": settings.port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(c, upstreams[c], settings) for c in clusters],
        },
    }


def main() -> None:
    """Print (or write to argv[1]) the config for the environment's settings."""
    text = json.dumps(render_config(GatewaySettings()), indent=2)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
