"""Supabase access tokens through HTTP: HS256 with the shared secret, ES256 with a JWKS served by
a local aiohttp server on loopback, and every way a token must be refused."""

import asyncio
import base64
import json
import time
import uuid

import jwt
import pytest
import tokens
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PATH = "/functions/v1/user-management"
PROBE = {"action": "check_access", "data": {"resource_type": "commandment", "resource_id": "1"}}
JWKS_PATH = "/auth/v1/.well-known/jwks.json"


class JwksHost:
    def __init__(self):
        self.document = tokens.jwks_document()
        self.hits = 0
        self.failing = False

    async def handle(self, request):
        self.hits += 1
        if self.failing:
            return web.json_response({"message": "upstream down"}, status=503)
        return web.json_response(self.document)

    def add(self, private_key, kid, alg):
        algorithm = {"ES256": jwt.algorithms.ECAlgorithm, "RS256": jwt.algorithms.RSAAlgorithm,
                     "EdDSA": jwt.algorithms.OKPAlgorithm}[alg]
        public = algorithm.to_jwk(private_key.public_key(), as_dict=True)
        public.update(kid=kid, alg=alg, use="sig")
        self.document = {"keys": [*self.document["keys"], public]}


@pytest.fixture
async def jwks(aiohttp_server):
    host = JwksHost()
    app = web.Application()
    app.router.add_get(JWKS_PATH, host.handle)
    host.server = await aiohttp_server(app, host="127.0.0.1")
    host.url = str(host.server.make_url(JWKS_PATH))
    return host


@pytest.fixture
async def service(start_service, jwks):
    return await start_service(SUPABASE_JWKS_URL=jwks.url)


async def probe(service, token):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = await service.client.post(PATH, json=PROBE, headers=headers)
    return resp.status, await resp.json()


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_hs256_and_es256_tokens_are_accepted(service, jwks):
    assert (await probe(service, tokens.user_token()))[0] == 200
    status, body = await probe(service, tokens.es256(tokens.user_claims()))
    assert status == 200 and body["allowed"] is True
    assert jwks.hits == 1


async def test_missing_and_malformed_authorization(service):
    status, body = await probe(service, None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in body["error"]["message"] and body["message"] == body["error"]["message"]
    resp = await service.client.post(PATH, json=PROBE, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_authorization"
    status, body = await probe(service, "not-a-jwt")
    assert status == 401 and body["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("sign", [tokens.hs256, tokens.es256])
async def test_time_claims(service, sign):
    now = int(time.time())
    status, body = await probe(service, sign(tokens.user_claims(ttl=-60)))
    assert status == 401 and body["error"]["code"] == "token_expired"
    assert (await probe(service, sign(tokens.user_claims(ttl=-5))))[0] == 200  # within the 10 s leeway
    status, _ = await probe(service, sign(tokens.user_claims(nbf=now + 600)))
    assert status == 401
    status, _ = await probe(service, sign(tokens.user_claims(iat=now + 600)))
    assert status == 401
    claims = tokens.user_claims()
    del claims["exp"]
    assert (await probe(service, sign(claims)))[0] == 401


@pytest.mark.parametrize("sign", [tokens.hs256, tokens.es256])
async def test_wrong_audience_and_missing_subject(service, sign):
    for aud in ("anon", "something-else", ["other"]):
        status, body = await probe(service, sign(tokens.user_claims(aud=aud)))
        assert status == 401 and "audience" in body["error"]["message"]
    claims = tokens.user_claims()
    del claims["aud"]
    assert (await probe(service, sign(claims)))[0] == 401
    claims = tokens.user_claims()
    del claims["sub"]
    assert (await probe(service, sign(claims)))[0] == 401
    assert (await probe(service, sign(tokens.user_claims(role="superuser"))))[0] == 401


async def test_issuer_is_checked_when_configured(start_service, jwks):
    issuer = "https://project.supabase.co/auth/v1"
    service = await start_service(SUPABASE_JWKS_URL=jwks.url, JWT_ISSUER=issuer)
    assert (await probe(service, tokens.user_token(iss=issuer)))[0] == 200
    assert (await probe(service, tokens.es256(tokens.user_claims(iss=issuer))))[0] == 200
    status, body = await probe(service, tokens.user_token(iss="https://evil.example/auth/v1"))
    assert status == 401 and "issuer" in body["error"]["message"]
    assert (await probe(service, tokens.es256(tokens.user_claims(iss="https://evil.example"))))[0] == 401
    assert (await probe(service, tokens.user_token()))[0] == 401  # no iss at all
    # the service role key (iss "supabase") is signed with the secret and stays accepted
    resp = await service.client.post(PATH, json={"action": "get_profile", "data": {"user_id": "x"}},
                                     headers=tokens.auth(tokens.service_token()))
    assert resp.status == 404


async def test_alg_none_is_refused(service):
    claims = tokens.user_claims()
    for alg in ("none", "None", "NONE"):
        token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."
        status, body = await probe(service, token)
        assert status == 401 and body["error"]["code"] == "invalid_token"
    token = f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(claims)}.{b64(b'x' * 64)}"
    assert (await probe(service, token))[0] == 401


async def test_algorithm_confusion_is_refused(service, jwks):
    claims = tokens.user_claims()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.add(rsa_key, "rsa-key", "RS256")
    # An HMAC token naming a JWKS key id, even correctly signed with the shared secret.
    status, body = await probe(service, tokens.hs256(claims, headers={"kid": tokens.ES256_KID}))
    assert status == 401 and "HMAC" in body["error"]["message"]
    # The classic: the public key's bytes used as an HMAC secret.
    public_pem = jwt.PyJWK.from_dict(jwks.document["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (await probe(service, _hmac_token(claims, public_pem, kid=tokens.ES256_KID)))[0] == 401
    assert (await probe(service, _hmac_token(claims, public_pem, kid=None)))[0] == 401
    # An RS256 token naming the EC key; an ES256 token naming an RSA key.
    assert (await probe(service, jwt.encode(claims, rsa_key, algorithm="RS256",
                                            headers={"kid": tokens.ES256_KID})))[0] == 401
    status, body = await probe(service, tokens.es256(claims, kid="rsa-key"))
    assert status == 401 and "does not match" in body["error"]["message"]
    assert (await probe(service, jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-key"})))[0] == 200


def _hmac_token(claims, secret: bytes, kid: str | None) -> str:
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing = f"{b64(header)}.{b64(claims)}"
    return f"{signing}.{b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("sign", [tokens.hs256, tokens.es256])
async def test_tampered_payload_is_refused(service, sign):
    token = sign(tokens.user_claims())
    header, _payload, signature = token.split(".")
    forged = f"{header}.{b64(tokens.user_claims(admin=True))}.{signature}"
    status, body = await probe(service, forged)
    assert status == 401 and body["error"]["code"] == "invalid_token"
    assert (await probe(service, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")))[0] == 401


async def test_signed_with_another_key_or_secret(service):
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert (await probe(service, tokens.es256(tokens.user_claims(), key=stranger)))[0] == 401
    assert (await probe(service, tokens.hs256(tokens.user_claims(), secret="x" * 40)))[0] == 401


async def test_unknown_kid_then_jwks_rotation(start_service, jwks):
    service = await start_service(SUPABASE_JWKS_URL=jwks.url, JWKS_MIN_REFRESH_SECONDS="0")
    assert (await probe(service, tokens.es256(tokens.user_claims())))[0] == 200
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = tokens.es256(tokens.user_claims(), kid="rotated-2026", key=new_key)
    status, body = await probe(service, token)
    assert status == 401 and "not in the JWKS" in body["error"]["message"]
    hits = jwks.hits
    jwks.add(new_key, "rotated-2026", "ES256")
    assert (await probe(service, token))[0] == 200
    assert jwks.hits == hits + 1  # refreshed once, on the unknown kid


async def test_unknown_kids_do_not_hammer_the_jwks_host(service, jwks):
    assert (await probe(service, tokens.es256(tokens.user_claims())))[0] == 200
    for i in range(5):
        assert (await probe(service, tokens.es256(tokens.user_claims(), kid=f"random-{i}")))[0] == 401
    assert jwks.hits == 1  # JWKS_MIN_REFRESH_SECONDS (30 s) between refetches


async def test_jwks_host_down_is_served_from_cache(start_service, jwks):
    service = await start_service(SUPABASE_JWKS_URL=jwks.url, JWKS_CACHE_SECONDS="0", JWKS_MIN_REFRESH_SECONDS="0",
                                  JWKS_TIMEOUT_SECONDS="1")
    assert (await probe(service, tokens.es256(tokens.user_claims())))[0] == 200
    await jwks.server.close()
    status, body = await probe(service, tokens.es256(tokens.user_claims(str(uuid.uuid4()))))
    assert status == 200 and body["allowed"] is True


async def test_no_jwks_means_asymmetric_tokens_are_refused(start_service):
    service = await start_service()
    assert (await probe(service, tokens.es256(tokens.user_claims())))[0] == 401
    assert (await probe(service, tokens.user_token()))[0] == 200


async def test_anon_key_is_anonymous_and_admin_claim_is_admin(service):
    now = int(time.time())
    anon = tokens.hs256({"iss": "supabase", "role": "anon", "iat": now, "exp": now + 3600})
    status, body = await probe(service, anon)
    assert status == 401 and body["error"]["code"] == "sign_in_required"
    resp = await service.client.post(PATH, json={"action": "get_profile", "data": {"user_id": "someone"}},
                                     headers=tokens.auth(tokens.es256(tokens.user_claims(admin=True))))
    assert resp.status == 404  # allowed to look, and there is no such profile


async def test_jwks_down_from_the_start_fails_fast_and_recovers(start_service, jwks):
    jwks.failing = True
    service = await start_service(SUPABASE_JWKS_URL=jwks.url)
    for _ in range(5):
        status, body = await probe(service, tokens.es256(tokens.user_claims()))
        assert status == 401
    assert jwks.hits == 1  # one attempt, not one per request
    assert (await probe(service, tokens.user_token()))[0] == 200  # HS256 tokens do not need the JWKS
    jwks.failing = False
    await asyncio.sleep(1.05)  # without any key, a new attempt is allowed every second
    assert (await probe(service, tokens.es256(tokens.user_claims())))[0] == 200


async def test_rs256_and_eddsa_keys_from_the_jwks(service, jwks):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    jwks.add(rsa_key, "rsa-1", "RS256")
    jwks.add(ed_key, "ed-1", "EdDSA")
    claims = tokens.user_claims()
    assert (await probe(service, jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})))[0] == 200
    assert (await probe(service, jwt.encode(claims, ed_key, algorithm="EdDSA", headers={"kid": "ed-1"})))[0] == 200
    # an EdDSA token naming the RSA key, and an ES256 token naming the Ed25519 key
    assert (await probe(service, jwt.encode(claims, ed_key, algorithm="EdDSA", headers={"kid": "rsa-1"})))[0] == 401
    assert (await probe(service, tokens.es256(claims, kid="ed-1")))[0] == 401


ANON_KEY = "sb_publishable_" + "Zm9yLXRoZS1hdXRoLXRlc3Rz"


async def anon_probe(service, headers):
    resp = await service.client.post(PATH, json=PROBE, headers=headers)
    return resp.status, await resp.json()


async def test_the_anon_key_is_the_anonymous_caller_and_user_management_says_sign_in(start_service):
    service = await start_service(SUPABASE_ANON_KEY=ANON_KEY, RATE_LIMIT_ANONYMOUS="50")
    now = int(time.time())
    anon_jwt = tokens.hs256({"iss": "supabase", "ref": "project", "role": "anon", "iat": now, "exp": now + 3600})
    supabase_js = {"apikey": ANON_KEY, "x-client-info": "supabase-js/2.49.4"}
    for headers in ({**tokens.auth(ANON_KEY), **supabase_js},  # supabase.functions.invoke, nobody signed in
                    tokens.auth(anon_jwt),  # an anon key that is a JWT
                    {"apikey": ANON_KEY}):  # the apikey header alone
        resp = await service.client.post(PATH, json=PROBE, headers=headers)
        body = await resp.json()
        assert resp.status == 401, body
        assert body["error"]["code"] == "sign_in_required" and body["message"] == (
            "Sign in: this needs a signed-in user's access token, not the anon key.") == body["error"]["message"]
        assert resp.headers["X-RateLimit-Limit"] == "50"  # counted as an anonymous client, per IP
    # the same words from routes that need a role, through require()
    resp = await service.client.get("/functions/v1/analytics-tracking/metrics", headers=tokens.auth(ANON_KEY))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "sign_in_required"
    # a signed-in learner's token still works beside the apikey header
    status, body = await anon_probe(service, {**tokens.auth(tokens.user_token()), **supabase_js})
    assert status == 200 and body["allowed"] is True


async def test_a_publishable_key_that_is_not_the_projects_is_refused(start_service):
    service = await start_service(SUPABASE_ANON_KEY=ANON_KEY)
    for token in ("sb_publishable_someone-elses-key", ANON_KEY + "x", ANON_KEY[:-1]):
        status, body = await anon_probe(service, tokens.auth(token))
        assert status == 401 and body["error"]["code"] == "invalid_token", token
    unset = await start_service()  # without SUPABASE_ANON_KEY no opaque key is anyone's
    status, body = await anon_probe(unset, tokens.auth(ANON_KEY))
    assert status == 401 and body["error"]["code"] == "invalid_token" and "SUPABASE_ANON_KEY" in body["message"]


async def test_a_jwt_anon_key_signed_elsewhere_is_anonymous_when_configured(start_service):
    # The configured key is compared as it is: a JWT this service could not verify is anonymous
    # when it is the project's anon key, and refused when it is not.
    now = int(time.time())
    foreign = tokens.hs256({"role": "anon", "iat": now, "exp": now + 3600}, secret="x" * 40)
    configured = await start_service(SUPABASE_ANON_KEY=foreign)
    assert (await anon_probe(configured, tokens.auth(foreign)))[1]["error"]["code"] == "sign_in_required"
    assert (await anon_probe(await start_service(), tokens.auth(foreign)))[1]["error"]["code"] == "invalid_token"


async def test_the_anon_key_sends_anonymous_analytics(start_service):
    service = await start_service(SUPABASE_ANON_KEY=ANON_KEY)
    resp = await service.client.post("/functions/v1/analytics-tracking/event", headers={
        **tokens.auth(ANON_KEY), "apikey": ANON_KEY, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        json={"event": "page_view", "anonymous_id": "anon-auth-1", "properties": {"page": "/pricing"}})
    assert resp.status == 200, await resp.text()
    [row] = await service.db.fetchall("SELECT user_id, source FROM analytics_events WHERE anonymous_id = %s",
                                      ("anon-auth-1",))
    assert row["user_id"] is None and row["source"] == "anonymous"
