"""Helpers of ``tests/test_browser.py``: JupyterLab in a subprocess, headless Chromium through
Selenium, and the DOM of ipywidgets sliders and plotly figures in a notebook.

Nothing here is a test. The pieces:

* :func:`missing_reason` says why the browser tests cannot run on this machine (no Chromium, no
  chromedriver, no Selenium, no ``.venv`` JupyterLab), or None.
* :class:`LabServer` starts ``jupyter lab`` from the project's ``.venv`` on a free localhost port
  with a random token, in its own process group, with every Jupyter/IPython folder inside a
  temporary directory, and stops it (``/api/shutdown``, then the process group).
* :func:`start_chromium` starts headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
  no browser download) with a new empty profile.
* :class:`Notebook` drives one notebook in JupyterLab (``window.jupyterapp``, exposed with
  ``--LabApp.expose_app_in_browser=True``): wait for the kernel, run all cells, find a widget's
  output, move its sliders with the keyboard, read its figure's traces and its metrics table.
* :func:`owned_processes` lists the processes started by a test run (they carry an environment
  marker or belong to the Unix session of JupyterLab or chromedriver), so the test can prove that
  none is left behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
JUPYTER = VENV_BIN / "jupyter"
#: Debian's ``chromium`` and ``chromium-driver``; ``BATCHLAB_CHROMIUM`` / ``BATCHLAB_CHROMEDRIVER``
#: name other binaries (of the same version).
CHROMIUM = Path(os.environ.get("BATCHLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BATCHLAB_CHROMEDRIVER", "/usr/bin/chromedriver"))
MARKER_VARIABLE = "BATCHLAB_BROWSER_TEST"

#: Chromium flags: headless, and no background traffic (this machine's closed network refuses
#: connections, and Chromium retries them many times over without these).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # a laptop's width: with JupyterLab's file browser open the output area is about 830 px,
    # so a figure of fixed width 1000 px overflows it (issue 12)
    "--window-size=1280,1600",
)

T = TypeVar("T")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (a sentence), or None when everything is present."""
    for path, what in (
        (CHROMIUM, "Chromium (apt-get install chromium, or set BATCHLAB_CHROMIUM)"),
        (CHROMEDRIVER, "chromedriver (apt-get install chromium-driver, or BATCHLAB_CHROMEDRIVER)"),
        (JUPYTER, "JupyterLab in the project's .venv (make setup)"),
    ):
        if not path.exists():
            return f"{what} is not installed: {path} is missing"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium is not installed (pip install -e '.[browser]')"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GiveUp(RuntimeError):
    """Raised by a :func:`wait_for` check to stop waiting at once (the awaited thing failed)."""


def wait_for(what: str, check: Callable[[], T], timeout_s: float, interval_s: float = 0.25) -> T:
    """Call ``check`` until it returns a truthy value and return that value; after ``timeout_s``
    seconds raise ``TimeoutError`` naming ``what`` (and the last exception ``check`` raised)."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as err:  # noqa: BLE001 - retried until the deadline, then reported
            last_error = err
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------------------------
# processes


def owned_processes(marker: str, sessions: Collection[int] = ()) -> list[int]:
    """Ids of the live processes a test run started: those whose environment holds
    ``BATCHLAB_BROWSER_TEST=<marker>`` (JupyterLab, its kernels, chromedriver, Chromium and its
    crash handlers) and those in one of the Unix ``sessions`` (the sessions of JupyterLab and
    chromedriver, which hold Chromium's zygote children: they overwrite their environment)."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # another user's process
            environ = b""
        state, session = stat[0], int(stat[3])
        if state != "Z" and (session in sessions or needle in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def kill_owned(marker: str, sessions: Collection[int] = (), timeout_s: float = 10.0) -> list[int]:
    """Wait up to ``timeout_s`` for the processes of :func:`owned_processes` to end; SIGKILL
    the ones left (by id) and return their ids (empty when everything ended by itself)."""
    try:
        wait_for(
            "the test's processes to end",
            lambda: not owned_processes(marker, sessions),
            timeout_s,
        )
        return []
    except TimeoutError:
        left = owned_processes(marker, sessions)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------------------------
# JupyterLab


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings of the test's JupyterLab: no news or update checks (no network, no toast
    over the notebook). Everything else keeps JupyterLab's defaults, as a reader has them."""
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@dataclass
class LabServer:
    """A ``jupyter lab`` subprocess serving ``root`` on ``http://127.0.0.1:<port>/``."""

    root: Path
    home: Path
    marker: str
    token: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    session_id: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The browser address of ``path`` (below the base url) with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start JupyterLab and wait until its REST API answers."""
        self.token = secrets.token_hex(24)
        self.port = free_port()
        dirs = {
            "JUPYTER_CONFIG_DIR": self.home / "config",
            "JUPYTER_DATA_DIR": self.home / "data",
            "JUPYTER_RUNTIME_DIR": self.home / "runtime",
            "IPYTHONDIR": self.home / "ipython",
            "MPLCONFIGDIR": self.home / "mpl",
        }
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        settings = self.home / "lab-settings"
        _write_lab_settings(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
        env.update({k: str(v) for k, v in dirs.items()})
        env[MARKER_VARIABLE] = self.marker
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [
            str(JUPYTER),
            "lab",
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
            "--LabApp.expose_app_in_browser=True",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
        ]
        self._log = open(self.home / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.session_id = self.process.pid  # leader of its own session and process group

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise GiveUp(f"jupyter lab exited early with code {self.process.returncode}")
            with urllib.request.urlopen(self.url("api/status"), timeout=2) as reply:
                return reply.status == 200

        try:
            wait_for("JupyterLab's /api/status", answers, timeout_s)
        except (TimeoutError, GiveUp) as err:
            raise RuntimeError(f"{err}\n--- jupyter lab log ---\n{self.log_tail()}") from None

    def log_tail(self, n_chars: int = 4000) -> str:
        path = self.home / "jupyterlab.log"
        return path.read_text(errors="replace")[-n_chars:] if path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """Shut JupyterLab and its kernels down: ``POST /api/shutdown``, then SIGTERM and at last
        SIGKILL to its process group. Idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                request = urllib.request.Request(self.url("api/shutdown"), method="POST", data=b"")
                urllib.request.urlopen(request, timeout=5).close()
            except (urllib.error.URLError, OSError):
                pass
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill_group(process, signal.SIGKILL)
                    process.wait(timeout=5)
        _kill_group(process, signal.SIGKILL)  # anything left in the group
        self._log.close()
        self.process = None


# --------------------------------------------------------------------------------------------
# Chromium


@dataclass
class Browser:
    """Headless Chromium under chromedriver (``driver``: a Selenium ``WebDriver``)."""

    driver: Any
    service: Any
    profile: Path
    session_id: int | None = None

    def quit(self) -> None:
        """Close Chromium and stop chromedriver (and its process group). Idempotent."""
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        process = getattr(self.service, "process", None)
        try:
            self.service.stop()
        except Exception:  # noqa: BLE001
            pass
        if process is not None:
            _kill_group(process, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)


def start_chromium(profile: Path, marker: str, log_path: Path) -> Browser:
    """Start headless Chromium with an empty profile in ``profile``, driven by chromedriver in
    its own process group; both carry the environment marker ``marker``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ)
    env[MARKER_VARIABLE] = marker
    env["HOME"] = str(profile)
    service = Service(
        executable_path=str(CHROMEDRIVER),
        env=env,
        log_output=str(log_path),
        popen_kw={"start_new_session": True},
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(60)
    process = getattr(service, "process", None)
    session = None if process is None else process.pid  # chromedriver leads its own session
    return Browser(driver=driver, service=service, profile=profile, session_id=session)


# --------------------------------------------------------------------------------------------
# a notebook in JupyterLab

_FIND_PANEL = """
const app = window.jupyterapp;
if (!app || !app.shell) { return null; }
let panel = null;
for (const w of app.shell.widgets('main')) {
  if (w.context && w.context.path === arguments[0]) { panel = w; }
}
"""

_KERNEL_STATUS = (
    _FIND_PANEL
    + """
if (!panel || !panel.context.isReady) { return null; }
const session = panel.sessionContext.session;
return session && session.kernel ? session.kernel.status : null;
"""
)

# Run > Run All Cells on the notebook (made the current one first); the command's promise
# resolves when every cell has run, with false when one failed.
_RUN_ALL = (
    _FIND_PANEL
    + """
if (!panel) { return 'the notebook is not open'; }
window.jupyterapp.shell.activateById(panel.id);
window.__batchlabRun = {done: false};
window.jupyterapp.commands.execute('notebook:run-all-cells').then(
  (ok) => { window.__batchlabRun = {done: true, ok: ok}; },
  (err) => { window.__batchlabRun = {done: true, ok: false, error: String(err)}; });
return 'started';
"""
)

_SHUTDOWN = (
    _FIND_PANEL
    + """
if (!panel) { return 'the notebook is not open'; }
panel.sessionContext.shutdown();
return 'shutting down';
"""
)

_ERRORS = (
    _FIND_PANEL
    + """
const errors = [];
panel.content.widgets.forEach((cell, i) => {
  if (cell.model.type !== 'code') { return; }
  for (const out of cell.model.outputs.toJSON()) {
    if (out.output_type === 'error') { errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`); }
  }
});
return errors;
"""
)

# JupyterLab's Log Console: the messages its logger registry holds for the notebook (what the
# Log Console shows: kernel output that belongs to no cell, such as a traceback raised in a
# widget's comm handler, at level "error"; cell outputs at level "info").
_LOG_CONSOLE = """
const app = window.jupyterapp;
const registry = app.pluginRegistry || app._pluginRegistry;
const plugins = (registry && registry._plugins) || app._plugins;
const plugin = plugins && plugins.get('@jupyterlab/logconsole-extension:plugin');
if (!plugin || !plugin.service) { return null; }
const out = [];
for (const logger of plugin.service.getLoggers()) {
  if (logger.source !== arguments[0]) { continue; }
  const model = logger.outputAreaModel;
  for (let i = 0; i < model.length; i++) {
    const item = model.get(i);
    const json = item.toJSON();
    let text = json.text || '';
    if (json.traceback) { text = json.ename + ': ' + json.evalue + '\\n' + json.traceback.join('\\n'); }
    if (!text && json.data) { text = String(json.data['text/plain'] || ''); }
    out.push({level: item.level, text: Array.isArray(text) ? text.join('') : String(text)});
  }
}
return out;
"""

# The code cells whose outputs hold a plotly figure (a plotly mime bundle or a widget).
_FIGURE_CELLS = (
    _FIND_PANEL
    + """
if (!panel) { return null; }
const found = [];
panel.content.widgets.forEach((cell, i) => {
  if (cell.model.type !== 'code') { return; }
  for (const out of cell.model.outputs.toJSON()) {
    const data = out.data || {};
    if (data['application/vnd.plotly.v1+json'] || data['application/vnd.jupyter.widget-view+json']) {
      found.push(i);
      return;
    }
  }
});
return found;
"""
)

# Scroll cell arguments[1] of the notebook into view; return once its plotly figures are drawn.
_SCROLL_TO_CELL = (
    _FIND_PANEL
    + """
const done = arguments[arguments.length - 1];
if (!panel) { done('the notebook is not open'); return; }
panel.content.scrollToItem(arguments[1], 'center').then(() => done('ok'), (e) => done(String(e)));
"""
)

# How every plotly figure of cell arguments[1] sits in its output area, in pixels: the figure's
# width against the output area's, the texts (legend, title, subplot titles, labels) that reach
# outside the figure or the output area, and the labels (annotations) that overlap each other.
_FIGURE_LAYOUT = (
    _FIND_PANEL
    + """
if (!panel) { return null; }
const cell = panel.content.widgets[arguments[1]];
const box = (el) => el.getBoundingClientRect();
const found = [];
for (const out of cell.node.querySelectorAll('.jp-OutputArea-output')) {
  const plots = out.matches('.js-plotly-plot') ? [out] : Array.from(out.querySelectorAll('.js-plotly-plot'));
  for (const plot of plots) {
    const svg = plot.querySelector('.main-svg');
    if (!svg) { found.push({drawn: false}); continue; }
    const area = box(out), fig = box(svg);
    const texts = [];
    const named = (sel, what) => plot.querySelectorAll(sel).forEach((el) => {
      const r = box(el);
      if (r.width > 0 && r.height > 0) {
        texts.push({what: what, text: el.textContent.trim().slice(0, 60), left: r.left,
                    right: r.right, top: r.top, bottom: r.bottom});
      }
    });
    named('.legend', 'legend');
    named('.gtitle', 'title');
    named('.annotation-text-g', 'annotation');
    const outside = texts.filter((t) => t.left < Math.max(fig.left, area.left) - 1 ||
                                        t.right > Math.min(fig.right, area.right) + 1)
                         .map((t) => `${t.what} '${t.text}'`);
    const labels = texts.filter((t) => t.what === 'annotation');
    const overlaps = [];
    for (let a = 0; a < labels.length; a++) {
      for (let b = a + 1; b < labels.length; b++) {
        const p = labels[a], q = labels[b];
        const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
        const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
        if (w > 1 && h > 1) { overlaps.push(`'${p.text}' / '${q.text}'`); }
      }
    }
    found.push({drawn: true, width: fig.width, area: area.width, outside: outside,
                overlaps: overlaps});
  }
}
return found;
"""
)

_WIDGET_OUTPUTS = """
const found = [];
for (const out of document.querySelectorAll('.jp-OutputArea-output')) {
  if (out.querySelector('.widget-slider') && out.querySelector('.js-plotly-plot')) {
    found.push(out);
  }
}
return found;
"""

_SLIDER = """
for (const box of arguments[0].querySelectorAll('.widget-slider')) {
  const lab = box.querySelector('.widget-label');
  if (lab && lab.textContent.trim() === arguments[1]) { return box; }
}
return null;
"""

_CONTROLS = """
const out = {};
const label = (box) => {
  // a checkbox's description is in its .widget-label-basic (its .widget-label is empty)
  for (const sel of ['.widget-label-basic', '.widget-label']) {
    const lab = box.querySelector(sel);
    const text = lab ? lab.textContent.replace(/\u200b/g, '').trim() : '';
    if (text) { return text; }
  }
  return null;
};
for (const box of arguments[0].querySelectorAll('.widget-slider')) {
  const readout = box.querySelector('.widget-readout');
  const name = label(box);
  if (!name || !readout) { continue; }
  out[name] = {kind: 'slider', value: readout.textContent.trim(),
               visible: box.offsetParent !== null,
               disabled: box.querySelector('.noUi-target').hasAttribute('disabled')};
}
for (const box of arguments[0].querySelectorAll('.widget-dropdown')) {
  const select = box.querySelector('select');
  const name = label(box);
  if (name && select) {
    out[name] = {kind: 'dropdown', value: select.value, visible: box.offsetParent !== null,
                 disabled: select.disabled};
  }
}
for (const box of arguments[0].querySelectorAll('.widget-checkbox')) {
  const input = box.querySelector('input[type=checkbox]');
  const name = label(box);
  if (name && input) {
    out[name] = {kind: 'checkbox', value: input.checked, visible: box.offsetParent !== null,
                 disabled: input.disabled};
  }
}
return out;
"""

_FIGURE_DATA = """
const gd = arguments[0].querySelector('.js-plotly-plot');
if (!gd || !gd.data) { return null; }
const plain = (a) => (a === undefined || a === null) ? null : Array.from(a);
return gd.data.map((t) => ({type: t.type || 'scatter', name: t.name === undefined ? null : t.name,
                            x: plain(t.x), y: plain(t.y)}));
"""

# What plotly has drawn, in pixels: bars with a positive area, and line traces with a path.
_DRAWN = """
const gd = arguments[0].querySelector('.js-plotly-plot');
if (!gd) { return null; }
const box = gd.getBoundingClientRect();
let bars = 0, lines = 0;
for (const path of gd.querySelectorAll('.barlayer .point path')) {
  const r = path.getBoundingClientRect();
  if (r.width > 0 && r.height > 0) { bars += 1; }
}
for (const path of gd.querySelectorAll('.scatterlayer .js-line')) {
  const d = path.getAttribute('d') || '';
  const r = path.getBoundingClientRect();
  if (d.length > 10 && (r.width > 0 || r.height > 0)) { lines += 1; }
}
return {width: box.width, height: box.height, bars: bars, lines: lines};
"""

_HTML_TABLES = """
const tables = [];
for (const html of arguments[0].querySelectorAll('.widget-html')) {
  const table = html.querySelector('table');
  if (!table) { continue; }
  const head = Array.from(table.querySelectorAll('thead th')).map((c) => c.textContent.trim());
  const rows = Array.from(table.querySelectorAll('tbody tr')).map(
    (r) => Array.from(r.querySelectorAll('td')).map((c) => c.textContent.trim()));
  tables.push({head: head, rows: rows});
}
return tables;
"""

_HTML_TEXTS = """
return Array.from(arguments[0].querySelectorAll('.widget-html')).map(
  (h) => h.innerText.trim()).filter((t) => t.length > 0);
"""


class Notebook:
    """One notebook of ``server`` (``path`` relative to its root), open in ``browser``. Every
    wait ends by ``deadline`` (a ``time.monotonic()`` value) at the latest."""

    def __init__(
        self, browser: Browser, server: LabServer, path: str, deadline: float | None = None
    ) -> None:
        self.driver = browser.driver
        self.server = server
        self.path = path
        self.deadline = deadline

    def _timeout(self, timeout_s: float) -> float:
        if self.deadline is None:
            return timeout_s
        return max(0.0, min(timeout_s, self.deadline - time.monotonic()))

    def wait(self, what: str, check: Callable[[], T], timeout_s: float, interval_s=0.25) -> T:
        """:func:`wait_for` with the timeout cut to the notebook's deadline."""
        return wait_for(what, check, self._timeout(timeout_s), interval_s)

    def kernel_status(self) -> str | None:
        return self.driver.execute_script(_KERNEL_STATUS, self.path)

    def open(self, timeout_s: float = 60.0) -> None:
        """Open the notebook in JupyterLab and wait until its kernel is idle."""
        self.driver.get(self.server.url(f"lab/tree/{self.path}"))
        self.wait(
            f"the kernel of {self.path} to be idle",
            lambda: self.kernel_status() == "idle",
            timeout_s,
        )

    def run_all(self, timeout_s: float) -> None:
        """Run > Run All Cells and wait until every cell ran. AssertionError naming the cells
        that raised; TimeoutError when the run does not end within ``timeout_s`` seconds."""
        started = self.driver.execute_script(_RUN_ALL, self.path)
        assert started == "started", f"could not run {self.path}: {started}"

        def finished() -> dict[str, Any] | None:
            result = self.driver.execute_script("return window.__batchlabRun;")
            return result if result and result.get("done") else None

        result = self.wait(f"Run All Cells of {self.path}", finished, timeout_s, 0.5)
        errors = self.driver.execute_script(_ERRORS, self.path)
        assert result.get("ok") and not errors, (
            f"Run All Cells of {self.path} failed: {result}; errors: {errors}"
        )

    def shutdown_kernel(self, timeout_s: float = 20.0) -> None:
        """Shut the notebook's kernel down (Kernel > Shut Down Kernel) and wait until it is
        gone, so that the next chapter has the CPU."""
        self.driver.execute_script(_SHUTDOWN, self.path)
        self.wait(
            f"the kernel of {self.path} to shut down",
            lambda: self.kernel_status() is None,
            timeout_s,
        )

    def widget_outputs(self, count: int = 1, timeout_s: float = 30.0) -> list[Any]:
        """The output elements holding an ipywidgets slider and a plotly figure (at least
        ``count``, in document order), once every such figure has its traces."""

        def ready() -> list[Any] | None:
            outs = self.driver.execute_script(_WIDGET_OUTPUTS)
            if len(outs) < count:
                return None
            if not all(self.driver.execute_script(_FIGURE_DATA, out) for out in outs):
                return None
            return outs

        return self.wait(f"the widgets of {self.path} to render", ready, timeout_s)

    def controls(self, output: Any) -> dict[str, dict[str, Any]]:
        """Description -> ``{kind, value, visible, disabled}`` of the sliders (value: the
        readout text), dropdowns (the selected value) and checkboxes (checked) of a widget."""
        return self.driver.execute_script(_CONTROLS, output)

    def slider(self, output: Any, label: str) -> Any:
        """The ``.widget-slider`` element whose description is ``label``."""
        box = self.driver.execute_script(_SLIDER, output, label)
        assert box is not None, f"no slider described {label!r} in the widget of {self.path}"
        return box

    def scroll_into_view(self, element: Any) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)

    def press_on_handle(self, output: Any, label: str, key: str, times: int = 1) -> None:
        """Click the handle of slider ``label`` and press ``key`` (a Selenium ``Keys`` value)
        ``times`` times, as a reader moves a slider with the keyboard."""
        from selenium.webdriver.common.action_chains import ActionChains

        handle = self.slider(output, label).find_element("css selector", ".noUi-handle")
        self.scroll_into_view(handle)
        chain = ActionChains(self.driver).click(handle)
        for _ in range(times):
            chain.send_keys(key)
        chain.perform()

    def type_readout(self, output: Any, label: str, text: str) -> None:
        """Type ``text`` into the readout of slider ``label`` (click, select all, type,
        Enter), as a reader types a value."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        readout = self.slider(output, label).find_element("css selector", ".widget-readout")
        self.scroll_into_view(readout)
        chain = ActionChains(self.driver).click(readout)
        chain.key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL)
        chain.send_keys(text).send_keys(Keys.ENTER).perform()

    def set_readout(
        self, output: Any, label: str, text: str, value: Callable[[str], Any], attempts: int = 3
    ) -> None:
        """Type ``text`` into the readout of slider ``label`` and wait for the widget's update,
        until the slider shows it (``value(readout) == value(text)``): a key press that lands
        while the page still renders an earlier update is lost, as a reader would see and
        type again."""
        for _ in range(attempts):
            before = self.snapshot(output)
            self.type_readout(output, label, text)
            try:
                self.wait_for_update(output, before, timeout_s=20.0)
            except TimeoutError:  # the keys were lost: nothing changed
                continue
            if value(self.controls(output)[label]["value"]) == value(text):
                return
        raise AssertionError(
            f"{self.path}: slider {label!r} does not take {text!r} after {attempts} tries: "
            f"{self.controls(output)[label]['value']!r}"
        )

    def figure_data(self, output: Any) -> list[dict[str, Any]]:
        """The traces of the widget's plotly figure as plotly.js holds them (``gd.data``):
        ``type``, ``name``, ``x``, ``y``."""
        data = self.driver.execute_script(_FIGURE_DATA, output)
        assert data is not None, f"the widget of {self.path} has no plotly figure data"
        return data

    def drawn(self, output: Any) -> dict[str, float]:
        """Size of the widget's plot (px) and how many bars / lines plotly drew in its SVG."""
        return self.driver.execute_script(_DRAWN, output)

    def tables(self, output: Any) -> list[dict[str, Any]]:
        """The tables of the widget's ``HTML`` parts: ``head`` and ``rows`` (cell texts)."""
        return self.driver.execute_script(_HTML_TABLES, output)

    def html_texts(self, output: Any) -> list[str]:
        """The visible text of every non-empty ``HTML`` part of the widget."""
        return self.driver.execute_script(_HTML_TEXTS, output)

    def snapshot(self, output: Any) -> str:
        """The figure data, tables and texts of a widget, to tell whether it changed."""
        return json.dumps([self.figure_data(output), self.tables(output), self.html_texts(output)])

    def wait_for_update(self, output: Any, before: str, timeout_s: float = 60.0) -> None:
        """After a control moved: wait until the widget differs from ``before`` (a
        :meth:`snapshot`), then until the kernel is idle and the widget has not changed for a
        second (the whole update has arrived)."""
        self.wait(
            f"the widget of {self.path} to update",
            lambda: self.snapshot(output) != before,
            timeout_s,
            0.2,
        )
        state: dict[str, Any] = {"snap": None, "since": time.monotonic()}

        def settled() -> bool:
            snap = self.snapshot(output)
            if self.kernel_status() != "idle" or snap != state["snap"]:
                state["snap"], state["since"] = snap, time.monotonic()
                return False
            return time.monotonic() - state["since"] >= 1.0

        self.wait(f"the widget of {self.path} to settle", settled, timeout_s, 0.2)

    def screenshot(self, output: Any, path: Path) -> Path:
        """A PNG of the widget's output area, written to ``path``."""
        self.scroll_into_view(output)
        time.sleep(0.3)  # let the scroll paint
        path.parent.mkdir(parents=True, exist_ok=True)
        output.screenshot(str(path))
        return path

    def log_console(self) -> list[dict[str, str]]:
        """The messages JupyterLab's Log Console holds for this notebook: ``level`` (``error``
        for a traceback or stderr that belongs to no cell, e.g. raised in a widget's comm
        handler) and ``text``. AssertionError when the logger registry cannot be read."""
        logs = self.driver.execute_script(_LOG_CONSOLE, self.path)
        assert logs is not None, "cannot read JupyterLab's log console (logger registry)"
        return logs

    def log_console_errors(self, settle_s: float = 2.0) -> list[str]:
        """The Log Console's messages at level warning or above (what it shows by default),
        ANSI colours stripped, each as its first line and its end. Waits up to ``settle_s``
        seconds for one to arrive (a widget's comm handler answers the front end after the
        cell that moved it has finished)."""

        def shown() -> list[str]:
            out = []
            for m in self.log_console():
                if m["level"] in ("warning", "error", "critical"):
                    text = re.sub(r"\x1b\[[0-9;]*m", "", m["text"]).strip()
                    head = text.splitlines()[0] if text else ""
                    out.append(f"{m['level']}: {head[:300]} ... {text[-800:]}")
            return out

        try:
            return self.wait("a message in JupyterLab's Log Console", shown, settle_s, 0.25)
        except TimeoutError:
            return []

    def figure_problems(self, timeout_s: float = 10.0) -> list[str]:
        """Scroll to every cell with a plotly figure and report, per figure, a figure wider than
        its output area, a legend, title or label reaching outside it, and labels that overlap
        (empty when every figure fits)."""
        problems: list[str] = []
        cells = self.driver.execute_script(_FIGURE_CELLS, self.path) or []
        for i in cells:
            self.driver.execute_async_script(_SCROLL_TO_CELL, self.path, i)

            def drawn(i: int = i) -> list[dict[str, Any]] | None:
                figs = self.driver.execute_script(_FIGURE_LAYOUT, self.path, i)
                return figs if figs and all(f["drawn"] for f in figs) else None

            try:
                figs = self.wait(f"the figures of cell {i} to be drawn", drawn, timeout_s, 0.2)
            except TimeoutError as err:
                problems.append(f"cell {i}: {err}")
                continue
            for f in figs:
                if f["width"] > f["area"] + 1:
                    problems.append(
                        f"cell {i}: figure {f['width']:.0f} px wide in an output area of "
                        f"{f['area']:.0f} px"
                    )
                problems += [f"cell {i}: {what} outside the figure" for what in f["outside"]]
                problems += [f"cell {i}: overlapping labels {pair}" for pair in f["overlaps"]]
        return problems

    def console_errors(self) -> list[str]:
        """SEVERE messages of the browser console since the last call (JavaScript errors and
        failed requests)."""
        try:
            logs = self.driver.get_log("browser")
        except Exception:  # noqa: BLE001 - not every driver keeps a log
            return []
        return [entry["message"] for entry in logs if entry.get("level") == "SEVERE"]


# --------------------------------------------------------------------------------------------
# comparing what the browser shows with what the library computes


def as_list(values: Any) -> list[Any]:
    """A trace's x or y (tuple, list, numpy array or None) as a list of float, str or None."""
    if values is None:
        return []
    out: list[Any] = []
    for v in list(values):
        if v is None or isinstance(v, str):
            out.append(v)
        else:
            f = float(v)
            out.append(None if math.isnan(f) else f)
    return out


def trace_differences(
    shown: Sequence[dict[str, Any]], expected: Sequence[Any], rel: float = 1e-9
) -> list[str]:
    """How the traces drawn in the browser (:meth:`Notebook.figure_data`) differ from the traces
    of a plotly figure built by the library (empty when they agree: same number, type and name;
    equal strings and gaps; numbers within ``rel``)."""
    problems = []
    if len(shown) != len(expected):
        return [f"{len(shown)} traces shown, {len(expected)} expected"]
    for i, (got, want) in enumerate(zip(shown, expected, strict=True)):
        if got["type"] != want.type or (got["name"] or None) != (want.name or None):
            problems.append(
                f"trace {i}: {got['type']} {got['name']!r}, expected {want.type} {want.name!r}"
            )
            continue
        for axis in ("x", "y"):
            a, b = as_list(got[axis]), as_list(getattr(want, axis))
            if len(a) != len(b):
                problems.append(
                    f"trace {i} {want.name!r}: {len(a)} {axis} values, expected {len(b)}"
                )
                continue
            for j, (u, v) in enumerate(zip(a, b, strict=True)):
                if isinstance(v, str) or isinstance(u, str) or u is None or v is None:
                    ok = u == v
                else:
                    ok = math.isclose(u, v, rel_tol=rel, abs_tol=1e-12)
                if not ok:
                    problems.append(f"trace {i} {want.name!r}: {axis}[{j}] = {u!r}, expected {v!r}")
                    break
    return problems


def table_differences(
    shown: dict[str, Any], head: Sequence[str], rows: Sequence[Sequence[str]]
) -> list[str]:
    """How a table shown in the browser (:meth:`Notebook.tables`) differs from ``head`` and
    ``rows``, the strings the library formats for it (``batchlab.tables.formatted``); empty
    when every header and cell is the same text."""
    problems = []
    if list(shown["head"]) != list(head):
        problems.append(f"columns {shown['head']}, expected {list(head)}")
    if len(shown["rows"]) != len(rows):
        return [*problems, f"{len(shown['rows'])} rows shown, {len(rows)} expected"]
    for got, want in zip(shown["rows"], rows, strict=True):
        if list(got) != list(want):
            problems.append(f"row shown {got}, expected {list(want)}")
    return problems
