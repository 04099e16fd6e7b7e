"""The Office.js add-in that ``xlcf serve`` serves itself, for Excel on the web (and Excel 365 on Windows/macOS).

- ``GET /manifest.xml``: the add-in manifest, every URL pointing at this server as the request reached it
  (``https://localhost:8000/...``); sideload it in Excel (docs/excel-web.md). Office loads add-ins over HTTPS
  only: start the server with ``--certfile/--keyfile``.
- ``GET /taskpane.html`` (+ ``taskpane.js``, ``taskpane.css``): one button per script (main, fit, step, step5,
  reset, train). A press reads the workbook through Office.js into xlwings' book payload, POSTs it to
  ``/xlwings/custom-scripts-call/<script>`` and applies the returned actions, as xlwings' own clients do. Its
  "Solve this sheet" button reads the formulas, values and names (hidden Solver names too) itself, POSTs them to
  ``/xlcf/solve-sheet`` (:mod:`xlcf.server.sheet_solve`) and writes back the solved variable cells. The server
  token, when there is one, is typed into the pane.
- ``GET /functions.js``: the worksheet functions (``CF_FIT``...) for the add-in's shared runtime; each call
  POSTs to ``/xlwings/custom-functions-call`` (metadata: ``/xlwings/custom-functions-meta``).
- ``GET /icon-{16,32,64,80}.png``: the add-in's icons, drawn here (a small grid).

These files hold nothing secret and Office fetches some of them without credentials, so they are served without
the token (:data:`xlcf.server.security.PUBLIC_GET_PATHS`); every call that computes needs it.
"""

from __future__ import annotations

import functools
import html
import json
import struct
import uuid
import zlib
from importlib import resources
from string import Template
from xml.sax.saxutils import quoteattr

from fastapi import APIRouter, Request
from fastapi.responses import Response

ICON_SIZES = (16, 32, 64, 80)
OFFICE_JS = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js"

# Button captions and one line each for the scripts of xlcf.excel.macros.SCRIPTS (unknown ones get their name).
SCRIPT_LABELS = {
    "main": ("Run for this sheet", "fit, one step or train, as the sheet's own button"),
    "fit": ("Fit", "fit the factors of a dotprod/bias sheet"),
    "step": ("One step", "one pass of a graddesc sheet's optimizer"),
    "step5": ("Five steps", "five passes of a graddesc sheet's optimizer"),
    "reset": ("Reset", "a graddesc sheet back to its start"),
    "train": ("Train", "train on the ratings named by the movielens sheet"),
}


def _static(name: str) -> str:
    return resources.files("xlcf.server").joinpath("static", name).read_text(encoding="utf-8")


def taskpane_html(version: str, scripts: list[str], functions: list[str]) -> str:
    buttons = []
    for name in scripts:
        label, what = SCRIPT_LABELS.get(name, (name, ""))
        buttons.append(
            f'    <button type="button" data-script={quoteattr(name)} data-label={quoteattr(label)}>'
            f'{html.escape(label)}<span class="what">{html.escape(what)}</span></button>'
        )
    return Template(_static("taskpane.html")).substitute(
        version=html.escape(version, quote=True),
        buttons="\n".join(buttons),
        functions=", ".join(f"<code>={html.escape(n.upper())}(…)</code>" for n in functions),
    )


def functions_js(version: str, names: list[str]) -> str:
    """The custom functions for Office.js: each POSTs its arguments to the call route of the server that served
    this script and returns the result (an error becomes #VALUE! with the server's one-line message)."""
    lines = [
        "// xlcf: worksheet functions of `xlcf serve` (Office.js custom functions, shared runtime).",
        '"use strict";',
        "(function () {",
        "  if (typeof CustomFunctions === 'undefined') { return; }  // a plain browser tab: no functions",
        f"  const version = {json.dumps(version)};",
        "  const script = document.currentScript;",
        "  const base = script ? new URL('.', script.src).href : self.location.origin + '/';",
        "  async function call(funcName, args) {",
        "    const invocation = args.pop();",
        "    const body = {func_name: funcName, args: args, caller_address: invocation && invocation.address,",
        "      formula_name: invocation && invocation.functionName, version: version, runtime: '1.1',",
        "      client: 'Office.js', culture_info_name: '', date_format: ''};",
        "    const headers = {'Content-Type': 'application/json'};",
        "    const token = typeof globalThis.xlcfToken === 'function' ? globalThis.xlcfToken() : '';",
        "    if (token) { headers.Authorization = token; }",
        "    const response = await fetch(new URL('xlwings/custom-functions-call', base).href,",
        "      {method: 'POST', headers: headers, body: JSON.stringify(body)});",
        "    const text = await response.text();",
        "    if (!response.ok) {",
        "      throw new CustomFunctions.Error(CustomFunctions.ErrorCode.invalidValue, text.slice(0, 255));",
        "    }",
        "    return JSON.parse(text).result;",
        "  }",
    ]
    for name in names:
        lines.append(
            f"  CustomFunctions.associate({json.dumps(name.upper())}, (...args) => call({json.dumps(name)}, args));"
        )
    lines.append("})();")
    return "\n".join(lines) + "\n"


def manifest_xml(base_url: str, version: str) -> str:
    """An Office add-in manifest (task pane + custom functions in a shared runtime) for the server at
    ``base_url`` (``https://localhost:8000``). The id is derived from the URL, so it is stable per server."""
    base = base_url.rstrip("/")
    addin_id = uuid.uuid5(uuid.NAMESPACE_URL, f"xlcf-serve:{base}")

    def url(path: str) -> str:
        return quoteattr(f"{base}/{path}")

    http_note = (
        ""
        if base.startswith("https://")
        else ("\n<!-- Office loads add-ins over HTTPS only: start xlcf serve with --certfile and --keyfile. -->")
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>{http_note}
<OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:bt="http://schemas.microsoft.com/office/officeappbasictypes/1.0"
  xmlns:ov="http://schemas.microsoft.com/office/taskpaneappversionoverrides" xsi:type="TaskPaneApp">
  <Id>{addin_id}</Id>
  <Version>1.0.0.0</Version>
  <ProviderName>xlcf</ProviderName>
  <DefaultLocale>en-US</DefaultLocale>
  <DisplayName DefaultValue="xlcf" />
  <Description DefaultValue={
        quoteattr(f"Collaborative filtering in Excel: fit, step and train on {base} (xlwings {version} protocol)")
    } />
  <IconUrl DefaultValue={url("icon-32.png")} />
  <HighResolutionIconUrl DefaultValue={url("icon-64.png")} />
  <SupportUrl DefaultValue={url("")} />
  <AppDomains>
    <AppDomain>{html.escape(base)}</AppDomain>
  </AppDomains>
  <Hosts>
    <Host Name="Workbook" />
  </Hosts>
  <Requirements>
    <Sets DefaultMinVersion="1.1">
      <Set Name="SharedRuntime" MinVersion="1.1" />
    </Sets>
  </Requirements>
  <DefaultSettings>
    <SourceLocation DefaultValue={url("taskpane.html")} />
  </DefaultSettings>
  <Permissions>ReadWriteDocument</Permissions>
  <VersionOverrides xmlns="http://schemas.microsoft.com/office/taskpaneappversionoverrides"
    xsi:type="VersionOverridesV1_0">
    <Hosts>
      <Host xsi:type="Workbook">
        <Runtimes>
          <Runtime resid="Taskpane.Url" lifetime="long" />
        </Runtimes>
        <AllFormFactors>
          <ExtensionPoint xsi:type="CustomFunctions">
            <Script>
              <SourceLocation resid="Functions.Script.Url" />
            </Script>
            <Page>
              <SourceLocation resid="Taskpane.Url" />
            </Page>
            <Metadata>
              <SourceLocation resid="Functions.Metadata.Url" />
            </Metadata>
            <Namespace resid="Functions.Namespace" />
          </ExtensionPoint>
        </AllFormFactors>
        <DesktopFormFactor>
          <GetStarted>
            <Title resid="GetStarted.Title" />
            <Description resid="GetStarted.Description" />
            <LearnMoreUrl resid="Taskpane.Url" />
          </GetStarted>
          <FunctionFile resid="Taskpane.Url" />
          <ExtensionPoint xsi:type="PrimaryCommandSurface">
            <OfficeTab id="TabHome">
              <Group id="xlcf.Group">
                <Label resid="Group.Label" />
                <Icon>
                  <bt:Image size="16" resid="Icon.16x16" />
                  <bt:Image size="32" resid="Icon.32x32" />
                  <bt:Image size="80" resid="Icon.80x80" />
                </Icon>
                <Control xsi:type="Button" id="xlcf.TaskpaneButton">
                  <Label resid="TaskpaneButton.Label" />
                  <Supertip>
                    <Title resid="TaskpaneButton.Label" />
                    <Description resid="TaskpaneButton.Tooltip" />
                  </Supertip>
                  <Icon>
                    <bt:Image size="16" resid="Icon.16x16" />
                    <bt:Image size="32" resid="Icon.32x32" />
                    <bt:Image size="80" resid="Icon.80x80" />
                  </Icon>
                  <Action xsi:type="ShowTaskpane">
                    <TaskpaneId>xlcf.Taskpane</TaskpaneId>
                    <SourceLocation resid="Taskpane.Url" />
                  </Action>
                </Control>
              </Group>
            </OfficeTab>
          </ExtensionPoint>
        </DesktopFormFactor>
      </Host>
    </Hosts>
    <Resources>
      <bt:Images>
        <bt:Image id="Icon.16x16" DefaultValue={url("icon-16.png")} />
        <bt:Image id="Icon.32x32" DefaultValue={url("icon-32.png")} />
        <bt:Image id="Icon.80x80" DefaultValue={url("icon-80.png")} />
      </bt:Images>
      <bt:Urls>
        <bt:Url id="Taskpane.Url" DefaultValue={url("taskpane.html")} />
        <bt:Url id="Functions.Script.Url" DefaultValue={url("functions.js")} />
        <bt:Url id="Functions.Metadata.Url" DefaultValue={url("xlwings/custom-functions-meta")} />
      </bt:Urls>
      <bt:ShortStrings>
        <bt:String id="Functions.Namespace" DefaultValue="XLCF" />
        <bt:String id="Group.Label" DefaultValue="xlcf" />
        <bt:String id="TaskpaneButton.Label" DefaultValue="xlcf" />
        <bt:String id="GetStarted.Title" DefaultValue="xlcf is ready" />
      </bt:ShortStrings>
      <bt:LongStrings>
        <bt:String id="TaskpaneButton.Tooltip" DefaultValue="Fit, step and train the active sheet with xlcf serve" />
        <bt:String id="GetStarted.Description" DefaultValue="Open the xlcf pane from the Home tab." />
      </bt:LongStrings>
    </Resources>
  </VersionOverrides>
</OfficeApp>
"""


@functools.cache
def icon_png(size: int) -> bytes:
    """A ``size`` x ``size`` PNG: a green square with a white 3 x 3 grid (a spreadsheet, as Office shows icons)."""
    green, white = b"\x10\x7c\x41\xff", b"\xff\xff\xff\xff"
    step = size / 3
    lines = {min(size - 1, round(k * step)) for k in range(4)} | {max(0, round(k * step) - 1) for k in range(1, 4)}
    rows = []
    for y in range(size):
        row = b"".join(white if (x in lines or y in lines) else green for x in range(size))
        rows.append(b"\x00" + row)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def router(*, version: str, scripts: list[str], functions: list[str]) -> APIRouter:
    routes = APIRouter()
    page = taskpane_html(version, scripts, functions)
    script = _static("taskpane.js")
    style = _static("taskpane.css")
    functions_code = functions_js(version, functions)
    no_cache = {"Cache-Control": "no-cache"}  # a new xlcf version must reach the pane on the next load

    @routes.get("/manifest.xml")
    async def manifest(request: Request):
        base = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        return Response(
            manifest_xml(base, version),
            media_type="application/xml",
            headers={"Content-Disposition": 'inline; filename="xlcf-manifest.xml"'},
        )

    @routes.get("/taskpane.html")
    async def taskpane():
        return Response(page, media_type="text/html; charset=utf-8", headers=no_cache)

    @routes.get("/taskpane.js")
    async def taskpane_js():
        return Response(script, media_type="text/javascript; charset=utf-8", headers=no_cache)

    @routes.get("/taskpane.css")
    async def taskpane_css():
        return Response(style, media_type="text/css; charset=utf-8", headers=no_cache)

    @routes.get("/functions.js")
    async def functions_script():
        return Response(functions_code, media_type="text/javascript; charset=utf-8", headers=no_cache)

    for size in ICON_SIZES:
        routes.add_api_route(f"/icon-{size}.png", _icon_route(size), methods=["GET"], name=f"icon_{size}")
    return routes


def _icon_route(size: int):
    async def icon():
        return Response(icon_png(size), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    return icon
