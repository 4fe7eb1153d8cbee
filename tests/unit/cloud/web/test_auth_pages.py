"""Signing in and out of the dashboard: the session cookie, CSRF, and the messages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support.registry_world import PASSWORD
from unit.cloud.web.conftest import csrf_of, sign_in
from unit.cloud.web.dashboard_world import Dashboard

from cloud.auth.tokens import issue_token
from cloud.db import make_engine
from cloud.registry.models import User
from cloud.settings import Settings
from cloud.workorders.models import WorkOrder

Browser = Callable[[str], TestClient]


def _set_user_active(url: str, email: str, active: bool) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(update(User).where(User.email == email).values(active=active))
    finally:
        engine.dispose()


def _order_state(url: str, order_id: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(select(WorkOrder.state).where(WorkOrder.id == order_id)))
    finally:
        engine.dispose()


def test_pages_send_a_stranger_to_the_login_form(anonymous: TestClient) -> None:
    r = anonymous.get("/ui/work-orders?state=all", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fwork-orders%3Fstate%3Dall"
    assert anonymous.get("/", follow_redirects=False).headers["location"] == "/ui/"
    page = anonymous.get(r.headers["location"])
    assert page.status_code == 200
    assert '<label for="email">Email</label>' in page.text
    assert 'name="next" value="/ui/work-orders?state=all"' in page.text


def test_sign_in_sets_a_strict_session_cookie_and_sign_out_clears_it(
    anonymous: TestClient, dash: Dashboard, web_settings: Settings
) -> None:
    r = sign_in(anonymous, dash.world.a.manager_email)
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ew_session="))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/ui", f"max-age={web_settings.token_ttl_s}"} <= (
        attributes
    )
    assert "secure" not in attributes  # plain HTTP in this test
    fleet = anonymous.get("/ui/")
    assert fleet.status_code == 200 and "alpha manager" in fleet.text
    assert fleet.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in fleet.headers["content-security-policy"]

    out = anonymous.post(
        "/ui/logout", data={"csrf_token": csrf_of(fleet.text)}, follow_redirects=False
    )
    assert out.status_code == 303 and out.headers["location"] == "/ui/login?why=signed_out"
    assert "ew_session" not in anonymous.cookies
    assert "You have signed out." in anonymous.get(out.headers["location"]).text
    assert anonymous.get("/ui/", follow_redirects=False).status_code == 303


def test_sign_in_follows_next_but_only_within_the_dashboard(
    anonymous: TestClient, dash: Dashboard
) -> None:
    for target, expected in [
        ("/ui/work-orders?state=all", "/ui/work-orders?state=all"),
        ("https://evil.example/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/v1/me", "/ui/"),
    ]:
        anonymous.cookies.clear()
        form = anonymous.get("/ui/login")
        r = anonymous.post(
            "/ui/login",
            data={
                "email": dash.world.a.manager_email,
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == expected, target


def test_a_wrong_password_or_an_unknown_email_answers_the_same_401(
    anonymous: TestClient, dash: Dashboard
) -> None:
    _set_user_active(dash.world.url, dash.world.b.manager_email, False)
    pages = []
    for email, password in [
        (dash.world.a.manager_email, "not the password"),
        ("nobody@nowhere.example", PASSWORD),
        (dash.world.b.manager_email, PASSWORD),  # deactivated
    ]:
        r = sign_in(anonymous, email, password)
        assert r.status_code == 401
        assert "Incorrect email or password." in r.text
        assert "ew_session" not in r.headers.get("set-cookie", "")
        pages.append(r.text.replace(email, "<email>"))
    assert pages[0] == pages[1] == pages[2]


def test_the_login_form_needs_its_own_csrf_token(anonymous: TestClient, dash: Dashboard) -> None:
    form = {"email": dash.world.a.manager_email, "password": PASSWORD}
    r = anonymous.post("/ui/login", data=form, follow_redirects=False)  # no cookie, no token
    assert r.status_code == 403
    assert "The sign-in form had expired" in r.text
    assert "ew_session" not in r.headers.get("set-cookie", "")
    # a token from the page, but the form's cookie is gone (a post from another site)
    token = csrf_of(anonymous.get("/ui/login").text)
    anonymous.cookies.clear()
    r = anonymous.post("/ui/login", data={**form, "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 403


def test_a_post_without_the_sessions_csrf_token_is_refused(
    browser: Browser, anonymous: TestClient, dash: Dashboard
) -> None:
    desk = browser(dash.world.desk_email)
    order = dash.world.a.work_order_id
    url = f"/ui/work-orders/{order}/transition"
    for data in ({"state": "approved"}, {"state": "approved", "csrf_token": "0" * 64}):
        r = desk.post(url, data=data, follow_redirects=False)
        assert r.status_code == 403
        assert "did not come from this dashboard" in r.text
    # another session's token does not do either
    other = sign_in(anonymous, dash.world.admin_email)
    assert getattr(other, "status_code", None) == 303
    admin_token = csrf_of(anonymous.get("/ui/").text)
    r = desk.post(
        url, data={"state": "approved", "csrf_token": admin_token}, follow_redirects=False
    )
    assert r.status_code == 403
    r = desk.post("/ui/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert _order_state(dash.world.url, order) == "waiting_approval"


def test_the_cookie_is_secure_over_https_or_when_set(
    web_app: FastAPI, dash: Dashboard, web_settings: Settings
) -> None:
    with TestClient(web_app, base_url="https://testserver") as https:
        r = sign_in(https, dash.world.a.manager_email)
        assert r.status_code == 303
        assert "secure" in r.headers["set-cookie"].lower()
    forced = web_settings.model_copy(update={"web_secure_cookies": True})
    from cloud.app import create_app

    with TestClient(create_app(forced)) as http:  # behind a proxy that terminates TLS
        form = http.get("/ui/login")
        assert "secure" in form.headers["set-cookie"].lower()


def test_an_expired_session_goes_back_to_the_login_page(
    anonymous: TestClient, dash: Dashboard, web_settings: Settings
) -> None:
    engine = make_engine(dash.world.url)
    try:
        with engine.connect() as conn:
            user = conn.execute(select(User).where(User.email == dash.world.a.manager_email)).one()
    finally:
        engine.dispose()
    old = issue_token(
        web_settings,
        User(id=user.id, email=user.email, role=user.role),
        now=datetime.now(UTC) - timedelta(days=1),
    )
    anonymous.cookies.set("ew_session", old.access_token, path="/ui")
    r = anonymous.get(f"/ui/sites/{dash.world.a.site_id}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login?next=")
    assert r.headers["location"].endswith("&why=expired")
    page = anonymous.get(r.headers["location"])
    assert "Your session has ended. Please sign in again." in page.text


def test_a_deactivated_user_is_signed_out_with_a_message(browser: Browser, dash: Dashboard) -> None:
    fm = browser(dash.world.a.manager_email)
    assert fm.get("/ui/").status_code == 200
    _set_user_active(dash.world.url, dash.world.a.manager_email, False)
    r = fm.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("why=disabled")
    page = fm.get(r.headers["location"])
    assert "This account has been deactivated." in page.text
    assert "ew_session" not in fm.cookies
