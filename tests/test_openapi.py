"""GET /openapi.json describes every route the router serves, and nothing it does not."""

from vibe.web.openapi import OPERATIONS


async def test_the_document_matches_the_router(service):
    resp = await service.client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    served = {(r.method.lower(), r.resource.canonical) for r in service.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    described = set(OPERATIONS)
    assert served == described, f"undescribed: {served - described}; stale: {described - served}"
    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            assert operation["summary"] and "default" in operation["responses"], (method, path)
            for part in path.split("/"):
                if part.startswith("{"):
                    assert any(p["name"] == part.strip("{}") for p in operation["parameters"]), path


async def test_a_plugin_route_is_listed_too(start_service):
    from ops_support import TroublePlugin

    service = await start_service(extra_plugins=(TroublePlugin(),))
    doc = await (await service.client.get("/openapi.json")).json()
    assert doc["paths"]["/test/boom"]["get"]["tags"] == ["plugins"]


async def test_errors_and_times_are_described_as_they_are_answered(service):
    doc = await (await service.client.get("/openapi.json")).json()
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message"} and error["properties"]["message"]["type"] == "string"
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}
    assert doc["components"]["schemas"]["Health"]["properties"]["started_at"]["format"] == "date-time"
    assert "anon key" in doc["components"]["securitySchemes"]["bearer"]["description"]
    answer = await (await service.client.get("/nowhere")).json()
    assert set(answer) == {"error", "message"} and answer["message"] == answer["error"]["message"]
    assert set(answer["error"]) <= set(error["properties"]["error"]["properties"])
