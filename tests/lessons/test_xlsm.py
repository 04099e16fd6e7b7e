"""Macro workbooks in the xlwings quickstart layout: the package is checked part by part (VBA project
identical to the installed xlwings template's, content types, each button's macro, the xlwings.conf sheet,
the .py beside it), and LibreOffice must open it."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from xlcf.errors import WorkbookError
from xlcf.lessons.xlsm import SAMPLE_CALL, make_macro_workbook

NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "ct": "http://schemas.openxmlformats.org/package/2006/content-types",
    "pr": "http://schemas.openxmlformats.org/package/2006/relationships",
    "x": "urn:schemas-microsoft-com:office:excel",
    "v": "urn:schemas-microsoft-com:vml",
}
R_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def template_vba() -> bytes:
    spec = importlib.util.find_spec("xlwings")
    with zipfile.ZipFile(Path(list(spec.submodule_search_locations)[0]) / "quickstart_standalone.xlsm") as z:
        return z.read("xl/vbaProject.bin")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from xlcf.cli import main

    folder = tmp_path_factory.mktemp("xlsm")
    out = {}
    for kind, stem in (("collab", "collab_filter"), ("graddesc", "graddesc")):
        xlsx = folder / f"{stem}_src.xlsx"
        assert main(["new", kind, "-o", str(xlsx)]) == 0
        out[kind] = (xlsx, make_macro_workbook(xlsx, folder / f"{stem}.xlsm", kind))
    return out


def _sheet_parts(z: zipfile.ZipFile) -> dict[str, str]:
    wb = etree.fromstring(z.read("xl/workbook.xml"))
    rels = etree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target") for r in rels}
    out = {}
    for sheet in wb.iterfind(".//m:sheet", NS):
        target = targets[sheet.get(R_ID)]
        out[sheet.get("name")] = target.lstrip("/") if target.startswith("/") else "xl/" + target
    return out


def buttons(z: zipfile.ZipFile, sheet_part: str) -> list[tuple[str, str]]:
    """(caption, macro) of every form button in the sheet's legacy drawing."""
    root = etree.fromstring(z.read(sheet_part))
    legacy = root.find("m:legacyDrawing", NS)
    if legacy is None:
        return []
    rels_part = re.sub(r"([^/]+)$", r"_rels/\1.rels", sheet_part)
    rels = {r.get("Id"): r.get("Target") for r in etree.fromstring(z.read(rels_part))}
    target = rels[legacy.get(R_ID)]
    vml_part = (
        target.lstrip("/")
        if target.startswith("/")
        else str(Path(sheet_part).parent.joinpath(target)).replace("\\", "/")
    )
    vml_part = re.sub(r"[^/]+/\.\./", "", vml_part)
    vml = etree.fromstring(z.read(vml_part))
    out = []
    for shape in vml.iter("{urn:schemas-microsoft-com:vml}shape"):
        data = shape.find("x:ClientData", NS)
        if data is not None and data.get("ObjectType") == "Button":
            caption = "".join(shape.find("v:textbox", NS).itertext())
            out.append((caption, data.findtext("x:FmlaMacro", namespaces=NS)))
    return out


def test_vba_project_is_the_installed_templates_byte_for_byte(made):
    for _, result in made.values():
        with zipfile.ZipFile(result.xlsm_path) as z:
            assert z.read("xl/vbaProject.bin") == template_vba()
            assert z.testzip() is None


def test_content_types_rels_and_code_names(made):
    _, result = made["collab"]
    with zipfile.ZipFile(result.xlsm_path) as z:
        ct = etree.fromstring(z.read("[Content_Types].xml"))
        overrides = {o.get("PartName"): o.get("ContentType") for o in ct.iterfind("ct:Override", NS)}
        assert overrides["/xl/workbook.xml"] == "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
        assert overrides["/xl/vbaProject.bin"] == "application/vnd.ms-office.vbaProject"
        assert any(d.get("Extension") == "vml" for d in ct.iterfind("ct:Default", NS))
        rels = etree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        assert [
            r.get("Target")
            for r in rels
            if r.get("Type") == "http://schemas.microsoft.com/office/2006/relationships/vbaProject"
        ] == ["vbaProject.bin"]
        wb = etree.fromstring(z.read("xl/workbook.xml"))
        assert wb.find("m:workbookPr", NS).get("codeName") == "ThisWorkbook"
        parts = _sheet_parts(z)
        for part in parts.values():
            assert "/" + part in overrides  # every sheet has its content type
        names = list(parts)
        assert names[-1] == "xlwings.conf"
        codes = [etree.fromstring(z.read(parts[n])).find("m:sheetPr", NS).get("codeName") for n in names]
        assert codes == [f"Sheet{i}" for i in range(1, len(names) + 1)]


def test_untouched_parts_are_byte_identical(made):
    xlsx, result = made["graddesc"]
    edited = {"[Content_Types].xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels"}
    with zipfile.ZipFile(xlsx) as before, zipfile.ZipFile(result.xlsm_path) as after:
        after_names = set(after.namelist())
        for name in before.namelist():
            assert name in after_names
            if name in edited or name.startswith("xl/worksheets/") or name.endswith(".vml"):
                continue
            assert before.read(name) == after.read(name), name  # charts, drawings, styles untouched


def test_buttons_on_collab_sheets_run_samplecall(made):
    _, result = made["collab"]
    with zipfile.ZipFile(result.xlsm_path) as z:
        parts = _sheet_parts(z)
        for sheet in ("dotprod", "bias"):
            assert buttons(z, parts[sheet]) == [("Fit with Python", SAMPLE_CALL)]
        assert buttons(z, parts["xlwings.conf"]) == []
        # the generator's comment boxes (movie titles) are kept next to the button in the same drawing
        vml = [n for n in z.namelist() if n.endswith(".vml")]
        notes = [n for n in vml if b'ObjectType="Note"' in z.read(n)]
        assert notes, "the generator writes movie titles as comments"
        assert all(b'ObjectType="Button"' in z.read(n) for n in notes)
    assert set(result.buttons) == {"dotprod", "bias"}


def test_graddesc_buttons_one_step_five_steps_reset(made):
    _, result = made["graddesc"]
    with zipfile.ZipFile(result.xlsm_path) as z:
        parts = _sheet_parts(z)
        for sheet in ("basic", "momentum", "rmsprop", "adam", "adam_ann"):
            assert buttons(z, parts[sheet]) == [
                ("One step", SAMPLE_CALL),
                ("Five steps", "'RunPython \"import graddesc; graddesc.step5()\"'"),
                ("Reset", "'RunPython \"import graddesc; graddesc.reset()\"'"),
            ]
        assert buttons(z, parts["data"]) == []


def test_xlwings_conf_sheet(made):
    import openpyxl

    _, result = made["collab"]
    wb = openpyxl.load_workbook(result.xlsm_path, keep_vba=True)
    ws = wb["xlwings.conf"]
    conf = {}
    row = 1
    while ws.cell(row, 1).value:  # RunPython reads A1 downwards until the first blank key
        conf[ws.cell(row, 1).value] = ws.cell(row, 2).value
        row += 1
    assert conf["UDF Modules"] == "xlcf.udfs"
    for key in ("Interpreter_Win", "Interpreter_Mac", "PYTHONPATH", "Conda Path", "Conda Env"):
        assert key in conf
    assert "LICENSE_KEY" not in {k.upper() for k in conf}  # the package never sets a key


def test_py_beside_the_workbook_calls_the_macros(made):
    for _kind, (_, result) in made.items():
        assert result.py_path == result.xlsm_path.with_suffix(".py") and result.py_path.exists()
        tree = ast.parse(result.py_path.read_text())
        functions = {node.name: ast.unparse(node) for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {"main", "fit", "step", "step5", "reset", "train"} <= set(functions)
        assert "macros.main(xw.Book.caller())" in functions["main"]
        assert "macros.step(xw.Book.caller(), passes=5)" in functions["step5"]


@pytest.mark.parametrize(
    "name, message", [("collab-filter.xlsm", "Python identifier"), ("collab_filter.xlsx", "must end in .xlsm")]
)
def test_bad_output_names(made, tmp_path, name, message):
    xlsx, _ = made["collab"]
    with pytest.raises(WorkbookError, match=message):
        make_macro_workbook(xlsx, tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_refuses_a_workbook_that_already_has_vba(made, tmp_path):
    _, result = made["collab"]
    with pytest.raises(WorkbookError, match="already holds a VBA project"):
        make_macro_workbook(result.xlsm_path, tmp_path / "again.xlsm")


def test_cli_new_collab_xlsm(tmp_path):
    from xlcf.cli import main

    out = tmp_path / "collab_filter.xlsm"
    assert main(["new", "collab", "--xlsm", "-o", str(out)]) == 0
    assert out.exists() and (tmp_path / "collab_filter.py").exists()
    with zipfile.ZipFile(out) as z:
        assert z.read("xl/vbaProject.bin") == template_vba()


@pytest.mark.libreoffice
@pytest.mark.slow
def test_libreoffice_opens_the_macro_workbooks(made, libreoffice):
    results = libreoffice(made["collab"][1].xlsm_path, made["graddesc"][1].xlsm_path)
    collab, graddesc = results
    assert collab.value("xlwings.conf", "A6") == "UDF Modules" and collab.value("xlwings.conf", "B6") == "xlcf.udfs"
    # the live formulas still compute: the RMSE cell (V42 of the generated layout) holds a finite number
    formulas = [c for c in collab.sheets["dotprod"].values() if isinstance(c.get("f"), str) and c["f"]]
    assert formulas and all(isinstance(c["v"], (float, int)) for c in formulas if "MMULT" in c["f"].upper())
    assert "adam" in graddesc.sheets and "xlwings.conf" in graddesc.sheets


def test_cli_new_movielens_xlsm_has_a_train_button(tmp_path):
    from xlcf.cli import main

    out = tmp_path / "movielens.xlsm"
    assert main(["new", "movielens", "--xlsm", "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as z:
        parts = _sheet_parts(z)
        assert buttons(z, parts["movielens"]) == [("Train", SAMPLE_CALL)]
        assert all(buttons(z, part) == [] for name, part in parts.items() if name != "movielens")
    assert "macros.train(xw.Book.caller())" in (tmp_path / "movielens.py").read_text()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_cli_new_xlsm_files_get_the_usual_permissions(tmp_path, mask):
    """The .xlsm and its .py are new files: 0o666 & ~umask, like the .xlsx path (not mkstemp's 0600)."""
    from xlcf.cli import main

    old = os.umask(mask)
    try:
        assert main(["new", "movielens", "--xlsm", "-o", str(tmp_path / "ml.xlsm")]) == 0
        assert main(["new", "graddesc", "--xlsm", "-o", str(tmp_path / "gd.xlsm")]) == 0
    finally:
        os.umask(old)
    for name in ("ml.xlsm", "ml.py", "gd.xlsm", "gd.py"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gd.py", "gd.xlsm", "ml.py", "ml.xlsm"]  # no temp left
