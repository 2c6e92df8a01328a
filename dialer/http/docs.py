"""The API description: `GET /openapi.json` (a bearer token of any role, like every
endpoint) and `GET /docs`, a page that asks for that token and then shows the
interactive Swagger UI with it.

FastAPI's own /docs and /openapi.json answer anyone; they are switched off in
`dialer.app.build_app` and replaced by these. The /docs page itself carries no data
(like the console's sign-in page): everything it shows is fetched with the token the
user types, which stays in that browser tab (sessionStorage) and is sent only to this
server. Swagger UI's script and style are served from `/docs/assets/`, read from the
`fastapi-offline` wheel, so the page works on a machine without internet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dialer.errors import NotFound
from dialer.http.deps import Caller

router = APIRouter(include_in_schema=False)

SWAGGER_JS = "/docs/assets/swagger-ui-bundle.js"
SWAGGER_CSS = "/docs/assets/swagger-ui.css"
_ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
_ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8"}
# Read once at import: two fixed files, so no path from the request ever reaches the filesystem.
_ASSETS = {name: (_ASSET_DIR / name).read_bytes() for name in _ASSET_TYPES}

# The page's own script is inline and fixed, Swagger UI's comes from this server: a strict CSP keeps anything else out.
_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>DialGate API</title>
<link rel="stylesheet" href="__CSS__">
<style>
  body { margin: 0; font-family: system-ui, sans-serif; }
  #token-bar { padding: 12px 20px; background: #f4f4f4; border-bottom: 1px solid #ddd; }
  #token-bar input { width: 28em; font-family: monospace; }
</style>
</head>
<body>
<div id="token-bar">
  <label for="token">访问令牌 / Bearer token</label>
  <input id="token" type="password" autocomplete="off" spellcheck="false">
  <button id="load" type="button">查看接口 / Show the API</button>
  <button id="forget" type="button">清除令牌 / Forget the token</button>
  <span id="status" role="status"></span>
</div>
<div id="swagger-ui"></div>
<script src="__JS__"></script>
<script>
(function () {
  var KEY = "dialgate-api-token";
  var field = document.getElementById("token");
  var status = document.getElementById("status");
  function show(token) {
    status.textContent = "";
    fetch(__SPEC__, {headers: {"Authorization": "Bearer " + token}}).then(function (r) {
      if (!r.ok) { throw new Error(r.status === 401 ? "令牌无效 / The token was not accepted" : "HTTP " + r.status); }
      return r.json();
    }).then(function (spec) {
      sessionStorage.setItem(KEY, token);
      SwaggerUIBundle({
        spec: spec, dom_id: "#swagger-ui", deepLinking: true,
        requestInterceptor: function (req) { req.headers["Authorization"] = "Bearer " + token; return req; }
      });
    }).catch(function (e) { status.textContent = e.message; });
  }
  document.getElementById("load").addEventListener("click", function () { show(field.value.trim()); });
  document.getElementById("forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY); field.value = ""; document.getElementById("swagger-ui").textContent = "";
  });
  var saved = sessionStorage.getItem(KEY);
  if (saved) { show(saved); }
})();
</script>
</body>
</html>
"""


@router.get("/openapi.json")
async def openapi(request: Request, who: Caller) -> Any:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs() -> HTMLResponse:
    page = (
        _PAGE.replace("__CSS__", SWAGGER_CSS).replace("__JS__", SWAGGER_JS).replace("__SPEC__", json.dumps("/openapi.json"))
    )
    return HTMLResponse(
        page,
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                 "Cache-Control": "no-store"},
    )


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    body = _ASSETS.get(name)
    if body is None:
        raise NotFound(f"no Swagger UI asset {name!r}: the page uses {', '.join(_ASSET_TYPES)}")
    return Response(body, media_type=_ASSET_TYPES[name], headers={"Cache-Control": "public, max-age=86400",
                                                                   "X-Content-Type-Options": "nosniff"})
