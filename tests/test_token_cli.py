"""`python run.py token`: development tokens that the service accepts, and only there."""

from __future__ import annotations

import stat
import time

import jwt
from conftest import run_cli
from tokens import JWT_SECRET


def claims(token: str, secret: str = JWT_SECRET) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})


async def test_a_user_token_is_signed_with_the_configured_secret_and_shaped_like_supabase(tmp_path):
    env = {"SUPABASE_JWT_SECRET": JWT_SECRET, "VIBE_DATA_DIR": str(tmp_path)}
    code, out, err = await run_cli("token", "learner-1", "--name", "Lena Schmidt", "--minutes", "5", env=env)
    assert (code, err) == (0, "")
    got = claims(out.strip())
    assert (got["sub"], got["role"], got["aud"], got["email"]) == (
        "learner-1", "authenticated", "authenticated", "learner-1@example.com")
    assert got["user_metadata"] == {"full_name": "Lena Schmidt"} and "role" not in got["app_metadata"]
    assert abs(got["exp"] - time.time() - 300) < 30
    assert not (tmp_path / "supabase_jwt_secret").exists()  # a configured secret is used, none generated

    code, out, _ = await run_cli("token", "boss", "--admin", env=env)
    assert code == 0 and claims(out.strip())["app_metadata"]["role"] == "admin"
    code, out, _ = await run_cli("token", "--service", env={**env, "JWT_ISSUER": "https://x.supabase.co/auth/v1"})
    assert code == 0
    service = claims(out.strip())
    assert (service["role"], service["iss"], "sub" in service) == ("service_role", "https://x.supabase.co/auth/v1",
                                                                    False)


async def test_without_a_secret_development_keeps_one_in_the_data_folder_which_the_service_accepts(
        tmp_path, start_service):
    env = {"VIBE_DATA_DIR": str(tmp_path)}
    first = await run_cli("token", "learner-2", env=env)
    second = await run_cli("token", "learner-2", env=env)
    assert first[0] == second[0] == 0
    kept = tmp_path / "supabase_jwt_secret"
    assert "supabase_jwt_secret" in first[2] and stat.S_IMODE(kept.stat().st_mode) == 0o600
    secret = kept.read_text().strip()
    assert len(secret) >= 32 and claims(first[1].strip(), secret)["sub"] == claims(second[1].strip(), secret)["sub"]

    # `serve` reads the same file (ensure_jwt_secret); a service with that secret takes the token
    service = await start_service(SUPABASE_JWT_SECRET=secret)
    resp = await service.client.post("/functions/v1/user-management", json={"action": "create_profile", "data": {}},
                                     headers={"Authorization": f"Bearer {first[1].strip()}"})
    assert resp.status == 200 and (await resp.json())["profile"]["id"] == "learner-2"


async def test_production_refuses_and_a_supabase_project_without_a_secret_is_told_why(tmp_path):
    code, out, err = await run_cli("token", "u", env={"VIBE_ENV": "production", "VIBE_DATA_DIR": str(tmp_path)})
    assert (code, out) == (2, "") and "VIBE_ENV=production" in err
    code, out, err = await run_cli("token", "u", env={"SUPABASE_URL": "https://x.supabase.co",
                                                      "VIBE_DATA_DIR": str(tmp_path)})
    assert (code, out) == (1, "") and "SUPABASE_JWT_SECRET" in err
    assert not (tmp_path / "supabase_jwt_secret").exists()


async def test_bad_arguments_are_one_line_each(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path)}
    code, _, err = await run_cli("token", env=env)
    assert code == 1 and "USER_ID" in err and "--service" in err
    code, _, err = await run_cli("token", "u", "--minutes", "0", env=env)
    assert code == 2 and "--minutes" in err
    code, _, err = await run_cli("token", "u", "--admin", "--service", env=env)
    assert code == 2 and "not allowed with" in err
    code, _, err = await run_cli("token", "x" * 129, env=env)
    assert code == 1 and "128" in err
