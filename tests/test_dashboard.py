"""
The dashboard in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver, offline (nothing downloads a
browser or a driver), against the real daemon.  A device that logs in over
TCP appears in the table, a message sent from the page reaches it, and
what it sends the dashboard appears on the page.

With HYPERTCP_SCREENSHOT=PATH the run also saves its screenshot there (the
README's picture is made this way: docs/dashboard.png).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from hypertcp.protocol.challenge import key_id, proof
from hypertcp.protocol.commands import Command
from tests.raw import Raw

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(monkeypatch):
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), \
        "Debian's chromium and chromium-driver are needed (the README's test command installs them)"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1360,860"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(condition)


def text_in(element_id: str, text: str):
    return seen.text_to_be_present_in_element((By.ID, element_id), text)


def row(device_id: str):
    return seen.presence_of_element_located(
        (By.CSS_SELECTOR, f'#device-rows tr[data-id="{device_id}"]'))


def test_dashboard_sees_devices_and_carries_messages(start_daemon, token, browser, tmp_path):
    daemon = start_daemon("--web", "tcp:0:interface=127.0.0.1", expect=("tcp", "web"))
    browser.get(f"http://127.0.0.1:{daemon.ports['web']}/")
    browser.find_element(By.ID, "token").send_keys(
        token("ops", "--role", "observer", "--grant", "stats", "kick"))
    browser.find_element(By.ID, "login-form").submit()
    wait(browser, text_in("state", "online"))
    wait(browser, seen.visibility_of_element_located((By.ID, "board")))

    with Raw(daemon.port) as sensor, Raw(daemon.port) as lamp:
        assert sensor.login_json(token("sensor-1")) == 200
        assert lamp.login_json(token("lamp-2")) == 200
        wait(browser, row("sensor-1"))
        wait(browser, text_in("events", "sensor-1 connected"))

        target = browser.find_element(By.ID, "target")
        target.send_keys("sensor-1")
        payload = browser.find_element(By.ID, "payload")
        payload.clear()
        payload.send_keys('{"text": "hello from the page"}')
        browser.find_element(By.ID, "send-form").submit()
        assert sensor.message() == {"from": "dashboard", "payload": {"text": "hello from the page"}}
        wait(browser, text_in("send-result", "sensor-1: SUCCESS (200)"))

        reading = {"temperature": 21.5, "humidity": 40}
        assert sensor.request(Command.JSON_MESSAGE, json.dumps(
            {"targetId": "dashboard", "payload": reading}).encode()) == 200
        wait(browser, text_in("events", "from sensor-1: " + json.dumps(reading, separators=(",", ":"))))
        assert lamp.request(Command.JSON_MESSAGE, json.dumps(
            {"targetId": "server", "payload": {"watts": 7}}).encode()) == 200
        wait(browser, text_in("events", 'telemetry from lamp-2: {"watts":7}'))
        wait(browser, text_in("counter-list", "delivered"))  # the token is granted stats
        # The figures follow: lamp-2 has sent its login and one message.
        wait(browser, lambda driver: driver.find_element(
            By.CSS_SELECTOR, '#device-rows tr[data-id="lamp-2"] td:nth-child(6)').text == "2")

        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        wanted = os.environ.get("HYPERTCP_SCREENSHOT")
        if wanted:
            Path(wanted).write_bytes(shot.read_bytes())

    wait(browser, text_in("events", "sensor-1 disconnected"))
    wait(browser, seen.invisibility_of_element_located(
        (By.CSS_SELECTOR, '#device-rows tr[data-id="sensor-1"]')))

    # Kicked, the page's client logs in again by itself.
    with Raw(daemon.port) as boss:
        assert boss.login_json(token("boss", "--role", "observer", "--grant", "kick"),
                               "boss") == 200
        assert boss.request(Command.JSON_MESSAGE, json.dumps(
            {"targetId": "server", "payload": {"command": "kick", "deviceId": "dashboard"}}
        ).encode()) == 200
        wait(browser, text_in("events", "connection lost (1000: kicked by an operator)"))
        wait(browser, text_in("events", "logged in again as dashboard"))
        wait(browser, row("boss"))
    daemon.wait_for_log("logged in over WebSocket as dashboard", timeout=10)
    assert daemon.output.count("logged in over WebSocket as dashboard") == 2
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors  # no script errors, no policy violations


def test_the_javascript_challenge_proof_is_the_servers(start_daemon, browser):
    """hypertcp.js proves a token with Web Crypto exactly as the server checks it."""
    daemon = start_daemon("--web", "tcp:0:interface=127.0.0.1", expect=("tcp", "web"))
    browser.get(f"http://127.0.0.1:{daemon.ports['web']}/")  # a secure context: loopback
    nonce = "ab" * 32
    got = browser.execute_async_script("""
        const [nonce, done] = [arguments[0], arguments[arguments.length - 1]];
        import("/hypertcp.js").then(async ({ challengeProof }) => done([
            await challengeProof("s3cret-token", nonce, "panel-1"),
            await challengeProof("s3cret-token", nonce)]));
    """, nonce)
    assert got == [{"key": key_id("s3cret-token"), "proof": proof("s3cret-token", nonce, "panel-1")},
                   {"key": key_id("s3cret-token"), "proof": proof("s3cret-token", nonce)}]


def test_hypertcp_js_sends_with_qos_and_an_offline_device_gets_it(start_daemon, token, browser):
    daemon = start_daemon("--web", "tcp:0:interface=127.0.0.1", expect=("tcp", "web"))
    panel = token("panel-2")
    browser.get(f"http://127.0.0.1:{daemon.ports['web']}/")
    answers = browser.execute_async_script("""
        const [token, done] = [arguments[0], arguments[arguments.length - 1]];
        import("/hypertcp.js").then(async ({ HyperTCPClient, gatewayUrl }) => {
            const client = new HyperTCPClient(gatewayUrl(), { token, reconnect: false });
            await client.connect();
            const answers = [await client.send("heater", { on: 1 }, { qos: 1, ttl: 600 }),
                             await client.send("heater", { on: 2 })];
            client.close();
            done(answers.map(({ ok, status, name }) => ({ ok, status, name })));
        }).catch((error) => done(String(error)));
    """, panel)
    assert answers == [{"ok": True, "status": 202, "name": "STORED"},
                       {"ok": False, "status": 7, "name": "DEVICE_NOT_IN_NETWORK"}]
    with Raw(daemon.port) as heater:
        assert heater.login_json(token("heater")) == 200
        got = heater.message()
        assert (got["from"], got["payload"]) == ("panel-2", {"on": 1})
