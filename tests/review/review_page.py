"""The review app's page driven in Chromium (tests/browser.py): open an image, click or drag on
its pixels, press keys, and read `window.review`, the page's state for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

OPEN_SECONDS = 120
"""Opening an image embeds it: seconds on this 2-core CPU with the shipped model, generously."""
ACTION_SECONDS = 30


class ReviewPage:
    """One tab of the app at `url` (the server's root)."""

    def __init__(self, driver: Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def review(self, name: str) -> Any:
        """A property of `window.review` (timings, decodeSeconds, opens, lastDrawn, state)."""
        return self.js(f"return window.review.{name};")

    def wait(self, condition: str, seconds: float = ACTION_SECONDS) -> Any:
        """Wait until the JavaScript expression `condition` is truthy; its value."""
        return WebDriverWait(self.driver, seconds).until(lambda d: d.execute_script(f"return {condition};"))

    def open_list(self) -> list[int]:
        """Load the list view; the image ids in the table's order."""
        self.driver.get(self.url)
        self.wait("document.querySelectorAll('tr[data-image-id]').length > 0")
        return self.table_ids()

    def table_ids(self) -> list[int]:
        rows = self.driver.find_elements(By.CSS_SELECTOR, "#image-table tr[data-image-id]")
        return [int(row.get_attribute("data-image-id")) for row in rows]

    def open_image(self, image_id: int) -> dict[str, Any]:
        """Click the image's row (the list must be shown) and wait until it is embedded; its entry
        of `review.opens`."""
        opened = len(self.review("opens"))
        self.driver.find_element(By.CSS_SELECTOR, f'tr[data-image-id="{image_id}"]').click()
        return self.wait_open(opened)

    def wait_open(self, opened: int) -> dict[str, Any]:
        """Wait for the (opened + 1)-th open of an image to be ready; its entry of `review.opens`."""
        self.wait(f"window.review.opens.length > {opened}", OPEN_SECONDS)
        return self.review("opens")[opened]

    @property
    def canvas(self) -> WebElement:
        return self.driver.find_element(By.ID, "canvas")

    def _offset(self, x: float, y: float) -> tuple[int, int]:
        """The offset from the canvas's centre (what ActionChains takes) of image pixel (x, y)."""
        width, height, shown_width, shown_height = self.js(
            "const c = document.getElementById('canvas'); const r = c.getBoundingClientRect();"
            "return [c.width, c.height, r.width, r.height];"
        )
        return (
            round((x + 0.5) * shown_width / width - shown_width / 2),
            round((y + 0.5) * shown_height / height - shown_height / 2),
        )

    def click_pixel(self, x: float, y: float, negative: bool = False) -> None:
        """Click image pixel (x, y): a left click, or a right click when `negative`."""
        actions = ActionChains(self.driver).move_to_element_with_offset(self.canvas, *self._offset(x, y))
        (actions.context_click() if negative else actions.click()).perform()

    def drag_pixels(self, points: list[tuple[float, float]]) -> None:
        """Press at the first image pixel, move through the others and release at the last."""
        actions = ActionChains(self.driver).move_to_element_with_offset(self.canvas, *self._offset(*points[0]))
        actions.click_and_hold()
        for point in points[1:]:
            actions.move_to_element_with_offset(self.canvas, *self._offset(*point))
        actions.release().perform()

    def press(self, *keys: str) -> None:
        """Send keys to the page (the page listens on the document), e.g. press("r") or
        press(Keys.CONTROL, "z")."""
        modifiers = [k for k in keys if k in (Keys.CONTROL, Keys.SHIFT)]
        actions = ActionChains(self.driver)
        for key in modifiers:
            actions.key_down(key)
        for key in keys:
            if key not in modifiers:
                actions.send_keys(key)
        for key in reversed(modifiers):
            actions.key_up(key)
        actions.perform()

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def select_mask(self, mask_id: int | str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f'#mask-list li[data-mask-id="{mask_id}"]').click()

    def statuses(self) -> dict[str, str]:
        """data-mask-id -> data-status of the side list's masks."""
        items = self.driver.find_elements(By.CSS_SELECTOR, "#mask-list li[data-mask-id]")
        return {li.get_attribute("data-mask-id"): li.get_attribute("data-status") for li in items}

    def wait_decodes(self, n: int) -> list[float]:
        """Wait until `n` decodes are drawn; `review.timings`."""
        self.wait(f"window.review.timings.length >= {n}")
        return self.review("timings")

    def status_line(self) -> str:
        return self.driver.find_element(By.ID, "status-line").text
