"""Sphinx configuration of varshift's documentation site.

Build it from the repository's root folder::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

Nothing is executed while building: the notebooks are rendered with the outputs they were
stored with, and the figures are the committed ones in ``figures/``.
"""

import json
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this checkout's varshift, installed or not

import varshift  # noqa: E402  (after the path is set)

# The gallery page is written from figures/ at each build, so that it lists every figure
# the reproduction wrote, with its current caption (the images are referenced where they
# are, not copied). A caption starts with its title in bold: the title becomes the heading.
GALLERY_INTRO = """# Gallery of the paper's figures

Every figure of the full reproduction run, as `varshift reproduce` wrote it into `figures/`
(three architectures on MNIST-1D, 5 paired seeds), with its caption; beside each PNG the
repository holds an SVG and the figure's numbers as JSON. The claims each figure bears on,
and their verdicts, are in the [report](figures/REPORT.md); the [case studies](case-studies.md)
have their own figures. This page is generated from `figures/` by `docs/conf.py`.
"""


def _figure_order(caption):
    number, _, rest = caption.name.removeprefix("fig").partition("_")
    return int(number), rest


def _write_gallery():
    parts = [GALLERY_INTRO]
    for caption in sorted((ROOT / "figures").glob("fig*.caption.md"), key=_figure_order):
        stem = caption.name.removesuffix(".caption.md")
        text = caption.read_text(encoding="utf-8").strip()
        title, separator, body = text.removeprefix("**").partition(".** ")
        if not (text.startswith("**") and separator):
            raise ValueError(f"{caption} should start with its title in bold: **Title.**")
        parts.append(f"## {title}\n\n![{title}](../figures/{stem}.png)\n\n"
                     f"{body}\n\n`figures/{stem}` (.png, .svg, .json)\n")
    text = "\n".join(parts)
    path = DOCS / "gallery.md"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


_write_gallery()


# Pages kept beside what they describe (the README of benchmarks/, the report beside its
# figures) are copied in, with their relative links and images rewritten to point from the
# copy to the same files: a link to a script becomes a download, a link to a file that is
# a page of this site that page. The copies are ignored by git.
COPIED_PAGES = {"benchmarks.md": "benchmarks/README.md", "changelog.md": "CHANGELOG.md",
                "figures/REPORT.md": "figures/REPORT.md"}
# files of the repository that are pages of this site under another name
SITE_PAGES = {"README.md": "index.md", "notebooks/README.md": "notebooks/README.md",
              **{source: page for page, source in COPIED_PAGES.items()}}
RELATIVE_LINK = re.compile(r"(\]\()(?![a-z][a-z0-9+.-]*:|#|/)([^)\s\"\\]+)")


def _rewritten(target, source, page):
    """``target``, a link relative to the repository file ``source``, made relative to the
    site's page ``page`` (both paths relative to their roots)."""
    path, hash_, fragment = target.partition("#")
    in_repository = os.path.normpath(os.path.join(os.path.dirname(source), path))
    in_repository = in_repository.replace(os.sep, "/")
    if in_repository in SITE_PAGES:
        in_site = DOCS / SITE_PAGES[in_repository]
    elif in_repository.startswith("notebooks/") and in_repository.endswith(".ipynb"):
        in_site = DOCS / in_repository  # the course is copied in (above)
    else:
        in_site = ROOT / in_repository
    path = os.path.relpath(in_site, (DOCS / page).parent).replace(os.sep, "/")
    return path + hash_ + fragment


def _copy_page(source, page, extra=""):
    def rewrite(markdown):
        return RELATIVE_LINK.sub(lambda m: m[1] + _rewritten(m[2], source, page), markdown)

    text = (ROOT / source).read_text(encoding="utf-8")
    if source.endswith(".ipynb"):  # links are rewritten in the markdown cells only
        notebook = json.loads(text)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = rewrite("".join(cell["source"]))
        text = json.dumps(notebook, ensure_ascii=False, indent=1) + "\n"
    else:
        text = rewrite(text) + extra
    path = DOCS / page
    path.parent.mkdir(exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")  # an unchanged copy keeps its time


# The course lives in notebooks/, outside this source folder, and Sphinx reads documents
# only inside it (a symbolic link is resolved to its target, which breaks the notebooks'
# links to one another), so the notebooks and the course's README are copied into
# docs/notebooks/ as well, with a hidden table of contents under the README.
def _copy_course():
    notebooks = sorted(path.name for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for stale in (DOCS / "notebooks").glob("*.ipynb"):  # renamed or removed since the last build
        if stale.name not in notebooks:
            stale.unlink()
    for name in notebooks:
        _copy_page(f"notebooks/{name}", f"notebooks/{name}")
    entries = "\n".join(Path(name).stem for name in notebooks)
    _copy_page("notebooks/README.md", "notebooks/README.md",
               extra=f"\n```{{toctree}}\n:hidden:\n\n{entries}\n```\n")


for _page, _source in COPIED_PAGES.items():
    _copy_page(_source, _page)
_copy_course()

project = "varshift"
author = "the varshift developers"
copyright = "2026, the varshift developers"
release = varshift.__version__
version = release

extensions = [
    "myst_nb",                      # Markdown pages (myst-parser) and stored notebooks
    "numpydoc",                     # the docstrings are numpydoc
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",       # MathJax served from the site: math renders offline
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# Stored notebooks are rendered as they are: never executed while building.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
templates_path = ["_templates"]  # module pages document their members (module.rst)
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False}
# varshift.keras and varshift.lightning subclass their framework's callback: the build
# documents them without Keras, Lightning or PyTorch installed
autodoc_mock_imports = ["keras", "lightning", "pytorch_lightning", "torch"]
# numpydoc writes each class's method table itself; autosummary must not add a second one
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = f"varshift {release}"
html_static_path = ["_static"]
html_css_files = ["varshift.css"]
# pages without sub-pages need no section navigation on the left
html_sidebars = {page: [] for page in ("index", "getting-started", "benchmarks", "changelog")}
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
