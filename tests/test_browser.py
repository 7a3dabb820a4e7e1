"""The page of `python -m mnist_lit serve` in a real headless Chromium driven by Selenium: draw real test digits
with pointer moves, press Predict, read the displayed digit. Screenshots go to artifacts/browser/ (git-ignored)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import REPO
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serving import first_of_each_digit, user_drawing_png

from mnist_lit.data import load_split

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # its served model trains first


ARTIFACTS = REPO / "artifacts" / "browser"
CANVAS_SIDE = 280  # CSS px of the page's canvas: 10 px per MNIST pixel
INK = 128  # MNIST pixels at least this bright are drawn
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,760",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium through its chromedriver (installed by .ci/run), with a fresh profile."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Chromium and chromedriver not found; install them: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def ink_runs(digit: torch.Tensor) -> list[tuple[int, int, int]]:
    """Horizontal runs of ink of a uint8 (28, 28) digit: (row, first column, last column)."""
    runs = []
    for row in range(28):
        start = None
        for col in range(29):
            inked = col < 28 and int(digit[row, col]) >= INK
            if inked and start is None:
                start = col
            elif not inked and start is not None:
                runs.append((row, start, col - 1))
                start = None
    return runs


def draw(driver, canvas, digit: torch.Tensor) -> int:
    """Draw the digit on the canvas as pointer strokes: one press-move-release per ink run; returns the stroke count."""

    def offset(index: int) -> int:  # Selenium 4 offsets are from the element's centre
        return round((index + 0.5) * CANVAS_SIDE / 28 - CANVAS_SIDE / 2)

    actions = ActionChains(driver, duration=0)
    runs = ink_runs(digit.reshape(28, 28))
    for row, first, last in runs:
        actions.move_to_element_with_offset(canvas, offset(first), offset(row)).click_and_hold()
        actions.move_to_element_with_offset(canvas, offset(last), offset(row)).release()
    actions.perform()
    return len(runs)


def wait_for_answer(driver, click) -> str:
    """Run ``click()``, wait (30 s at most) until the page has an answer; return its state, "done" or "error"."""
    body = driver.find_element(By.TAG_NAME, "body")
    before = body.get_attribute("data-requests")
    click()
    WebDriverWait(driver, 30).until(lambda d: body.get_attribute("data-requests") != before)
    return body.get_attribute("data-state")


@pytest.mark.slow
def test_drawn_real_digits_are_predicted(served_model, browser, mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get(served_model["url"] + "/")
    canvas = browser.find_element(By.ID, "canvas")
    assert canvas.size == {"width": CANVAS_SIDE, "height": CANVAS_SIDE}
    results = []
    for index in first_of_each_digit(labels):
        browser.find_element(By.ID, "clear").click()
        strokes = draw(browser, canvas, images[index])
        state = wait_for_answer(browser, browser.find_element(By.ID, "predict").click)
        shown = browser.find_element(By.ID, "digit").text
        results.append((int(labels[index]), shown, state, strokes))
        browser.save_screenshot(str(ARTIFACTS / f"drawn_{int(labels[index])}.png"))
        if state == "done":  # the page shows the 28x28 image the model saw and 10 bars
            assert browser.find_element(By.ID, "seen").get_attribute("src").startswith("data:image/png;base64,")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 10
    print(f"\ndrawn digits (label, shown, state, strokes): {results}\nscreenshots: {ARTIFACTS}")
    right = sum(str(label) == shown for label, shown, _, _ in results)
    assert right >= 8, f"only {right} of 10 drawn digits predicted right: {results}"


def test_blank_canvas_shows_no_digit_found(served_model, browser):
    browser.get(served_model["url"] + "/")
    state = wait_for_answer(browser, browser.find_element(By.ID, "predict").click)
    error = browser.find_element(By.ID, "error")
    assert state == "error" and error.is_displayed() and "no digit found" in error.text
    assert browser.find_element(By.ID, "digit").text == "\u2013"


def test_uploaded_picture_is_predicted(served_model, browser, mnist_dir, tmp_path):
    images, labels = load_split(mnist_dir, "test")
    index = first_of_each_digit(labels)[4]
    picture = tmp_path / "four.png"
    picture.write_bytes(user_drawing_png(images[index]))
    browser.get(served_model["url"] + "/")
    upload = browser.find_element(By.ID, "upload")
    state = wait_for_answer(browser, lambda: upload.send_keys(str(picture)))
    assert state == "done" and browser.find_element(By.ID, "digit").text == "4"
    assert browser.find_element(By.ID, "source").text == "from four.png"
    browser.save_screenshot(str(ARTIFACTS / "uploaded_4.png"))
