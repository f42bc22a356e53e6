import base64

import pytest

from refresher.claims import check_fresh_token, decode_claims, parse_sa_subject
from refresher.errors import TokenError
from tests.helpers import b64, make_jwt, sa_token


def test_decodes_kubernetes_claims() -> None:
    token = sa_token(iat=1000, exp=4600, ns="prod", sa="api", aud=["a", "b"],
                     **{"kubernetes.io": {"pod": {"name": "p-1", "uid": "u-1"}}})
    c = decode_claims(token)
    assert (c.issued_at, c.expires_at, c.audiences) == (1000, 4600, ("a", "b"))
    assert c.service_account == ("prod", "api")
    assert (c.pod_name, c.pod_uid, c.issuer) == ("p-1", "u-1", "https://issuer.test")


def test_audience_may_be_a_string() -> None:
    assert decode_claims(make_jwt(exp=5, aud="x")).audiences == ("x",)


SECRET = "c2VjcmV0LXRva2VuLW1hdGVyaWFs"


@pytest.mark.parametrize(("token", "fragment"), [
    ("not-a-jwt", "not a JWT"),
    (f"a.{SECRET}!!.c", "base64"),
    (f"a.{b64(b'{not json')}.c", "not JSON"),
    (f"a.{b64(b'[1,2]')}.c", "JSON object"),
    (make_jwt(exp="12345"), "not a number"),
    (make_jwt(iat=5), "no 'exp'"),
    (make_jwt(exp=True), "not a number"),
    (make_jwt(exp=1e300), "out of range"),
    (make_jwt(exp=-5), "out of range"),
    (make_jwt(exp=5, aud=[1]), "'aud'"),
    ("a." * 40000 + "b", "larger"),
    (f"a.{base64.b64encode(bytes(range(256))).decode()}.c", "base64"),
])
def test_bad_tokens_fail_without_leaking(token: str, fragment: str) -> None:
    with pytest.raises(TokenError) as info:
        decode_claims(token)
    message = str(info.value)
    assert fragment in message
    assert SECRET[:16] not in message and token[:16] not in message


@pytest.mark.parametrize(("subject", "expected"), [
    ("system:serviceaccount:ns:sa", ("ns", "sa")),
    ("system:serviceaccount:ns", None),
    ("system:serviceaccount::sa", None),
    ("user", None),
    (None, None),
])
def test_parse_subject(subject: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_sa_subject(subject) == expected


def test_fresh_token_is_judged_by_server_time() -> None:
    claims = decode_claims(sa_token(iat=1000, exp=1600))
    kw = {"audiences": ("sts.amazonaws.com",), "namespace": "ns", "service_account": "app"}
    check_fresh_token(claims, server_now=1001, **kw)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="expired"):
        check_fresh_token(claims, server_now=1600, **kw)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="audience"):
        check_fresh_token(claims, server_now=1001, audiences=("other",), namespace="ns",
                          service_account="app")
    with pytest.raises(TokenError, match="subject"):
        check_fresh_token(claims, server_now=1001, audiences=(), namespace="ns",
                          service_account="other")
