"""``llmgen gallery``: every catalog model is either on the page (table row and card) or listed
as not yet compiled; the page is self-contained; in headless Chromium it renders, its table
sorts when a heading is clicked, and a screenshot is non-empty."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmgen.compiler.coverage import coverage
from llmgen.compiler.catalog import catalog_entries
from llmgen.compiler.cli import main
from llmgen.compiler.errors import LlmgenError
from llmgen.compiler.gallery import build_gallery
from llmgen.compiler.load import load_config
from llmgen.compiler.lowering import lower
from llmgen.compiler.validate import validate

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]


def compiles(path: Path) -> bool:
    try:
        validate(lower(load_config(str(path), prefer="path").raw))
        return True
    except LlmgenError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    page, compiled, skipped = build_gallery(out)
    return page, compiled, skipped


class Rows(HTMLParser):
    """Collect the first cell's data-sort of every table row, and every element id."""

    def __init__(self):
        super().__init__()
        self.models, self.ids, self._row_start = [], set(), False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "tr":
            self._row_start = True
        elif tag == "td" and self._row_start:
            self.models.append(attrs.get("data-sort"))
            self._row_start = False


def test_every_catalog_model_is_accounted_for(site):
    page, compiled, skipped = site
    html = page.read_text()
    parser = Rows()
    parser.feed(html)
    expected = [entry.id for entry in catalog_entries() if compiles(entry.path)]
    assert parser.models == expected and compiled == len(expected)
    not_yet = [row.model_type for row in coverage()[0] if not row.compiles]  # transformers' other decoders
    assert skipped == len(catalog_entries()) - compiled + len(not_yet)
    assert all(f"<code>{model_type}</code>" in html.split('id="skipped"')[1] for model_type in not_yet)
    for entry in catalog_entries():
        if entry.id not in expected:
            assert f"<code>{entry.id}</code>" in html.split('id="skipped"')[1], entry.id
    assert compiled >= 8 and "SSSSSF×3" in html


def test_page_is_self_contained(site):
    html = site[0].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html), "only in-page links are allowed"
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert html.count("<style>") == 1 and html.count("<script>") == 1


def test_cli(tmp_path, capsys):
    assert main(["gallery", "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()
    assert "models compiled" in capsys.readouterr().out
    (tmp_path / "file").write_text("")
    assert main(["gallery", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith("llmgen: error: --out ")


def _browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver; .ci/run does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the 'test' extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def _column(driver, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#models tbody tr'))"
        ".map(r => r.cells[arguments[0]].getAttribute('data-sort'));", index)


def test_renders_and_sorts_in_headless_chromium(site, tmp_path):
    page, compiled, _ = site
    driver = _browser(tmp_path)
    try:
        driver.get(page.as_uri())
        assert driver.title == "llmgen gallery"
        headings = driver.find_elements("css selector", "#models thead th")
        names = [h.text for h in headings]
        params, kv, model = names.index("params"), names.index("KV bytes / token (bf16)"), names.index("model")
        assert len(driver.find_elements("css selector", "#models tbody tr")) == compiled

        headings[params].click()
        values = [int(v) for v in _column(driver, params)]
        assert values == sorted(values) and headings[params].get_attribute("aria-sort") == "ascending"
        headings[params].click()
        assert [int(v) for v in _column(driver, params)] == sorted(values, reverse=True)
        assert headings[params].get_attribute("aria-sort") == "descending"

        headings[kv].click()
        kv_values = [int(v) for v in _column(driver, kv)]
        assert kv_values == sorted(kv_values) and headings[params].get_attribute("aria-sort") is None
        headings[model].click()
        ids = _column(driver, model)
        assert ids == sorted(ids, key=str.lower)

        strips = driver.find_elements("css selector", ".strip i")
        assert strips and strips[0].size["width"] > 0, "pattern strips are drawn"
        png = driver.get_screenshot_as_png()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        (tmp_path / "gallery.png").write_bytes(png)
    finally:
        driver.quit()


def test_chromium_dump_dom(site, tmp_path):
    """The plain command line the CI image has: the page's script runs without errors."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver; .ci/run does it)")
    if shutil.which("timeout") is None:
        pytest.skip("no timeout command")
    run = subprocess.run(
        ["timeout", "120", str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         site[0].as_uri()], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'id="models"' in run.stdout and run.stdout.count("<tr>") == site[1] + 1
