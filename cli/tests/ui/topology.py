"""Drives the topology view in headless Chromium (Debian's, through Selenium and Debian's
chromedriver, offline): the page loads with a token and shows the lab's hosts; an endpoint
created after the load appears by itself (the watch); a wrong token shows an error, not a
blank page; an endpoint's detail traces a packet from it. Prints one line per step for the Rust test that runs it."""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, token, shot, hosts, endpoint, trace_to = sys.argv[1:7]


def wait(cond, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    print("TIMEOUT " + what + " :: " + driver.find_element(By.TAG_NAME, "body").text.replace("\n", " | "), flush=True)
    driver.save_screenshot(shot)
    driver.quit()
    sys.exit(1)


o = Options()
o.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--ignore-certificate-errors", "--window-size=1400,1000"]:
    o.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def load(u):
    """Loads u, again when Chromium abandoned it because the namespace's interfaces changed
    under it (ERR_NETWORK_CHANGED: an agent moving an address as its switch comes up), which
    is about the machine, not the page."""
    for _ in range(5):
        driver.get(u)
        time.sleep(0.5)
        if "ERR_NETWORK_CHANGED" not in driver.find_element(By.TAG_NAME, "body").text:
            return
    print("the page never loaded: the network kept changing", flush=True)


load(url + "#token=" + token)
for h in hosts.split(","):
    wait(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-host="%s"]' % h), "host " + h)
print("HOSTS " + hosts, flush=True)
wait(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-endpoint="%s"]' % endpoint), "endpoint " + endpoint)
print("ENDPOINT " + endpoint, flush=True)
# Its detail, and a trace from it, as `plexus trace` would run it.
driver.find_element(By.CSS_SELECTOR, '[data-endpoint="%s"]' % endpoint).click()
wait(lambda: driver.find_element(By.ID, "trace").is_displayed(), "the trace form")
driver.find_element(By.ID, "trace-to").send_keys(trace_to)
driver.find_element(By.CSS_SELECTOR, "#trace button").click()
wait(lambda: driver.find_element(By.ID, "trace-out").text.startswith(("DELIVERED", "DROPPED")), "a trace")
print("TRACE " + driver.find_element(By.ID, "trace-out").text.splitlines()[0], flush=True)
driver.save_screenshot(shot)
driver.execute_script("sessionStorage.clear()")
driver.get(url + "?again#token=wrong")  # a new document, not a fragment change
wait(lambda: "refused" in driver.find_element(By.ID, "error").text, "an error for a wrong token")
print("ERROR " + driver.find_element(By.ID, "error").text, flush=True)
driver.quit()
