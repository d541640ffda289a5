"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver: nothing
is downloaded (Selenium Manager is never asked, as the driver's path is given).

scripts/test.sh installs `chromium chromium-driver`; elsewhere `missing()` says why
the browser tests cannot run.
"""

from __future__ import annotations

import shutil

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait


def missing() -> str | None:
    """Why no headless Chromium can be driven here; None when it can."""
    absent = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    if absent:
        return (
            f"{' and '.join(absent)} not on PATH "
            "(Debian's chromium and chromium-driver packages; scripts/test.sh installs them)"
        )
    return None


def headless_chromium(
    *, javascript: bool = True, width: int = 1500, height: int = 900
) -> webdriver.Chrome:
    """A headless Chromium; `javascript=False` turns scripting off, as a reader who
    blocks it has it."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )


def click_probe(browser: webdriver.Chrome, target: str) -> None:
    """A real click on the target's "Run probe" button. A refresh may swap the button
    for a new one between finding and clicking it: then the new one is clicked."""
    for _ in range(10):
        try:
            browser.find_element(By.CSS_SELECTOR, f'a.probe[data-target="{target}"]').click()
        except StaleElementReferenceException:
            continue
        return
    raise AssertionError("the probe button was swapped ten times in a row")


def probe_from_the_page(browser: webdriver.Chrome, target: str) -> WebElement:
    """Click the target's button until a run is answered; that run's block in the page.
    A scheduled run holding the target's no-overlap guard answers 409: the page shows
    that too, and the button is clicked again."""
    for attempt in range(1, 21):
        click_probe(browser, target)

        def answered(b: webdriver.Chrome, k: int = attempt) -> bool:
            return len(b.find_elements(By.CSS_SELECTOR, ".probe-run.done")) >= k

        WebDriverWait(browser, 60).until(answered)
        newest = browser.find_element(By.CSS_SELECTOR, "#probe-output .probe-run")
        if "HTTP 409" not in newest.find_element(By.TAG_NAME, "h3").text:
            return newest
    raise AssertionError("every probe from the page found the target busy")
