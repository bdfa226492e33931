"""The OpenAPI description of what endpoints read by hand: bodies read as raw bytes (the protocols parse
them themselves, faster and with their own errors) and path parameters taken from ``request.path_params``
(one function registered on two paths)."""

from __future__ import annotations

from typing import Any


def request_body(json_schema: dict[str, Any], **other: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` (as ``openapi_extra``): JSON with ``json_schema``, and ``other``
    media types."""
    content = {"application/json": {"schema": json_schema}} | other
    return {"requestBody": {"required": True, "content": content}}


def path_parameters(*names: str) -> dict[str, Any]:
    """The declaration of path parameters an endpoint reads from ``request.path_params``: registered on
    a path with them and on one without, they must not become query parameters of the other."""
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
        ]
    }
