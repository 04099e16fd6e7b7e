"""Regenerate every screenshot in docs/img from the workbooks xlcf makes, rendered by headless LibreOffice.

    python3 docs/make_figures.py [--ratings PATH]

Builds the lesson's books (`xlcf demo`: both collab sheets fitted, every gradient-descent sheet stepped) and, when
ratings are available (``--ratings`` or ../shared/data/ml-latest-small), trains a movielens book; then prints each
sheet alone to PDF (a copy of the book with the other sheets hidden) and keeps its first page as PNG. Needs
LibreOffice (soffice) and poppler-utils (pdftoppm). Nothing in docs/img is drawn by hand, so a screenshot can never
show what the code no longer does."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lxml import etree

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

from tests.helpers.render import to_pdf, to_png  # noqa: E402

NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
SHEETS = {
    "collab_filter": ["dotprod", "bias"],
    "graddesc": ["data", "basic", "adam"],
    "movielens": [
        "movielens",
        "history",
        "movie_bias",
        "movie_pca",
        "recommend",
        "pred_vs_actual",
        "crosstab",
        "embeddings",
    ],
}


def only_sheet(book: Path, sheet: str, out: Path) -> Path:
    """A copy of ``book`` in which ``sheet`` is the only visible (and the active) sheet."""
    with zipfile.ZipFile(book) as zin:
        root = etree.fromstring(zin.read("xl/workbook.xml"))
        sheets = root.find(f"{{{NS}}}sheets")
        names = [el.get("name") for el in sheets]
        for el in sheets:
            if el.get("name") == sheet:
                el.attrib.pop("state", None)
            else:
                el.set("state", "hidden")
        view = root.find(f"{{{NS}}}bookViews/{{{NS}}}workbookView")
        if view is not None:
            view.set("activeTab", str(names.index(sheet)))
            view.set("firstSheet", str(names.index(sheet)))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == "xl/workbook.xml":
                    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
                zout.writestr(info, data)
    out.write_bytes(buf.getvalue())
    return out


def xlcf(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "xlcf", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", help="ratings for the movielens book (default ../shared/data/ml-latest-small)")
    parser.add_argument("--out", default=str(DOCS / "img"), help="where the PNGs go (default docs/img)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ratings = Path(args.ratings) if args.ratings else REPO.parent / "shared" / "data" / "ml-latest-small"
    with tempfile.TemporaryDirectory(prefix="xlcf-docs-") as tmp:
        work = Path(tmp)
        xlcf("demo", "-o", str(work))
        books = {"collab_filter": work / "collab_filter.xlsx", "graddesc": work / "graddesc.xlsx"}
        if ratings.exists():
            xlcf("train", str(ratings), "--out", str(work / "movielens.xlsx"), "--quiet")
            books["movielens"] = work / "movielens.xlsx"
        else:
            print(f"no ratings at {ratings}: the movielens screenshots are left as they are", file=sys.stderr)
        for stem, book in books.items():
            for sheet in SHEETS[stem]:
                single = only_sheet(book, sheet, work / f"{stem}-{sheet}.xlsx")
                pdf = to_pdf(single, work)
                for old in out.glob(f"{stem}-{sheet}-*.png"):
                    old.unlink()
                pages = to_png(pdf, work / f"{stem}-{sheet}", dpi=80, first=1, last=1)
                target = out / f"{stem}-{sheet}.png"
                target.write_bytes(pages[0].read_bytes())
                print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
