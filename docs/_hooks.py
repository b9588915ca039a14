"""MkDocs hooks: bring the files that live outside `docs/` into the site.

- The tutorial notebooks live in `notebooks/` (stored without outputs, executed by
  `tests/test_notebooks.py`). Each becomes a page `notebooks/<name>.ipynb`, listed
  in the navigation under "Notebooks" and on `notebooks/index.md`. When the test run
  wrote executed copies to `$EQRNN_NOTEBOOK_OUTPUT_DIR`, the pages show those, with
  their outputs; otherwise they show the stored notebooks (inputs only). The docs
  build itself never executes a notebook.
- `BENCHMARKS.md`, where it exists, is shown on the Benchmarks page (in place of the
  `<!-- BENCHMARKS.md -->` marker), with the images it links to.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mkdocs.plugins
from mkdocs.structure.files import File, Files


log = logging.getLogger("mkdocs.hooks.eqrnn")

NOTEBOOK_OUTPUT_ENV = "EQRNN_NOTEBOOK_OUTPUT_DIR"
BENCHMARKS_MARKER = "<!-- BENCHMARKS.md -->"
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img[^>]*\ssrc=\"([^\"]+)\"")
# Relative links from BENCHMARKS.md to files that are pages of the site.
_PAGES = {"README.md": "index.md", "CHANGELOG.md": "changelog.md"}
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _unlink_repository_file(match: re.Match[str], files: Files) -> str:
    """A link from BENCHMARKS.md to a file of the repository that is not part of the
    site (e.g. `benchmarks/bench.py`) keeps its text and loses its target, which would
    not resolve on the site."""
    target = match.group(2)
    if "://" in target or target.startswith(("/", "mailto:")):
        return match.group(0)
    if files.get_file_from_path(target) is not None:
        return match.group(0)
    return match.group(1)


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _notebooks(config: Any) -> list[Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def _title(path: Path) -> str:
    """The notebook's first Markdown heading, else its file name."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        for line in source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


def _sources(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
    ]


def _rendered_copy(stored: Path) -> Path:
    """The executed copy of `stored` if the test run left one, else `stored`."""
    folder = os.environ.get(NOTEBOOK_OUTPUT_ENV)
    if not folder:
        log.info(
            "%s: $%s is not set; showing the stored notebook (no outputs).",
            stored.name,
            NOTEBOOK_OUTPUT_ENV,
        )
        return stored
    executed = Path(folder) / stored.name
    if not executed.is_file():
        # A warning, so that `mkdocs build --strict` fails: the reader was promised
        # the outputs of the test run.
        log.warning(
            "%s: $%s=%s holds no executed copy of it; run the notebook tests with "
            "that variable set first, or unset it to show the stored notebook.",
            stored.name,
            NOTEBOOK_OUTPUT_ENV,
            folder,
        )
        return stored
    if _sources(executed) != _sources(stored):
        log.warning(
            "%s: the executed copy in %s is stale (its cells differ from the stored "
            "notebook); run the notebook tests again.",
            stored.name,
            folder,
        )
        return stored
    return executed


def on_config(config: Any) -> Any:
    """List every notebook under the "Notebooks" section of the navigation."""
    entries = [{_title(path): f"notebooks/{path.name}"} for path in _notebooks(config)]
    for item in config.nav or []:
        if isinstance(item, dict) and isinstance(item.get("Notebooks"), list):
            item["Notebooks"].extend(entries)
            break
    else:
        raise ValueError("mkdocs.yml: the nav needs a 'Notebooks' section (a list).")
    return config


_staging: tempfile.TemporaryDirectory | None = None


# Before mkdocs-jupyter's own `on_files`, so that it takes these for notebook pages.
@mkdocs.plugins.event_priority(50)
def on_files(files: Files, config: Any) -> Files:
    global _staging
    # mkdocs-jupyter reads a page's notebook from `src_dir / src_uri`, so each one is
    # staged as `<staging>/notebooks/<name>.ipynb` (a copy of the stored notebook or
    # of its executed copy) and added as an ordinary file of that folder.
    if _staging is not None:
        _staging.cleanup()
    _staging = tempfile.TemporaryDirectory(prefix="eqrnn-docs-")
    staged = Path(_staging.name) / "notebooks"
    staged.mkdir()
    for path in _notebooks(config):
        shutil.copyfile(_rendered_copy(path), staged / path.name)
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=_staging.name,
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    benchmarks = _root(config) / "BENCHMARKS.md"
    if benchmarks.is_file():
        for match in _IMAGE.finditer(benchmarks.read_text(encoding="utf-8")):
            link = match.group(1) or match.group(2)
            if "://" in link or link.startswith("/"):
                continue
            image = (_root(config) / link).resolve()
            if image.is_file() and files.get_file_from_path(link) is None:
                files.append(File.generated(config, link, abs_src_path=str(image)))
    return files


def on_post_build(config: Any) -> None:
    global _staging
    if _staging is not None:
        _staging.cleanup()
        _staging = None


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """`mkdocs serve` rebuilds when a notebook or BENCHMARKS.md changes."""
    for path in (_root(config) / "notebooks", _root(config) / "BENCHMARKS.md"):
        if path.exists():
            server.watch(str(path))
    return server


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri == "notebooks/index.md":
        lines = [f"- [{_title(path)}]({path.name})" for path in _notebooks(config)]
        return markdown.rstrip() + "\n\n" + ("\n".join(lines) or "(None yet.)") + "\n"
    if page.file.src_uri == "benchmarks.md" and BENCHMARKS_MARKER in markdown:
        benchmarks = _root(config) / "BENCHMARKS.md"
        if not benchmarks.is_file():
            return markdown.replace(BENCHMARKS_MARKER, "")
        text = benchmarks.read_text(encoding="utf-8")
        text = re.sub(r"\A# [^\n]*\n", "", text)  # the page has its own title
        for source, target in _PAGES.items():
            text = re.sub(
                rf"\]\({re.escape(source)}(#[^)]*)?\)", rf"]({target}\1)", text
            )
        text = _LINK.sub(lambda m: _unlink_repository_file(m, files), text)
        return markdown.replace(BENCHMARKS_MARKER, text)
    return markdown
