"""Configuration of users, rate limits and caches: defaults, overrides, one clear line per mistake."""

import pytest

from vibe.config import ConfigError, Settings


def test_defaults_match_the_issue():
    s = Settings.from_env({})
    assert s.web.rate_limits == {"free": 100, "starter": 300, "pro": 1000, "expert": 5000, "admin": 10000}
    assert (s.users.session_cache_mb, s.users.session_cache_seconds) == (10.0, 900.0)
    assert (s.users.content_cache_mb, s.users.content_cache_seconds) == (20.0, 1800.0)
    assert (s.users.query_cache_mb, s.users.query_cache_seconds) == (15.0, 300.0)
    assert s.web.rate_limit_trusted_proxies == () and s.web.rate_limit_shrink_order[0] == "anonymous"


def test_overrides():
    s = Settings.from_env({"RATE_LIMITS": "free=50, enterprise=20000", "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8,::1",
                           "RATE_LIMIT_SHRINK_ORDER": "free", "RATE_LIMIT_SHRINK_FACTOR": "0.25"})
    assert s.web.rate_limits["free"] == 50 and s.web.rate_limits["enterprise"] == 20000 and s.web.rate_limits["pro"] == 1000
    assert s.web.rate_limit_trusted_proxies == ("10.0.0.0/8", "::1")
    assert s.web.rate_limit_shrink_order == ("free",) and s.web.rate_limit_shrink_factor == 0.25


@pytest.mark.parametrize("env, variable", [
    ({"RATE_LIMITS": "free=lots"}, "RATE_LIMITS"),
    ({"RATE_LIMITS": "free=0"}, "RATE_LIMITS"),
    ({"RATE_LIMITS": "free"}, "RATE_LIMITS"),
    ({"RATE_LIMIT_TRUSTED_PROXIES": "the-load-balancer"}, "RATE_LIMIT_TRUSTED_PROXIES"),
    ({"RATE_LIMIT_SHRINK_FACTOR": "2"}, "RATE_LIMIT_SHRINK_FACTOR"),
    ({"RATE_LIMIT_MAX_KEYS": "10"}, "RATE_LIMIT_MAX_KEYS"),
    ({"USER_SESSION_CACHE_MB": "ten"}, "USER_SESSION_CACHE_MB"),
    ({"LOAD_LAG_THRESHOLD": "0"}, "LOAD_LAG_THRESHOLD"),
])
def test_mistakes_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        Settings.from_env(env)
