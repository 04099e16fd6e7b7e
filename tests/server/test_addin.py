"""The Office.js add-in's files as `xlcf serve` serves them (no browser here; see test_addin_browser.py): the
manifest names this server's URLs and parses as an Office add-in manifest, the icons are real PNGs of their
size, the task pane has a button per script, and the functions script registers every worksheet function."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import struct
import zlib

import pytest
from lxml import etree

from xlcf.server import addin

NS = {
    "o": "http://schemas.microsoft.com/office/appforoffice/1.1",
    "bt": "http://schemas.microsoft.com/office/officeappbasictypes/1.0",
    "v": "http://schemas.microsoft.com/office/taskpaneappversionoverrides",
}


@pytest.fixture(scope="module")
def client():
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    from fastapi.testclient import TestClient

    from xlcf.server.app import ServerSettings, create_app

    app = create_app(ServerSettings())
    # Not entered as a context manager: no lifespan, so no worker is started for these static files.
    return TestClient(app, base_url="https://localhost:8443")


def test_manifest_points_at_this_server(client):
    response = client.get("/manifest.xml")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{NS['o']}}}OfficeApp"
    assert root.find("o:SourceLocation", NS) is None
    source = root.find("o:DefaultSettings/o:SourceLocation", NS).get("DefaultValue")
    assert source == "https://localhost:8443/taskpane.html"
    urls = {u.get("id"): u.get("DefaultValue") for u in root.iterfind(".//bt:Url", NS)}
    assert urls == {
        "Taskpane.Url": "https://localhost:8443/taskpane.html",
        "Functions.Script.Url": "https://localhost:8443/functions.js",
        "Functions.Metadata.Url": "https://localhost:8443/xlwings/custom-functions-meta",
    }
    images = [i.get("DefaultValue") for i in root.iterfind(".//bt:Image", NS) if i.get("DefaultValue")]
    assert images and all(u.startswith("https://localhost:8443/icon-") for u in images)
    assert root.find("o:AppDomains/o:AppDomain", NS).text == "https://localhost:8443"
    assert root.find(".//v:Runtime", NS).get("lifetime") == "long"  # shared runtime: the pane's token reaches UDFs
    assert "HTTPS" not in response.text  # no warning when served over https


def test_manifest_id_is_stable_per_url_and_warns_about_http():
    first = etree.fromstring(addin.manifest_xml("https://localhost:8000", "1").encode())
    again = etree.fromstring(addin.manifest_xml("https://localhost:8000/", "1").encode())
    other = etree.fromstring(addin.manifest_xml("https://gpu-box:8000", "1").encode())
    assert first.findtext("o:Id", namespaces=NS) == again.findtext("o:Id", namespaces=NS)
    assert first.findtext("o:Id", namespaces=NS) != other.findtext("o:Id", namespaces=NS)
    assert "--certfile" in addin.manifest_xml("http://127.0.0.1:8000", "1")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("size", addin.ICON_SIZES)
def test_icons_are_pngs_of_their_size(client, size):
    response = client.get(f"/icon-{size}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert _png_size(response.content) == (size, size)
    # the image data decompresses to exactly size rows of (filter byte + size RGBA pixels)
    idat = response.content.index(b"IDAT")
    length = struct.unpack(">I", response.content[idat - 4 : idat])[0]
    assert len(zlib.decompress(response.content[idat + 4 : idat + 4 + length])) == size * (1 + 4 * size)


def test_task_pane_has_a_button_per_script_and_loads_office_js(client):
    import xlwings

    page = client.get("/taskpane.html")
    assert page.status_code == 200
    html = page.text
    tree = etree.HTML(html)
    scripts = [b.get("data-script") for b in tree.iterfind(".//button[@data-script]")]
    assert set(scripts) >= {"main", "fit", "step", "train"}
    sources = [s.get("src") for s in tree.iterfind(".//script")]
    assert sources == [addin.OFFICE_JS, "functions.js", "taskpane.js"]
    assert tree.find(".//meta[@name='xlwings-version']").get("content") == xlwings.__version__
    assert tree.find(".//input[@id='token']").get("type") == "password"
    solve = tree.find(".//button[@id='solve-sheet']")  # reads the formulas itself: not an xlwings script
    assert solve is not None and solve.get("data-script") is None and "Solve this sheet" in "".join(solve.itertext())
    for asset in ("/taskpane.js", "/taskpane.css"):
        assert client.get(asset).status_code == 200


def test_functions_script_registers_every_function(client):
    code = client.get("/functions.js").text
    for name in ("CF_FIT", "CF_PREDICT", "CF_RMSE", "CF_RECOMMEND"):
        assert f'CustomFunctions.associate("{name}"' in code
    assert "xlwings/custom-functions-call" in code
