"""The dashboard's HTTP side: server-rendered pages at ``/ui``, their assets at ``/static``.

The pages are a small FastAPI application mounted at ``/ui`` (:func:`create_web_app`),
sharing the API's ``app.state`` (settings, SQL sessions, time-series store, baselines), so
the API's dependencies (:data:`~cloud.api.deps.SessionDep`, ...) serve it unchanged, while
its errors become HTML pages rather than the API's JSON and its routes stay out of the
API's OpenAPI schema and route table.

URL map (all GET unless marked)::

    /                                 → /ui/
    /dashboard/devices/{id}           → /ui/devices/{id} (the work orders' evidence links)
    /static/...                       CSS, JS, uPlot (vendored), icon
    /ui/login                         the login form; POST: sign in
    /ui/logout                        POST: sign out
    /ui/                              the fleet: the caller's sites (service desk → board)
    /ui/sites/{site_id}               one site: devices by risk, energy and events per day
    /ui/devices/{device_id}           a device's life-cycle file (?span=24h|7d|30d)
    /ui/work-orders                   the board (?state, site_id, priority, fault, sort)
    /ui/work-orders/{order_id}        one order
    /ui/work-orders/{order_id}/transition, /assign, /comments    POST: the moves

Sessions and CSRF: :mod:`cloud.web.session`. Tenant isolation: the services'
(:mod:`cloud.web.views`), so another client's site, device or order is a 404 page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, cast
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.api.deps import SessionDep, SettingsDep, StoreDep
from cloud.api.errors import status_of
from cloud.auth import tokens
from cloud.auth.principal import Principal
from cloud.errors import AuthError, CloudError, Conflict, Forbidden, InvalidInput
from cloud.registry.models import Role, User
from cloud.settings import Settings
from cloud.web import formatting, views
from cloud.web import session as websession
from cloud.web.baseline import BaselineSource, NoBaseline
from cloud.web.charts import SPANS
from cloud.web.errors import LOGIN_MESSAGES, CsrfRefused, LoginRequired
from cloud.web.session import FLASH_COOKIE, LOGIN_COOKIE, SESSION_COOKIE, Flash
from cloud.workorders import service
from cloud.workorders.policy import State as OrderState
from cloud.workorders.service import order_number

log = logging.getLogger(__name__)

PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
STATIC_DIR: Final = PACKAGE_DIR / "static"
UI_PREFIX: Final = "/ui"
STATIC_PREFIX: Final = "/static"
MAX_EMAIL_FIELD: Final = 320
MAX_PASSWORD_FIELD: Final = 1024
MAX_NOTE: Final = 10_000

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every page: nothing but this service's own assets, no framing, no caching of a
tenant's data."""

ROLE_LABELS: Final = {
    Role.ADMIN: "Administrator",
    Role.FACILITY_MANAGER: "Facility manager",
    Role.SERVICE_DESK: "Service desk",
}


# ---- paths and templates -----------------------------------------------------------------------


def _root(request: Request) -> str:
    """The service's base path: ``""``, or the prefix a proxy serves it under."""
    return str(request.scope.get("root_path", "")).removesuffix(UI_PREFIX)


def ui_url(request: Request, path: str = "/") -> str:
    return f"{_root(request)}{UI_PREFIX}{path}"


def _cookie_path(request: Request) -> str:
    return f"{_root(request)}{UI_PREFIX}"


def _page_globals(request: Request) -> dict[str, Any]:
    root = _root(request)
    return {"ui": f"{root}{UI_PREFIX}", "static": f"{root}{STATIC_PREFIX}"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=formatting.fmt_datetime,
        short=formatting.fmt_short,
        day=formatting.fmt_date,
        ago=formatting.fmt_ago,
        due=formatting.fmt_due,
        pct=formatting.fmt_pct,
        num=formatting.fmt_number,
        kwh=formatting.fmt_kwh,
        human=formatting.humanize,
        iso=formatting.iso,
        order_number=order_number,
    )
    env.globals.update(
        BAND_LABELS=views.BAND_LABELS,
        STATE_LABELS=views.STATE_LABELS,
        PRIORITY_LABELS=views.PRIORITY_LABELS,
        SOURCE_LABELS=views.SOURCE_LABELS,
        STATE_FILTERS=views.STATE_FILTERS,
        SORTS=views.SORTS,
        SPANS=SPANS,
        risk_band=views.risk_band,
        zone_label=formatting.zone_label,
    )
    return env


templates = Jinja2Templates(env=_environment(), context_processors=[_page_globals])


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def _secret(settings: Settings) -> str:
    return settings.secret_key.get_secret_value()


def _secure(request: Request, settings: Settings) -> bool:
    if settings.web_secure_cookies is not None:
        return settings.web_secure_cookies
    return request.url.scheme == "https"


def _now() -> datetime:
    return datetime.now(UTC)


def _baselines(request: Request) -> BaselineSource:
    source = getattr(request.app.state, "baselines", None)
    return cast(BaselineSource, source) if source is not None else NoBaseline()


def render(request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> Response:
    """A page, with the caller (for the header), the pending flash message and the
    security headers."""
    settings = _settings(request)
    flash = websession.decode_flash(_secret(settings), request.cookies.get(FLASH_COOKIE))
    page = {
        "user": getattr(request.state, "web_user", None),
        "flash": flash,
        "nav": "",
        "now": _now(),
        **context,
    }
    response = templates.TemplateResponse(
        request, name, page, status_code=status, headers=dict(SECURITY_HEADERS)
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=_cookie_path(request))
    return response


def _set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    samesite: str = "lax",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_cookie_path(request),
        httponly=True,
        samesite=cast(Any, samesite),
        secure=_secure(request, _settings(request)),
    )


def redirect(request: Request, url: str, flash: Flash | None = None) -> RedirectResponse:
    """303 to ``url`` (after a POST: the browser GETs it), with a flash message."""
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        value = websession.encode_flash(_secret(_settings(request)), flash)
        _set_cookie(request, response, FLASH_COOKIE, value, max_age=websession.FLASH_TTL_S)
    return response


# ---- who is calling --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebUser:
    """The signed-in caller: their principal, what the header shows, and the session's
    token and CSRF token (plain values: they outlive the request's SQL session)."""

    principal: Principal
    name: str
    email: str
    token: str
    csrf: str

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.principal.role, str(self.principal.role))

    @property
    def sees_fleet(self) -> bool:
        return self.principal.role is not Role.SERVICE_DESK

    @property
    def may_assign(self) -> bool:
        return views.can_assign(self.principal)


def current_user(request: Request, session: SessionDep, settings: SettingsDep) -> WebUser:
    """The session cookie's user, checked as the API checks a bearer token; otherwise
    :class:`LoginRequired` (the pages send the browser to the login form)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    try:
        principal = tokens.principal_from_token(session, settings, token)
    except AuthError:
        try:
            tokens.token_subject(settings, token)
        except AuthError:
            raise LoginRequired("expired") from None
        raise LoginRequired("disabled") from None
    user = session.get(User, principal.user_id)
    if user is None:  # pragma: no cover - principal_from_token loaded it
        raise LoginRequired("disabled")
    web_user = WebUser(
        principal=principal,
        name=user.name or user.email,
        email=user.email,
        token=token,
        csrf=websession.csrf_token(_secret(settings), token),
    )
    request.state.web_user = web_user
    return web_user


CurrentUser = Annotated[WebUser, Depends(current_user)]


def form_user(
    user: CurrentUser,
    settings: SettingsDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> WebUser:
    """:func:`current_user` for a POST: the form must carry the session's CSRF token."""
    if not websession.csrf_valid(_secret(settings), user.token, csrf_token):
        raise CsrfRefused()
    return user


FormUser = Annotated[WebUser, Depends(form_user)]

NextField = Annotated[str, Form(alias="next", max_length=websession.MAX_NEXT_LENGTH)]


def _back(request: Request, next_url: str, default: str) -> str:
    return websession.safe_next(next_url, _cookie_path(request), default)


# ---- error pages ---------------------------------------------------------------------------

ERROR_TITLES: Final = {
    400: "That request could not be read",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Not possible",
    422: "That value is not valid",
    500: "Something went wrong",
    502: "Readings could not be loaded",
    503: "Temporarily unavailable",
}
NOT_FOUND_TEXT: Final = (
    "There is nothing at this address, or it belongs to a site you do not have access to."
)


def error_page(request: Request, status: int, message: str) -> Response:
    title = ERROR_TITLES.get(status, "Something went wrong")
    return render(
        request, "error.html", {"title": title, "status": status, "message": message}, status=status
    )


async def _login_required(request: Request, exc: Exception) -> Response:
    reason = exc.reason if isinstance(exc, LoginRequired) else "expired"
    params: dict[str, str] = {}
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        params["next"] = websession.safe_next(target, _cookie_path(request), ui_url(request))
    if reason != "none":
        params["why"] = reason
    query = f"?{urlencode(params)}" if params else ""
    response = RedirectResponse(ui_url(request, f"/login{query}"), status_code=303)
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


async def _cloud_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, CloudError):  # pragma: no cover - registered for CloudError
        raise exc
    status, _code = status_of(exc)
    if status == 401:
        return await _login_required(request, LoginRequired("expired"))
    if status == 404:
        message = NOT_FOUND_TEXT
    elif status == 503:
        message = "The database or the time-series store did not answer. Try again in a minute."
    elif status >= 500:
        log.error("dashboard: %s: %s", type(exc).__name__, exc, exc_info=exc)
        message = "The dashboard could not show this page. The error has been logged."
    else:
        message = str(exc)
    return error_page(request, status, message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_page(request, 400, "A value in the address or the form could not be read.")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    message = NOT_FOUND_TEXT if status == 404 else str(getattr(exc, "detail", "")) or "Error."
    return error_page(request, status, message)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("dashboard: unexpected error on %s", request.url.path, exc_info=exc)
    return error_page(
        request, 500, "The dashboard could not show this page. The error has been logged."
    )


# ---- sign in and out ---------------------------------------------------------------------------

router = APIRouter()


def _login_page(
    request: Request,
    *,
    status: int = 200,
    message: str | None = None,
    error: str | None = None,
    email: str = "",
    next_url: str = "",
) -> Response:
    secret = _secret(_settings(request))
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = not 16 <= len(nonce) <= 64
    if fresh:
        nonce = websession.new_login_nonce()
    response = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": websession.login_token(secret, nonce),
            "message": message,
            "error": error,
            "email": email,
            "next_url": websession.safe_next(next_url, _cookie_path(request), ""),
        },
        status=status,
    )
    if fresh:
        _set_cookie(
            request,
            response,
            LOGIN_COOKIE,
            nonce,
            max_age=websession.LOGIN_NONCE_TTL_S,
            samesite="strict",
        )
    return response


@router.get("/login")
def login_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    next_url: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
    why: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and why is None:
        try:
            tokens.principal_from_token(session, settings, token)
        except AuthError:
            pass  # not signed in after all: show the form
        else:
            return RedirectResponse(
                websession.safe_next(next_url, _cookie_path(request), ui_url(request)),
                status_code=303,
            )
    response = _login_page(request, message=LOGIN_MESSAGES.get(why or ""), next_url=next_url or "")
    if token and why is not None:
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "",
) -> Response:
    email = email.strip()[:MAX_EMAIL_FIELD]
    if not websession.login_token_valid(
        _secret(settings), request.cookies.get(LOGIN_COOKIE), csrf_token
    ):
        return _login_page(
            request,
            status=403,
            error="The sign-in form had expired. Please sign in again.",
            email=email,
            next_url=next_url,
        )
    try:
        if len(password) > MAX_PASSWORD_FIELD or not email or not password:
            raise AuthError("incorrect email or password")
        user = tokens.authenticate_password(session, email, password)
    except AuthError:
        log.info("dashboard: a sign-in failed (wrong email, password or disabled account)")
        return _login_page(
            request,
            status=401,
            error="Incorrect email or password.",
            email=email,
            next_url=next_url,
        )
    issued = tokens.issue_token(settings, user)
    target = websession.safe_next(next_url, _cookie_path(request), ui_url(request))
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, issued.access_token, max_age=issued.expires_in)
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    log.info("dashboard: user %s signed in", user.id)
    return response


@router.post("/logout")
def logout(request: Request, user: FormUser) -> Response:
    response = RedirectResponse(ui_url(request, "/login?why=signed_out"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    log.info("dashboard: user %s signed out", user.principal.user_id)
    return response


# ---- pages ---------------------------------------------------------------------------------


@router.get("/")
def fleet(request: Request, session: SessionDep, store: StoreDep, user: CurrentUser) -> Response:
    if not user.sees_fleet:
        return RedirectResponse(ui_url(request, "/work-orders"), status_code=303)
    view = views.fleet_view(session, store, user.principal, _baselines(request), _now())
    return render(request, "fleet.html", {"title": "Sites", "nav": "fleet", "view": view})


@router.get("/sites/{site_id}")
def site(
    request: Request, site_id: str, session: SessionDep, store: StoreDep, user: CurrentUser
) -> Response:
    view = views.site_view(session, store, user.principal, _baselines(request), site_id, _now())
    return render(request, "site.html", {"title": view.site.name, "nav": "fleet", "view": view})


@router.get("/devices/{device_id}")
def device(
    request: Request,
    device_id: str,
    session: SessionDep,
    store: StoreDep,
    user: CurrentUser,
    span: Annotated[str | None, Query(max_length=16)] = None,
    start: Annotated[str | None, Query(max_length=32)] = None,
    end: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    now = _now()
    window = views.window_for(span, start, end, now)
    view = views.device_view(session, store, user.principal, device_id, window, now)
    title = f"{view.device.name} · {view.site.name}"
    return render(request, "device.html", {"title": title, "nav": "fleet", "view": view})


@router.get("/work-orders")
def board(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    state: Annotated[str | None, Query(max_length=32)] = None,
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    priority: Annotated[str | None, Query(max_length=2)] = None,
    fault: Annotated[str | None, Query(max_length=96)] = None,
    sort: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    f = views.BoardFilter.parse(state, site_id, priority, fault, sort)
    view = views.board_view(session, user.principal, f, _now())
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(
        request,
        "board.html",
        {"title": "Work orders", "nav": "board", "view": view, "here": here},
    )


@router.get("/work-orders/{order_id}")
def order(request: Request, order_id: str, session: SessionDep, user: CurrentUser) -> Response:
    view = views.order_view(session, user.principal, order_id, _now())
    return render(
        request,
        "order.html",
        {"title": view.row.number, "nav": "board", "view": view, "here": request.url.path},
    )


# ---- the moves ---------------------------------------------------------------------------


def _refused(
    request: Request, session: Session, back: str, number: str, exc: Exception
) -> Response:
    """The service refused a move (nothing was written): back, saying why."""
    session.rollback()
    return redirect(request, back, Flash("error", f"{number} was not changed: {exc}"))


@router.post("/work-orders/{order_id}/transition")
def transition(
    request: Request,
    order_id: str,
    session: SessionDep,
    user: FormUser,
    state: Annotated[str, Form(max_length=32)] = "",
    note: Annotated[str, Form(max_length=MAX_NOTE)] = "",
    failure_prevented: Annotated[str, Form(max_length=8)] = "",
    next_url: NextField = "",
) -> Response:
    found = service.get_order(session, user.principal, order_id)  # 404 before anything else
    number = order_number(found.number)
    back = _back(request, next_url, ui_url(request, f"/work-orders/{quote(order_id)}"))
    target = state.strip()
    prevented = (
        {"yes": True, "no": False}.get(failure_prevented)
        if target in (OrderState.COMPLETE, OrderState.CLOSED)
        else None
    )
    before = views.STATE_LABELS.get(found.state, str(found.state))
    try:
        moved = service.transition(
            session,
            user.principal,
            order_id,
            target,
            note=note.strip() or None,
            failure_prevented=prevented,
        )
    except (Conflict, Forbidden, InvalidInput) as exc:
        return _refused(request, session, back, number, exc)
    after = views.STATE_LABELS.get(moved.state, str(moved.state))
    return redirect(request, back, Flash("ok", f"{number} moved from {before} to {after}."))


@router.post("/work-orders/{order_id}/assign")
def assign(
    request: Request,
    order_id: str,
    session: SessionDep,
    user: FormUser,
    technician_id: Annotated[str, Form(max_length=64)] = "",
    next_url: NextField = "",
) -> Response:
    found = service.get_order(session, user.principal, order_id)
    number = order_number(found.number)
    back = _back(request, next_url, ui_url(request, f"/work-orders/{quote(order_id)}"))
    try:
        service.assign(session, user.principal, order_id, technician_id.strip() or None)
    except (Conflict, Forbidden, InvalidInput) as exc:
        return _refused(request, session, back, number, exc)
    names = {t.id: t.name for t in views.technicians(session)}
    who = names.get(technician_id.strip())
    text = f"{number} assigned to {who}." if who else f"{number}: assignment cleared."
    return redirect(request, back, Flash("ok", text))


@router.post("/work-orders/{order_id}/comments")
def comment(
    request: Request,
    order_id: str,
    session: SessionDep,
    user: FormUser,
    text: Annotated[str, Form(max_length=MAX_NOTE)] = "",
    next_url: NextField = "",
) -> Response:
    found = service.get_order(session, user.principal, order_id)
    number = order_number(found.number)
    back = _back(request, next_url, ui_url(request, f"/work-orders/{quote(order_id)}"))
    try:
        service.comment(session, user.principal, order_id, text)
    except (Conflict, Forbidden, InvalidInput) as exc:
        return _refused(request, session, back, number, exc)
    return redirect(request, back, Flash("ok", f"Comment added to {number}."))


# ---- the application --------------------------------------------------------------------------


async def _home(request: Request) -> Response:
    return RedirectResponse(ui_url(request), status_code=307)


async def _evidence_link(request: Request) -> Response:
    """A work order's evidence link (``/dashboard/devices/{id}?start=&end=``, written by
    :mod:`cloud.workorders.service`) opens the device page over that period."""
    device_id = quote(str(request.path_params["device_id"]), safe="")
    params = {k: v for k in ("start", "end") if (v := request.query_params.get(k))}
    query = f"?{urlencode(params)}" if params else ""
    return RedirectResponse(ui_url(request, f"/devices/{device_id}{query}"), status_code=307)


def create_web_app(state: State) -> FastAPI:
    """The pages as an application sharing ``state`` with the API (mount it at ``/ui``)."""
    web = FastAPI(title="EdgeWatch dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    web.state = state
    web.add_exception_handler(LoginRequired, _login_required)
    web.add_exception_handler(CloudError, _cloud_error)
    web.add_exception_handler(RequestValidationError, _validation_error)
    web.add_exception_handler(StarletteHTTPException, _http_error)
    web.add_exception_handler(Exception, _server_error)
    web.include_router(router)
    return web


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: the pages at ``/ui``, the assets at ``/static``,
    ``/`` redirecting to the pages. Sets ``app.state.baselines`` to :class:`NoBaseline`
    unless a :class:`~cloud.web.baseline.BaselineSource` is there already."""
    if getattr(app.state, "baselines", None) is None:
        app.state.baselines = NoBaseline()
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(UI_PREFIX, create_web_app(app.state), name="ui")
    app.add_route("/", _home, methods=["GET"], include_in_schema=False)
    app.add_route(
        "/dashboard/devices/{device_id}", _evidence_link, methods=["GET"], include_in_schema=False
    )
