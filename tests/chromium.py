"""Debian's Chromium and the flags every headless browser test and the frontend bench start it with.

No pytest here: `bench/bench_frontend.py` imports it from an environment without test tools.

    from chromium import CHROMIUM, CHROMIUM_ARGS
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
