"""The console (/ui/) in a real headless Chromium (Debian's `chromium`),
driven by Playwright: it shows the population, a newly registered agent
appears within 1 s without reload, a filter narrows the table, the detail
panel opens, and the page fetches nothing but the registry. Takes the
README's screenshot.

Usage: console.py BINARY [SCREENSHOT]"""

import shutil
import sys
import tempfile
import time

from playwright.sync_api import expect, sync_playwright

from registry import Registry

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    binary = sys.argv[1]
    screenshot = sys.argv[2] if len(sys.argv) > 2 else None
    with Registry(binary) as registry, sync_playwright() as p:
        first, _ = registry.register(agentType="WORKER", capabilities=["translate", "ocr"],
                                     namespace="prod",
                          endpoint="10.0.1.5:7000", metadata={"zone": "eu-west-1"},
                          telemetry={"successRate": 0.97, "totalExecutions": "1200",
                                     "failedExecutions": "36", "avgDurationMs": "180"})
        registry.register(agentType="WORKER", capabilities=["translate"], namespace="prod",
                          endpoint="10.0.1.6:7000",
                          telemetry={"successRate": 0.42, "totalExecutions": "50",
                                     "failedExecutions": "29", "avgDurationMs": "950"})
        registry.register(agentType="SCOUT", capabilities=["crawl", "search"], namespace="staging",
                          endpoint="10.0.2.9:8080")
        registry.register(agentType="ANALYST", capabilities=["forecast"], namespace="prod",
                          telemetry={"successRate": 0.1, "totalExecutions": "20",
                                     "failedExecutions": "18"})

        profile = tempfile.mkdtemp(prefix="console-chromium-")
        try:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 1500, "height": 820})
            page = context.pages[0] if context.pages else context.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            failures = []
            page.on("pageerror", lambda e: failures.append(str(e)))

            table = page.locator("#agents tbody tr")
            page.goto(registry.base + "/ui/")
            expect(table).to_have_count(4, timeout=5000)
            page.wait_for_selector("#live.on", timeout=5000)
            assert page.locator("#count-total").inner_text() == "4"
            assert "translate" in page.locator("#catalog").inner_text()

            started = time.monotonic()
            new_id, _ = registry.register(agentType="GUARD", capabilities=["firewall"],
                                          namespace="edge", endpoint="10.0.3.1:9000")
            expect(table).to_have_count(5, timeout=1000)
            took = time.monotonic() - started
            assert page.locator(f"#agents tbody tr[data-id='{new_id}']").count() == 1
            print(f"console: a new agent showed in {took * 1000:.0f} ms without reload")

            page.select_option("#f-type", "WORKER")
            expect(table).to_have_count(2, timeout=1000)
            page.select_option("#f-type", "")
            page.select_option("#f-namespace", "edge")
            expect(table).to_have_count(1, timeout=1000)
            page.select_option("#f-namespace", "")
            page.wait_for_selector("#f-capability option[value='ocr']", state="attached",
                                   timeout=2000)
            page.select_option("#f-capability", "ocr")
            expect(table).to_have_count(1, timeout=1000)
            page.select_option("#f-capability", "")
            page.select_option("#f-status", "UNHEALTHY")
            expect(table).to_have_count(1, timeout=1000)
            page.select_option("#f-status", "")
            expect(table).to_have_count(5, timeout=1000)

            page.locator(f"#agents tbody tr[data-id='{first}']").click()
            page.wait_for_selector("#detail:not([hidden])", timeout=1000)
            detail = page.locator("#detail").inner_text()
            for field in ("capabilities", "metadata.zone", "success rate", "endpoint",
                          "last seen", "revision", "health check", "health output"):
                assert field in detail, (field, detail)
            if screenshot:
                page.wait_for_timeout(1300)  # let the new-row highlight fade
                page.screenshot(path=screenshot, full_page=True)
            assert not failures, failures
            context.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

        origin = registry.base + "/"
        foreign = [u for u in requests if not u.startswith(origin)]
        assert not foreign, f"the console fetched from elsewhere: {foreign}"
        assert requests, "no request recorded"
        print(f"console: {len(requests)} requests, all to {origin}")
    print("console: ok")


if __name__ == "__main__":
    main()
