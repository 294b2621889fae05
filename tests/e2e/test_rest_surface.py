"""What the README promises of the REST surface, against the real backends through the
public port: the JWKS really verifies the tokens it serves, webhooks can be registered,
listed and deleted. (WatchOrders is covered by test_watch_orders.py.)"""

import httpx
import jwt
import pytest

from tests.e2e.conftest import User

pytestmark = pytest.mark.e2e

# A literal public address: nothing is ever sent to it, and no name has to resolve.
PUBLIC_TARGET = "https://93.184.216.34/ordermesh-hook"


def test_the_jwks_verifies_the_access_tokens_it_serves(http: httpx.Client, user: User) -> None:
    document = http.get("/.well-known/jwks.json")
    assert document.status_code == 200
    keys = {key["kid"]: key for key in document.json()["keys"]}
    assert keys and all(key["kty"] == "RSA" and key["alg"] == "RS256" for key in keys.values())
    kid = jwt.get_unverified_header(user.access_token)["kid"]
    public_key = jwt.PyJWK(keys[kid]).key
    claims = jwt.decode(user.access_token, public_key, algorithms=["RS256"], audience="ordermesh")
    assert (claims["sub"], claims["typ"], claims["iss"]) == (
        user.user_id,
        "access",
        "ordermesh-auth",
    )


def test_webhooks_are_registered_listed_and_deleted_over_rest(
    http: httpx.Client, user: User
) -> None:
    created = http.post(
        "/api/v1/webhooks",
        json={"url": PUBLIC_TARGET, "events": ["order.shipped"], "description": "e2e"},
        headers=user.headers,
    )
    assert created.status_code == 200, created.text
    webhook = created.json()
    assert webhook["secret"], "the secret is shown once, at registration"
    listed = http.get("/api/v1/webhooks", headers=user.headers).json()["webhooks"]
    assert [(w["webhook_id"], w["url"], w["secret"]) for w in listed] == [
        (webhook["webhook_id"], PUBLIC_TARGET, "")
    ]
    refused = http.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1/hook"}, headers=user.headers
    )
    assert refused.status_code == 400, refused.text
    deleted = http.delete(f"/api/v1/webhooks/{webhook['webhook_id']}", headers=user.headers)
    assert deleted.status_code == 200, deleted.text
    assert http.get("/api/v1/webhooks", headers=user.headers).json()["webhooks"] == []
