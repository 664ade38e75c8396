"""OIDC against a JWKS served by a real local HTTP server, API-key auth, RBAC and settings."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from security.authn import Authenticator
from security.identity import Identity
from security.keys import KeyStore
from security.oidc import OIDCVerifier, TokenInvalid
from security.rbac import Policy
from security.settings import OIDCSettings, RBACSettings, SecuritySettings, load_security_settings
from security.store.embedded import EmbeddedStore
from common.errors import AuthenticationFailed, ConfigError, PermissionDenied

ROLES = frozenset({"admin", "user", "trainer", "readonly"})
ISSUER = "https://issuer.test/"


def _jwk(private_key, kid: str) -> dict:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 whose key set the test can rotate; counts requests."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                owner.hits += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def jwks():
    server = JWKSServer()
    yield server
    server.server.shutdown()


def _rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(key, kid, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "aegis", "sub": "u-1", "exp": now + 300, "nbf": now - 5, "role": "user", "tenant": "acme"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


def _verifier(url: str, **overrides) -> OIDCVerifier:
    settings = OIDCSettings(issuer=ISSUER, audience="aegis", jwks_url=url, leeway_s=10, jwks_min_refetch_interval_s=0, **overrides)
    return OIDCVerifier(settings, ROLES)


async def test_valid_token_maps_claims(jwks):
    key = _rsa()
    jwks.keys = [_jwk(key, "k1")]
    identity = await _verifier(jwks.url).verify(_token(key, "k1"))
    assert (identity.subject, identity.role, identity.tenant, identity.method) == ("oidc:u-1", "user", "acme", "oidc")


@pytest.mark.parametrize(
    "claims, message",
    [
        # Time claims are offsets from the moment the test runs, not from collection time:
        # the unit tier can run many minutes after collection.
        ({"exp": -600}, "ExpiredSignature"),
        ({"nbf": +600}, "ImmatureSignature"),
        ({"iss": "https://evil.test/"}, "InvalidIssuer"),
        ({"aud": "other"}, "InvalidAudience"),
        ({"role": "root"}, "role 'root' not accepted"),
        ({"tenant": None}, "claim 'tenant' missing"),
    ],
)
async def test_bad_claims_are_rejected(jwks, claims, message):
    key = _rsa()
    jwks.keys = [_jwk(key, "k1")]
    now = int(time.time())
    claims = {name: now + value if name in ("exp", "nbf") else value for name, value in claims.items()}
    with pytest.raises(TokenInvalid, match=message):
        await _verifier(jwks.url).verify(_token(key, "k1", **claims))


async def test_leeway_accepts_slightly_expired_token(jwks):
    key = _rsa()
    jwks.keys = [_jwk(key, "k1")]
    token = _token(key, "k1", exp=int(time.time()) - 3)
    assert (await _verifier(jwks.url).verify(token)).tenant == "acme"


async def test_key_rotation_refetches_on_unknown_kid(jwks):
    old, new = _rsa(), _rsa()
    jwks.keys = [_jwk(old, "old")]
    verifier = _verifier(jwks.url)
    await verifier.verify(_token(old, "old"))
    jwks.keys = [_jwk(new, "new")]  # the issuer rotates
    assert (await verifier.verify(_token(new, "new"))).subject == "oidc:u-1"
    assert jwks.hits == 2


async def test_unknown_kid_refetch_is_rate_limited(jwks):
    key = _rsa()
    jwks.keys = [_jwk(key, "k1")]
    settings = OIDCSettings(issuer=ISSUER, audience="aegis", jwks_url=jwks.url, jwks_min_refetch_interval_s=60)
    verifier = OIDCVerifier(settings, ROLES)
    await verifier.verify(_token(key, "k1"))
    for i in range(5):
        with pytest.raises(TokenInvalid, match="unknown kid"):
            await verifier.verify(_token(key, f"forged-{i}"))
    assert jwks.hits == 1


async def test_forged_signature_and_alg_confusion_rejected(jwks):
    real, attacker = _rsa(), _rsa()
    jwks.keys = [_jwk(real, "k1")]
    verifier = _verifier(jwks.url)
    with pytest.raises(TokenInvalid, match="InvalidSignature"):
        await verifier.verify(_token(attacker, "k1"))
    hs = jwt.encode({"iss": ISSUER, "aud": "aegis", "sub": "x", "exp": int(time.time()) + 60}, "secret", algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(TokenInvalid, match="not allowed"):
        await verifier.verify(hs)


def test_symmetric_algorithms_refused_in_config():
    with pytest.raises(ValueError, match="asymmetric"):
        OIDCSettings(issuer=ISSUER, audience="a", jwks_url="http://x", algorithms=["HS256"])


async def test_authenticator_accepts_keys_and_rejects_everything_else(jwks):
    keys = KeyStore(EmbeddedStore(), b"", ROLES)
    _, plaintext = await keys.create("trainer", "acme")
    signer = _rsa()
    jwks.keys = [_jwk(signer, "k1")]
    auth = Authenticator(keys, _verifier(jwks.url))
    assert (await auth.authenticate(f"Bearer {plaintext}")).role == "trainer"
    assert (await auth.authenticate(f"bearer {_token(signer, 'k1')}")).method == "oidc"
    for header in [None, "", "Basic abc", "Bearer", f"Bearer {plaintext}x", "Bearer aegis-000000000000-" + "a" * 43, "Bearer a.b.c"]:
        with pytest.raises(AuthenticationFailed) as exc:
            await auth.authenticate(header)
        assert exc.value.status_code == 401
        assert plaintext not in exc.value.message


def test_rbac_scopes_routes_and_tenant_models():
    policy = Policy(RBACSettings(tenant_models={"acme": ["small-chat"]}))
    user = Identity("key:1", "user", "acme", "api_key")
    readonly = Identity("key:2", "readonly", "beta", "api_key")
    admin = Identity("key:3", "admin", "acme", "api_key")
    policy.authorize(user, "/v1/chat/completions", "small-chat")
    with pytest.raises(PermissionDenied, match="may not use model") as exc:
        policy.authorize(user, "/v1/chat/completions", "big-chat")
    assert exc.value.status_code == 403 and exc.value.code == "model_not_allowed"
    policy.authorize(readonly, "/v1/models")
    with pytest.raises(PermissionDenied, match="lacks scope 'inference'"):
        policy.authorize(readonly, "/v1/chat/completions", "any")
    with pytest.raises(PermissionDenied, match="lacks scope 'admin'"):
        policy.authorize(user, "/admin/keys")
    with pytest.raises(PermissionDenied):  # unknown routes are admin-only by default
        policy.authorize(user, "/v1/new-endpoint")
    policy.authorize(admin, "/admin/keys")
    policy.authorize(admin, "/v1/chat/completions", "big-chat")
    policy.authorize(Identity("t", "trainer", "x", "oidc"), "/v1/training/jobs")


def test_settings_refuse_insecure_values_outside_dev_mode(monkeypatch):
    with pytest.raises(ConfigError, match="auth_disabled=true requires dev_mode"):
        load_security_settings(auth_disabled=True)
    with pytest.raises(ConfigError, match="key_pepper is a placeholder"):
        load_security_settings(key_pepper="changeme")
    assert load_security_settings(dev_mode=True, auth_disabled=True, key_pepper="changeme").auth_disabled
    monkeypatch.setenv("AEGIS_RATE_LIMIT__KEY_REQUESTS__PER_MINUTE", "-1")
    with pytest.raises(ConfigError, match="rate_limit.key_requests.per_minute"):
        load_security_settings()


def test_settings_read_env(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("AEGIS_INJECTION__ACTION", "flag")
    monkeypatch.setenv("AEGIS_FAIL_MODE", "closed")
    settings = SecuritySettings()
    assert settings.redis_url.get_secret_value().endswith("/15")
    assert "6379" not in repr(settings)  # the URL may hold a password: kept secret
    assert settings.injection.action == "flag" and settings.fail_mode == "closed"
