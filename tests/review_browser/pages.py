"""What the browser tests do on the review page, as a person would (keys, clicks, drags)."""

from __future__ import annotations

import json


def view_transform(page) -> dict:
    """The canvas's image -> screen transform (`data-view`, CSS px) and its position."""
    canvas = page.locator("#view-canvas")
    view = json.loads(canvas.get_attribute("data-view"))
    box = canvas.bounding_box()
    return {**view, "left": box["x"], "top": box["y"]}


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y)."""
    v = view_transform(page)
    return v["left"] + v["tx"] + x * v["scale"], v["top"] + v["ty"] + y * v["scale"]


def open_case(page, case_id: int) -> None:
    """Click the case's row in the worklist and wait for its image to be drawn."""
    page.click(f"#worklist tbody tr[data-case-id='{case_id}']")
    page.wait_for_selector(f"#panel h2:text-is('Case {case_id}')")
    page.wait_for_function("document.getElementById('view-canvas').dataset.view !== undefined")


def finding(page, finding_id: int):
    return page.locator(f".finding[data-finding-id='{finding_id}']")


def select_finding(page, finding_id: int) -> None:
    finding(page, finding_id).locator(".label").click()
    page.wait_for_selector(f".finding.selected[data-finding-id='{finding_id}']")


def finding_status(page, finding_id: int, status: str) -> None:
    """Wait until the panel shows the finding with `status`."""
    selector = f".finding[data-finding-id='{finding_id}'] .finding-status-{status}"
    page.wait_for_selector(selector)


def key(page, name: str) -> None:
    """A shortcut key, sent while the canvas has the focus."""
    page.locator("#view-canvas").focus()
    page.keyboard.press(name)


def answer_prompt(page, text: str) -> None:
    page.wait_for_selector("#prompt-dialog[open]")
    page.fill("#prompt-input", text)
    page.keyboard.press("Enter")
    page.wait_for_selector("#prompt-dialog:not([open])", state="attached")


def drag(page, start: tuple[float, float], end: tuple[float, float], button: str = "left"):
    page.mouse.move(*start)
    page.mouse.down(button=button)
    steps = 8
    for i in range(1, steps + 1):
        f = i / steps
        page.mouse.move(start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f)
    page.mouse.up(button=button)


def case_status(page, status: str) -> None:
    page.wait_for_selector(f"#case-status.status-{status}")


def canvas_png(page) -> bytes:
    return page.locator("#view-canvas").screenshot()


def is_action(name: str):
    """A response predicate: the answer to POST .../actions with action `name`."""

    def match(response) -> bool:
        if not response.url.endswith("/actions"):
            return False
        body = json.loads(response.request.post_data or "{}")
        return body.get("action") == name

    return match


def canvas_grey(page, x: float, y: float) -> int:
    """The red channel of the canvas pixel that shows image pixel (x, y)."""
    return page.evaluate(
        """([x, y]) => {
          const c = document.getElementById("view-canvas");
          const v = JSON.parse(c.dataset.view);
          const dpr = window.devicePixelRatio || 1;
          const px = Math.floor((x * v.scale + v.tx) * dpr);
          const py = Math.floor((y * v.scale + v.ty) * dpr);
          return c.getContext("2d").getImageData(px, py, 1, 1).data[0];
        }""",
        [x + 0.5, y + 0.5],
    )
