"""A folder of cards as a leaderboard: markdown, and a static HTML page that a real headless browser loads, sorts and
shows the robust-accuracy-vs-energy plot of."""

import shutil

import pytest

from srsnn.export.card import Card
from srsnn.report import leaderboard

BROWSER = "needs a browser: apt-get install chromium chromium-driver (and pip's selenium, in .[test])"


def _card(worst: float, energy: float, sparsity: float) -> Card:
    return Card(
        model={"weights_sha256": "0" * 64, "kind": "snn", "sparsity": sparsity, "stored_bytes": 1000},
        data={"num_samples": 10, "images_sha256": "1" * 64},
        threat_model={"norm": "Linf", "epsilons": [0.1]},
        evaluation={"passes_per_sample": {"forward": 100.0, "backward": 50.0}},
        eps={"0.1": {"clean_acc": 0.9, "worst": worst, "converged": True, "broken": 1, "robust": 8}},
        samples=[],
        examples={"count": 1},
        energy={"energy_uj_per_sample": energy, "synops_per_sample": 1e4},
    )


@pytest.fixture
def board(tmp_path):
    runs = {"dense": (0.6, 0.02, 0.0), "hydra90": (0.5, 0.003, 0.9), "lwm99": (0.1, 0.0005, 0.99)}
    for name, (w, e, s) in runs.items():
        (tmp_path / "cards" / name / "evaluation").mkdir(parents=True)
        _card(w, e, s).write(str(tmp_path / "cards" / name / "evaluation" / "card.json"))
    md, page, n = leaderboard.write([str(tmp_path / "cards")], str(tmp_path / "out"), "Test board")
    return md, page, n


def test_the_markdown_lists_every_card_best_first(board):
    md, _, n = board
    text = open(md).read()
    assert n == 3 and text.index("| dense |") < text.index("| hydra90 |") < text.index("| lwm99 |")
    assert "| 60.0 |" in text and "150" in text  # worst case in %, passes per sample


def test_the_html_page_loads_sorts_and_shows_the_plot_in_a_browser(board):
    webdriver = pytest.importorskip("selenium.webdriver", reason=BROWSER)
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not (chrome and driver_path):
        pytest.skip(BROWSER)
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        driver.get("file://" + board[1])
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
        models = lambda: [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows()]
        assert sorted(models()) == ["dense", "hydra90", "lwm99"]
        headers = {h.text: h for h in driver.find_elements(By.CSS_SELECTOR, "#board th")}
        headers["energy µJ/sample (estimate)"].click()  # first click: largest first
        assert models() == ["dense", "hydra90", "lwm99"]
        headers["energy µJ/sample (estimate)"].click()
        assert models() == ["lwm99", "hydra90", "dense"]
        headers["sparsity %"].click()
        assert models() == ["lwm99", "hydra90", "dense"]
        headers["worst case ε=0.1 %"].click()
        assert models() == ["dense", "hydra90", "lwm99"]
        plot = driver.find_element(By.ID, "plot")
        assert plot.is_displayed() and len(plot.find_elements(By.CSS_SELECTOR, "circle.point")) == 3
    finally:
        driver.quit()
