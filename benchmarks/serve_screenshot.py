"""A screenshot of the serving page with a prediction drawn, in headless Chromium.

    python benchmarks/serve_screenshot.py BUNDLE --image photo.jpg --out docs/serve_screenshot.png
    python benchmarks/serve_screenshot.py IMDB_BUNDLE --text "A wonderful film." --out imdb.png

Starts ``serve.py BUNDLE`` on a free 127.0.0.1 port (feedback to a temporary folder), loads the
page, uploads the image (or types the review), waits for the answer and saves the screenshot.
Needs Debian's ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--image", help="image to upload (image tasks)")
    p.add_argument("--text", help="review to type (IMDB)")
    p.add_argument("--out", default="serve_screenshot.png")
    p.add_argument("--size", default="1200,900", help="browser window WIDTH,HEIGHT")
    args = p.parse_args(argv)
    if not (args.image or args.text):
        raise SystemExit("error: give --image (image tasks) or --text (IMDB).")
    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), args.bundle, "--port", str(port), "--feedback", tmp], cwd=ROOT)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(600):
                if server.poll() is not None:
                    raise SystemExit(f"error: serve.py exited {server.returncode}")
                try:
                    if httpx.get(url + "health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            opts = webdriver.ChromeOptions()
            opts.binary_location = "/usr/bin/chromium"
            for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", f"--window-size={args.size}"):
                opts.add_argument(a)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
            try:
                driver.get(url)
                state = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
                WebDriverWait(driver, 30).until(lambda d: state(d) == "ready")
                if args.text:
                    driver.find_element(By.ID, "text").send_keys(args.text)
                    driver.find_element(By.ID, "predict-text").click()
                else:
                    driver.find_element(By.ID, "file").send_keys(str(Path(args.image).resolve()))
                WebDriverWait(driver, 60).until(lambda d: state(d) == "predicted")
                driver.save_screenshot(args.out)
                print(f"Screenshot: {args.out}")
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
