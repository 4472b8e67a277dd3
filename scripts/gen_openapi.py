"""Generate the OpenAPI 3 document of the REST surface from the descriptor set.

Paths, methods, parameters and bodies come from the `google.api.http` annotations; schemas from
the messages (in the proto3 JSON mapping the gateway uses: lowerCamelCase names, 64-bit integers
and enums as strings, Timestamps as RFC 3339 strings); descriptions from the proto comments;
`required` from `google.api.field_behavior`. Methods without an annotation are internal and
do not appear.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

FD = descriptor_pb2.FieldDescriptorProto
OUR_PACKAGES = ("pendulumpay.",)
SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_DOUBLE: {"type": "number"},
    FD.TYPE_FLOAT: {"type": "number"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}


class Generator:
    """Builds the document from one FileDescriptorSet."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        self.schemas: dict[str, Any] = {}
        self.files = files
        for file in files:
            self._index(file)

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        locations = {
            tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
        }

        def walk(prefix: str, messages: Any, path: tuple[int, ...]) -> None:
            for i, message in enumerate(messages):
                name = f"{prefix}.{message.name}"
                self.messages[name] = message
                self.comments[name] = locations.get((*path, i), "")
                for j, field in enumerate(message.field):
                    self.comments[f"{name}#{field.name}"] = locations.get((*path, i, 2, j), "")
                for k, enum in enumerate(message.enum_type):
                    self.enums[f"{name}.{enum.name}"] = enum
                    self.comments[f"{name}.{enum.name}"] = locations.get((*path, i, 4, k), "")
                walk(name, message.nested_type, (*path, i, 3))

        package = f".{file.package}"
        walk(package, file.message_type, (4,))
        for k, enum in enumerate(file.enum_type):
            self.enums[f"{package}.{enum.name}"] = enum
            self.comments[f"{package}.{enum.name}"] = locations.get((5, k), "")
        for s, service in enumerate(file.service):
            for m, method in enumerate(service.method):
                self.comments[f"{package}.{service.name}/{method.name}"] = locations.get(
                    (6, s, 2, m), ""
                )

    def schema_ref(self, type_name: str) -> dict[str, Any]:
        """A $ref to the schema of a message or enum, generating it on first use."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        key = type_name.lstrip(".").replace("pendulumpay.", "").replace(".", "_")
        if key not in self.schemas:
            self.schemas[key] = {}
            self.schemas[key] = (
                self._enum_schema(type_name)
                if type_name in self.enums
                else self._message_schema(type_name)
            )
        return {"$ref": f"#/components/schemas/{key}"}

    def _enum_schema(self, type_name: str) -> dict[str, Any]:
        enum = self.enums[type_name]
        return {
            "type": "string",
            "enum": [v.name for v in enum.value],
            "description": self.comments.get(type_name, ""),
        }

    def field_schema(self, message_name: str, field: FD) -> dict[str, Any]:
        """The JSON schema of one field."""
        if field.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM):
            entry = self.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                return {
                    "type": "object",
                    "additionalProperties": self.field_schema(field.type_name, value),
                    "description": self.comments.get(f"{message_name}#{field.name}", ""),
                }
            item = self.schema_ref(field.type_name)
        else:
            item = dict(SCALARS[field.type])
        schema = {"type": "array", "items": item} if field.label == FD.LABEL_REPEATED else item
        description = self.comments.get(f"{message_name}#{field.name}", "")
        if description and "$ref" not in schema:
            schema["description"] = description
        elif description:
            schema = {"allOf": [schema], "description": description}
        return schema

    def _message_schema(self, type_name: str, skip: set[str] | None = None) -> dict[str, Any]:
        message = self.messages[type_name]
        properties, required = {}, []
        for field in message.field:
            if skip and field.name in skip:
                continue
            properties[field.json_name] = self.field_schema(type_name, field)
            behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.json_name)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "description": self.comments.get(type_name, ""),
        }
        if required:
            schema["required"] = required
        return schema

    def operations(self) -> dict[str, Any]:
        """The `paths` object."""
        paths: dict[str, Any] = {}
        for file in self.files:
            if not file.package.startswith(OUR_PACKAGES):
                continue
            for service in file.service:
                for method in service.method:
                    if not method.options.HasExtension(annotations_pb2.http):
                        continue
                    rule = method.options.Extensions[annotations_pb2.http]
                    verb = rule.WhichOneof("pattern")
                    template = getattr(rule, verb)
                    key = f".{file.package}.{service.name}/{method.name}"
                    fields = {f.name: f.json_name for f in self.messages[method.input_type].field}
                    openapi_path = re.sub(
                        r"{(\w+)}", lambda m, names=fields: "{" + names[m.group(1)] + "}", template
                    )
                    paths.setdefault(openapi_path, {})[verb] = self._operation(
                        f"{service.name}_{method.name}", key, method, template, rule.body
                    )
        return paths

    def _operation(
        self, op_id: str, key: str, method: Any, template: str, body: str
    ) -> dict[str, Any]:
        path_params = re.findall(r"{(\w+)}", template)
        request = self.messages[method.input_type]
        by_name = {f.name: f for f in request.field}
        parameters = [
            {
                "name": by_name[p].json_name,
                "in": "path",
                "required": True,
                "schema": self.field_schema(method.input_type, by_name[p]),
            }
            for p in path_params
        ]
        operation: dict[str, Any] = {
            "operationId": op_id,
            "description": self.comments.get(key, ""),
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": self.schema_ref(method.output_type)}
                    },
                },
                "default": {
                    "description": "An error: google.rpc.Status as JSON.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}
                    },
                },
            },
        }
        if body == "*":
            key_name = (
                method.input_type.lstrip(".").replace("pendulumpay.", "").replace(".", "_")
                + "_Body"
            )
            self.schemas[key_name] = self._message_schema(method.input_type, set(path_params))
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{key_name}"}}
                },
            }
        else:
            for field in request.field:
                if field.name not in path_params and field.type != FD.TYPE_MESSAGE:
                    parameters.append(
                        {
                            "name": field.json_name,
                            "in": "query",
                            "required": False,
                            "schema": self.field_schema(method.input_type, field),
                        }
                    )
        return operation


STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC code, a message and typed details "
    "(ErrorInfo with a stable `reason`, BadRequest with `fieldViolations`).",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
}


def generate(descriptor_path: Path, out_path: Path) -> dict[str, Any]:
    """Write the OpenAPI document for the descriptor set; return it."""
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes()).file)
    generator = Generator(files)
    paths = generator.operations()
    document = {
        "openapi": "3.0.3",
        "info": {
            "title": "Pendulum Pay ramp API",
            "version": "v1",
            "description": "REST surface of the ramp backend, generated from the protos. "
            "Unknown JSON fields in request bodies are ignored (proto3 JSON "
            "mapping); unknown query parameters are rejected.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**dict(sorted(generator.schemas.items())), "Status": STATUS_SCHEMA}
        },
    }
    out_path.write_text(json.dumps(document, indent=2) + "\n")
    return document
