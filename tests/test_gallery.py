"""``llmgen gallery``: every catalog model is either on the page (table row and card) or listed
as not yet compiled; the page is self-contained; in headless Chromium it renders, its table
sorts when a heading is clicked, and a screenshot is non-empty."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.insight.coverage import coverage
from llmgen.compiler.basics.catalog import catalog_entries
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.insight.gallery import build_gallery
from llmgen.compiler.passes.load import load_config
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate

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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"], "no script errors while sorting"
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
    assert 'id="models"' in run.stdout and run.stdout.count("<tr") == site[1] + 1


class Page(HTMLParser):
    """Rows' chart data, the cards holding a diagram, the legend's letters."""

    def __init__(self):
        super().__init__()
        self.rows, self.card_diagrams, self.legend = {}, set(), []
        self._card = None
        self._in_legend = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-kv" in attrs:
            self.rows[attrs["data-id"]] = attrs
        if tag == "section" and "card" in attrs.get("class", ""):
            self._card = attrs["id"]
        if tag == "svg" and attrs.get("class") == "lgd" and self._card:
            self.card_diagrams.add(self._card)
        if tag == "div" and attrs.get("id") == "legend":
            self._in_legend = True
        if tag == "i" and self._in_legend:
            self.legend.append(attrs["class"].removeprefix("lgk-"))

    def handle_endtag(self, tag):
        if tag == "div":
            self._in_legend = False


def _page(site) -> Page:
    parser = Page()
    parser.feed(site[0].read_text())
    return parser


def test_every_card_has_a_diagram_and_the_legend_covers_every_letter(site):
    page = _page(site)
    assert len(page.rows) == site[1] and len(page.card_diagrams) == site[1]
    assert {row["data-anchor"] for row in page.rows.values()} == page.card_diagrams
    letters = {letter for entry in catalog_entries() if compiles(entry.path)
               for letter in card(load_model(entry.id))["pattern"]["letters"]}
    assert sorted(page.legend) == sorted(letters) and {"S", "F", "A", "M", "f"} <= letters


def test_recurrent_models_show_their_state(site):
    """A hybrid row shows its constant recurrent state beside the KV bytes per token (Nemotron-3 Nano: Mamba-2)."""
    from llmgen.compiler.insight.card import human_bytes

    text = site[0].read_text()
    data = card(load_model("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"))
    state = human_bytes(data["kv_cache"]["recurrent_bytes_per_sequence"])
    assert f"+ {state} state" in text and "M = Mamba-2 (state space)" in text


def test_chart_series_are_the_card_figures(site):
    """The chart's bytes at 4k / 32k / 128k are the card's "KV at length"; flat once every window is full."""
    for hub_id, row in _page(site).rows.items():
        points = dict(json.loads(row["data-kv"]))
        assert min(points) == 1024 and max(points) == 2**20
        kv = card(load_model(hub_id))["kv_cache"]["effective_bytes_bf16"]
        assert [points[4096], points[32768], points[131072]] == [kv["4k"], kv["32k"], kv["128k"]], hub_id
        values = [points[t] for t in sorted(points)]
        assert values == sorted(values), hub_id
        ctx = int(row["data-ctx"])
        assert ctx in points or not 1024 <= ctx <= 2**20


def _visible_rows(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#models tbody tr'))"
                                 ".filter(r => r.offsetParent !== null).map(r => r.getAttribute('data-id'));")


def _chart_lines(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#kvchart g.series'))"
                                 ".filter(g => g.querySelector('polyline')).map(g => g.getAttribute('data-model'));")


def _picked(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#models tbody tr'))"
                                 ".filter(r => r.querySelector('input.pick').checked)"
                                 ".map(r => r.getAttribute('data-id'));")


def test_chart_filter_and_diagram_in_headless_chromium(site, tmp_path):
    page, compiled, _ = site
    driver = _browser(tmp_path)
    try:
        driver.get(page.as_uri())
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
        picked = _picked(driver)
        assert 2 <= len(picked) < compiled and _chart_lines(driver) == picked
        # untick one, tick two others: one line per ticked model
        boxes = driver.find_elements("css selector", "#models tbody tr input.pick")
        ids = [box.find_element("xpath", "./ancestor::tr").get_attribute("data-id") for box in boxes]
        boxes[ids.index(picked[0])].click()
        others = [i for i, hub_id in enumerate(ids) if hub_id not in picked][:2]
        for i in others:
            boxes[i].click()
        now = _picked(driver)
        assert len(now) == len(picked) + 1 and picked[0] not in now
        assert sorted(_chart_lines(driver)) == sorted(now)
        assert driver.execute_script("return document.querySelectorAll('#kvkey li').length") == len(now)
        chart = driver.find_element("css selector", ".chart")
        driver.execute_script("arguments[0].scrollIntoView()", chart)
        (tmp_path / "chart.png").write_bytes(chart.screenshot_as_png)

        # filter: only matching rows (and their cards) stay visible
        box = driver.find_element("id", "filter")
        box.send_keys("gemma")
        visible = _visible_rows(driver)
        assert visible and len(visible) < compiled and all("gemma" in v.lower() for v in visible)
        hidden_card = driver.execute_script("return document.getElementById('m-meta-llama-llama-3-2-1b').offsetParent")
        assert hidden_card is None
        assert driver.find_element("id", "shown").text == f"{len(visible)} of {compiled} shown"
        box.clear()
        box.send_keys(" ")
        driver.execute_script("var f = document.getElementById('filter'); f.value = '';"
                              "f.dispatchEvent(new Event('input'));")
        assert len(_visible_rows(driver)) == compiled

        diagram = driver.find_element("css selector", "#m-google-gemma-3-1b-it svg.lgd")
        driver.execute_script("arguments[0].scrollIntoView()", diagram)
        assert diagram.size["width"] > 400 and diagram.size["height"] > 600
        png = diagram.screenshot_as_png
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        (tmp_path / "diagram.png").write_bytes(png)
        assert (tmp_path / "chart.png").stat().st_size > 20_000
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
