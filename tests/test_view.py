"""The run viewer: filters over HTTP, then the real page in headless Chromium (DOM per filter, a non-blank screenshot)."""

from __future__ import annotations

import html
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
from matplotlib.image import imread

from mathforge.view import make_server
from tests.test_report import make_run

CHROMIUM = "/usr/bin/chromium"
STATUS = re.compile(r'<article class="item [a-z]+" data-id="([^"]+)" data-status="([a-z]+)"')


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    run, _ = make_run(tmp_path_factory.mktemp("view"))
    server = make_server(run, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


def shown(html: str) -> list[tuple[str, str]]:
    return STATUS.findall(html)


def test_filters_change_what_is_shown(url):
    everything = shown(get(url))
    assert {s for _, s in everything} >= {"correct", "incorrect", "rejected"}
    correct = shown(get(url + "?status=correct"))
    assert correct and all(s == "correct" for _, s in correct) and len(correct) < len(everything)
    evals = shown(get(url + "?source=eval%3Aeval&status=incorrect"))
    assert evals and all(i.endswith(("#greedy", "#sampled")) and s == "incorrect" for i, s in evals)
    reason = html.unescape(re.search(r'<option value="([^"]*missing or empty)"', get(url)).group(1))
    page = get(url + "?" + urlencode({"reason": reason}))
    assert [s for _, s in shown(page)] == ["rejected"] and "No answer here" in page
    pens = get(url + "?q=PENS")
    assert shown(pens) and "2 boxes" in pens and "apples" not in pens
    assert "Nothing matches" in get(url + "?teacher=nobody")
    assert 'option value="api" selected' in get(url + "?teacher=api")


def test_static_files_and_unknown_paths(url):
    assert "addEventListener" in get(url + "static/view.js")
    for bad in ("static/page.html.j2", "static/..%2Fserver.py", "nope"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(url + bad)
        assert err.value.code == 404


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_page_in_headless_chromium(url, tmp_path):
    dom_all = chromium(tmp_path, "--dump-dom", url).stdout
    dom_bad = chromium(tmp_path, "--dump-dom", url + "?status=incorrect&teacher=api").stdout
    assert "<title>mathforge view: run</title>" in dom_all
    everything, incorrect = shown(dom_all), shown(dom_bad)
    assert incorrect and all(s == "incorrect" for _, s in incorrect)
    assert set(incorrect) < set(everything)
    assert re.search(r'<option value="incorrect" selected="?"?>', dom_bad)  # the page shows the filter it applies

    shot = tmp_path / "view.png"
    result = chromium(tmp_path, "--window-size=1200,900", f"--screenshot={shot}", url + "?q=apples")
    assert shot.exists(), result.stderr[-2000:]
    img = imread(str(shot))[..., :3]
    assert img.shape[:2] == (900, 1200)
    assert float(img.std()) > 0.05 and (img.mean(axis=2) < 0.5).mean() > 0.005  # text drawn, not a blank page


def test_cli_refuses_a_missing_run(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.view import app

    result = CliRunner().invoke(app, [str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code != 0 and "not a run directory" in str(result.exception)


async def _cdp_session(ws_url: str, steps):
    """Run ``steps(evaluate)`` against one page over the DevTools protocol (aiohttp websocket client)."""
    import asyncio
    import itertools
    import json

    import aiohttp

    ids = itertools.count(1)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:

        async def evaluate(expression: str):
            msg_id = next(ids)
            await ws.send_str(json.dumps({"id": msg_id, "method": "Runtime.evaluate",
                                          "params": {"expression": expression, "returnByValue": True}}))
            while True:
                reply = json.loads((await ws.receive(timeout=30)).data)
                if reply.get("id") == msg_id:
                    return reply.get("result", {}).get("result", {}).get("value")

        async def wait_for(expression: str, seconds: float = 20):
            for _ in range(int(seconds * 10)):
                if await evaluate(expression):
                    return True
                await asyncio.sleep(0.1)
            raise AssertionError(f"timed out waiting for: {expression}")

        return await steps(evaluate, wait_for)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_menus_and_search_drive_the_page_over_devtools(url, tmp_path):
    import asyncio
    import json

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0"]
    proc = subprocess.Popen([CHROMIUM, *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = tmp_path / "profile" / "DevToolsActivePort"  # chromium writes its port here
        for _ in range(300):
            if active.exists() and active.read_text().strip():
                break
            time.sleep(0.1)
        port = active.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")

        statuses = "JSON.stringify([...document.querySelectorAll('article')].map(a => a.dataset.status))"

        async def steps(evaluate, wait_for):
            await wait_for("document.readyState === 'complete' && document.querySelectorAll('article').length > 0")
            before = json.loads(await evaluate(statuses))
            await evaluate("const s = document.querySelector('select[name=status]'); s.value = 'incorrect';"
                           "s.dispatchEvent(new Event('change'))")  # view.js submits the form on change
            await wait_for("location.search.includes('status=incorrect') && document.readyState === 'complete'")
            after = json.loads(await evaluate(statuses))
            await evaluate("document.querySelector('input[name=q]').value = 'pens';"
                           "document.getElementById('filters').requestSubmit()")
            await wait_for("location.search.includes('q=pens') && document.readyState === 'complete'")
            problems = await evaluate("[...document.querySelectorAll('.problem .question')].map(q => q.textContent)")
            return before, after, problems

        before, after, problems = asyncio.run(_cdp_session(page["webSocketDebuggerUrl"], steps))
        assert len(set(before)) > 1 and after and set(after) == {"incorrect"} and len(after) < len(before)
        assert problems and all("pens" in q for q in problems)
    finally:
        proc.terminate()
        proc.wait(10)
