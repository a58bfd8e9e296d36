"""The request bodies in /openapi.json are the validators' own declarations (vibe.web.validation):
the document names every body's fields, and what it allows the service takes, what it forbids the
service refuses with a 4xx (never a 5xx)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import tokens

UM = "/functions/v1/user-management"
TRACK = "/functions/v1/analytics-tracking"
EMAIL = "/functions/v1/email-notifications"
CANDIDATES = ("x", "usd", "en", "https://example.com/x", "/x", "0")


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def branches(doc: dict, schema: dict) -> list[dict]:
    """The object schemas a body may be (oneOf / anyOf flattened)."""
    schema = resolve(doc, schema)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return [b for s in schema[key] for b in branches(doc, s)]
    return [schema]


def example(schema: dict) -> Any:
    """A minimal value the schema allows: required fields only, the first choice, the lower bound."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    kind = schema.get("type", "object")
    kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        names = list(schema.get("required", [])) or ([next(iter(props))] if schema.get("minProperties") else [])
        names += [n for n in (schema.get("anyOf") or [{}])[0].get("required", []) if n not in names]
        return {name: example(props[name]) for name in names}
    if kind == "array":
        return [example(schema.get("items", {}))] * schema.get("minItems", 0)
    if kind in ("integer", "number"):
        return max(schema.get("minimum", 1), 1) if schema.get("maximum", 1) >= 1 else schema["minimum"]
    if kind == "boolean":
        return True
    for text in CANDIDATES:
        if schema.get("minLength", 0) <= len(text) <= schema.get("maxLength", 10 ** 6) and \
                re.search(schema.get("pattern", ""), text):
            return text
    raise AssertionError(f"no candidate string fits {schema}")


def violations(schema: dict) -> list[tuple[str, Any]]:
    """(what, value) pairs the schema forbids, each changing one field of the minimal example."""
    base = example(schema)
    out: list[tuple[str, Any]] = []
    if schema.get("additionalProperties") is False:
        out.append(("unknown field", {**base, "not_a_field": 1}))
    for name, prop in schema.get("properties", {}).items():
        kinds = prop.get("type", [])
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "maxLength" in prop:
            out.append((f"{name} too long", {**base, name: "x" * (prop["maxLength"] + 1)}))
        if "enum" in prop and "string" in kinds:
            out.append((f"{name} not a choice", {**base, name: "not-one-of-them"}))
        if "maximum" in prop:
            out.append((f"{name} too large", {**base, name: prop["maximum"] + 1}))
        if kinds and "object" not in kinds and "array" not in kinds:
            out.append((f"{name} of the wrong type", {**base, name: {"an": "object"}}))
        if "maxItems" in prop:
            out.append((f"{name} too many", {**base, name: [example(prop["items"])] * (prop["maxItems"] + 1)}))
    return out


def request_bodies(doc: dict):
    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                yield f"{method.upper()} {path} ({media})", body["schema"]


async def test_every_request_body_names_its_fields(service):
    doc = await (await service.client.get("/openapi.json")).json()
    seen = 0
    for where, schema in request_bodies(doc):
        for branch in branches(doc, schema):
            assert branch.get("properties"), f"{where}: a body with no fields described: {branch}"
            seen += 1
    assert seen >= 25  # 7 actions, 6 endpoints, 8 templates, the Segment door, ...
    bodies = branches(doc, doc["paths"][UM]["post"]["requestBody"]["content"]["application/json"]["schema"])
    from vibe.users.service import ACTIONS

    assert [b["properties"]["action"]["const"] for b in bodies] == list(ACTIONS)  # from the registry
    check_access = resolve(doc, {"$ref": "#/components/schemas/UserAction_check_access"})
    resource_type = check_access["properties"]["data"]["properties"]["resource_type"]
    assert resource_type["enum"] == ["commandment", "template", "workshop"]  # the catalogue, read at run time


async def answer(service, path: str, body: Any, headers: dict) -> tuple[int, dict]:
    resp = await service.client.post(path, json=body, headers=headers)
    return resp.status, await resp.json()


async def test_user_actions_take_what_the_document_allows_and_refuse_what_it_forbids(service):
    doc = await (await service.client.get("/openapi.json")).json()
    admin = tokens.auth(tokens.admin_token())
    for body_schema in branches(doc, doc["paths"][UM]["post"]["requestBody"]["content"]["application/json"]["schema"]):
        action = body_schema["properties"]["action"]["const"]
        data = body_schema["properties"]["data"]
        status, body = await answer(service, UM, {"action": action, "data": example(data)}, admin)
        refused = [e["field"] for e in body.get("error", {}).get("details", {}).get("errors", [])] \
            if isinstance(body.get("error", {}).get("details"), dict) else []
        # an item id the catalogue does not hold is the one thing the document cannot say
        assert status < 500 and (status != 400 or all(f.endswith(".resource_id") for f in refused)), (action, body)
        for what, value in violations(data):
            status, body = await answer(service, UM, {"action": action, "data": value}, admin)
            assert status == 400 and body["error"]["code"] == "invalid_data", (action, what, body)


async def test_email_requests_follow_each_templates_schema(service):
    doc = await (await service.client.get("/openapi.json")).json()
    headers = tokens.auth(tokens.service_token())
    bodies = branches(doc, doc["paths"][EMAIL]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert len(bodies) >= 8
    for schema in bodies:
        status, body = await answer(service, EMAIL, {**example(schema), "data": example(schema["properties"]["data"])},
                                    headers)
        assert status in (200, 202, 404), (schema["title"], body)  # 404: no such user (still queued or not)
        for what, data in violations(schema["properties"]["data"]):
            status, body = await answer(service, EMAIL, {**example(schema), "data": data}, headers)
            assert status == 400 and body["error"]["code"] == "invalid_email_data", (schema["title"], what, body)
        envelope = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "data"},
                    "required": [k for k in schema["required"] if k != "data"]}
        for what, value in violations(envelope):
            status, body = await answer(service, EMAIL, {**value, "data": example(schema["properties"]["data"])},
                                        headers)
            assert status == 400 and body["error"]["code"] in ("invalid_request", "unknown_email_type"), (what, body)


@pytest.mark.parametrize("bad", ["\u0000", "\ud800"])
async def test_unstorable_text_is_a_clear_400_everywhere(service, bad):
    admin = tokens.auth(tokens.admin_token())
    status, body = await answer(service, UM, {"action": "update_profile", "data": {"display_name": f"a{bad}"}}, admin)
    assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.display_name"
    status, body = await answer(service, EMAIL, {"user_id": "u", "type": "welcome", "data": {"start_path": bad}},
                                tokens.auth(tokens.service_token()))
    assert status == 400 and body["error"]["code"] == "invalid_email_data"
    deep = '{"action": "get_profile", "data": ' + '{"data": ' * 3000 + "{}" + "}" * 3001
    resp = await service.client.post(UM, data=deep, headers={
        **admin, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] in ("invalid_json", "invalid_body", "too_deep")


async def test_analytics_properties_follow_each_endpoints_schema(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY="wk_schema_test")
    doc = await (await service.client.get("/openapi.json")).json()
    headers = {"X-Write-Key": "wk_schema_test"}
    schema = doc["paths"][TRACK + "/{endpoint}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    events = branches(doc, schema["oneOf"][0])
    assert {e["title"] for e in events} == set(
        doc["paths"][TRACK + "/{endpoint}"]["post"]["parameters"][0]["schema"]["enum"])
    for event in events:
        base = {**example(event), "user_id": "schema-user"}
        props = event["properties"]["properties"]
        status, body = await answer(service, f"{TRACK}/{event['title']}", {**base, "properties": example(props)},
                                    headers)
        assert status == 200 and body["accepted"] == 1, (event["title"], body)
        for what, value in violations(props):
            if what == "unknown field":
                continue  # properties are open: other keys are kept
            status, body = await answer(service, f"{TRACK}/{event['title']}", {**base, "properties": value}, headers)
            assert status == 400 and body["error"]["details"]["field"].startswith("properties."), (what, body)
        status, body = await answer(service, f"{TRACK}/{event['title']}", {**base, "session_id": "has space",
                                                                            "properties": example(props)}, headers)
        assert status == 400 and body["error"]["details"]["field"] == "session_id"
