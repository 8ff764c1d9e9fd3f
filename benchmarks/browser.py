"""Headless Chromium driven over the DevTools protocol on a pipe (standard library only, no port opened).

Used by the results page's browser test (tests/test_site.py) and `nndiff site --screenshot`:

    with Chromium() as browser:
        browser.open(Path("reports/index.html"))
        browser.evaluate("document.title")
        browser.click("table.sortable th")
        browser.screenshot(Path("shot.png"))
        browser.errors  # console errors, uncaught exceptions, failed loads, CSP violations since open()
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

EXECUTABLE = os.environ.get("NNDIFF_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


class BrowserError(RuntimeError):
    pass


def available(executable: str = EXECUTABLE) -> bool:
    return os.path.isfile(executable) and os.access(executable, os.X_OK)


class Chromium:
    def __init__(self, executable: str = EXECUTABLE, width: int = 1280, height: int = 900, timeout: float = 60.0):
        if not available(executable):
            raise FileNotFoundError(f"no Chromium at {executable} (Debian: apt-get install chromium)")
        self.timeout = timeout
        self.width, self.height = width, height
        self.errors: list[str] = []
        self.events: list[dict] = []
        self._id = 0
        self._buf = b""
        self._session = None
        self._profile = tempfile.mkdtemp(prefix="nndiff-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds_3_and_4():  # the child reads commands on fd 3 and writes replies on fd 4
            a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(os.path.join(self._profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, close_fds=False,
            preexec_fn=fds_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------- protocol

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (code {self.proc.poll()}); log: {self._tail()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _record(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        self.events.append(msg)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            self.errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._record(reply)

    def call(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.send(method, session=self._session, **params)

    def wait_for(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = len(self.events)
        while True:
            for msg in self.events[seen:]:
                if msg.get("method") == method:
                    return msg.get("params", {})
            seen = len(self.events)
            self._record(self._read_message(deadline))

    # --------------------------------------------------------------------------- page

    def open(self, path_or_url: str | os.PathLike) -> None:
        """Load a page and wait until it and its images are loaded."""
        url = str(path_or_url)
        if "://" not in url:
            url = Path(url).resolve().as_uri()
        self.events.clear()
        self.errors.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")
        self.evaluate("Promise.all(Array.from(document.images, i => i.decode().catch(() => null)))")

    def evaluate(self, expression: str):
        """A JavaScript expression's value (promises awaited); an exception in it raises BrowserError."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]!r}: {d.get('exception', {}).get('description') or d.get('text')}")
        return result.get("result", {}).get("value")

    def click(self, selector: str, index: int = 0) -> None:
        """A real mouse click (press and release) in the middle of the index-th element matching selector."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelectorAll({json.dumps(selector)})[{index}];"
            " if (!e) return null; e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
        if box is None:
            raise BrowserError(f"no element {selector!r} #{index}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, out: str | os.PathLike, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            height = self.evaluate("document.documentElement.scrollHeight")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        else:
            self.evaluate("window.scrollTo(0, 0)")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return out

    # --------------------------------------------------------------------------- lifetime

    def _tail(self) -> str:
        try:
            self._log.flush()
            return Path(self._profile, "chromium.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close")
            except (BrowserError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def screenshot(page: str | os.PathLike, out: str | os.PathLike, width: int = 1280, height: int = 900) -> Path:
    """The top of a page as PNG; raises BrowserError if the page logs an error."""
    with Chromium(width=width, height=height) as browser:
        browser.open(page)
        if browser.errors:
            raise BrowserError(f"{page}: {'; '.join(browser.errors)}")
        return browser.screenshot(out)
