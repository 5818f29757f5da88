#!/usr/bin/env python3
"""The idle warning inside JupyterLab: a banner across the top of the open page.

Three small parts, no build step (no node on the box):
  - the agent writes the warning to state/jupyter-notice.json (write_notice) and
    removes it when the box is used again (clear_notice);
  - a Jupyter server extension (this module, loaded through a two-line shim) answers
    GET {base_url}gpubox/notice with it, for logged-in users only;
  - a prebuilt JupyterLab 4 extension, one hand-written JavaScript file in the
    module-federation shape JupyterLab loads (window._JUPYTERLAB[name].get/init),
    asks that URL every poll and shows the banner.

  python jupyter_notice.py install   run with the Jupyter environment's Python;
                                     puts the three parts into its prefix
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent_files import path, read_json, write_json  # noqa: E402
from keep import boot_id  # noqa: E402

NAME = "gpubox-notice"
MODULE = "gpubox_jupyter_notice"
POLL_SECONDS = 20

LAB_JS = r"""
(function () {
  var NAME = "gpubox-notice";
  function config() {
    try { return JSON.parse(document.getElementById("jupyter-config-data").textContent); }
    catch (e) { return {}; }
  }
  var toast = null;
  function notify(app, notice) {
    // JupyterLab's own notifications too (the bell in the status bar keeps it).
    var commands = app && app.commands;
    if (!commands || !commands.hasCommand("apputils:notify")) { return; }
    if (toast) { commands.execute("apputils:dismiss-notification", { id: toast }); toast = null; }
    if (notice) {
      commands.execute("apputils:notify", { message: notice.text, type: "warning",
        options: { autoClose: false } }).then(function (id) { toast = id; });
    }
  }
  function banner(app, notice, dismissed) {
    var el = document.getElementById("gpubox-notice");
    var shown = el ? el.dataset.at : (toast ? "toast" : "");
    if (!notice || dismissed === notice.at) {
      if (el) { el.remove(); }
      if (!notice && toast) { notify(app, null); }
      return;
    }
    if (shown === String(notice.at)) { return; }
    notify(app, notice);
    if (!el) {
      el = document.createElement("div");
      el.id = "gpubox-notice";
      el.setAttribute("role", "alert");
      el.style.cssText = "position:fixed;top:0;left:0;right:0;z-index:100000;padding:10px 44px 10px 14px;" +
        "background:#ffd54f;color:#000;font:bold 14px/1.4 sans-serif;border-bottom:3px solid #e65100;" +
        "box-shadow:0 2px 6px rgba(0,0,0,.3)";
      document.body.appendChild(el);
    }
    el.dataset.at = String(notice.at);
    el.textContent = notice.text;
    var close = document.createElement("button");
    close.textContent = "\u00d7";
    close.title = "Hide until the next warning";
    close.style.cssText = "position:absolute;top:6px;right:10px;font:bold 18px sans-serif;background:none;border:0;cursor:pointer";
    close.onclick = function () { window.__gpuboxDismissed = notice.at; el.remove(); };
    el.appendChild(close);
  }
  var plugin = {
    id: NAME + ":banner",
    description: "Shows gpubox's idle auto-stop warning in the open page.",
    autoStart: true,
    activate: function (app) {
      var page = config();
      var base = (page.baseUrl || "/").replace(/\/?$/, "/");
      var headers = page.token ? { Authorization: "token " + page.token } : {};
      function poll() {
        fetch(base + "gpubox/notice", { headers: headers, credentials: "same-origin", cache: "no-store" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) {
            banner(app, data && data.notice, window.__gpuboxDismissed);
            setTimeout(poll, 1000 * ((data && data.poll_seconds) || 20));
          })
          .catch(function () { setTimeout(poll, 20000); });
      }
      poll();
    }
  };
  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    init: function () { return Promise.resolve(); },
    get: function () {
      return Promise.resolve(function () { return { __esModule: true, "default": [plugin] }; });
    }
  };
})();
"""

PACKAGE_JSON = {
    "name": NAME,
    "version": "1.0.0",
    "description": "gpubox: the idle auto-stop warning in JupyterLab",
    "jupyterlab": {"_build": {"load": "static/remoteEntry.gpubox.js", "extension": "./extension"}},
}


# --- the agent's side --------------------------------------------------------------
def notice_file():
    return path("state", "jupyter-notice.json")


def write_notice(text, now):
    write_json(notice_file(), {"text": text, "at": now, "boot_id": boot_id()})


def clear_notice():
    try:
        os.remove(notice_file())
    except OSError:
        pass


def current_notice():
    """The warning to show, or None; one left over from before a reboot is not shown."""
    notice = read_json(notice_file(), None)
    if not notice or notice.get("boot_id") != boot_id():
        return None
    return {"text": notice.get("text", ""), "at": notice.get("at")}


# --- the Jupyter server's side -------------------------------------------------------
def _jupyter_server_extension_points():
    return [{"module": MODULE}]


def _load_jupyter_server_extension(serverapp):
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    class NoticeHandler(APIHandler):
        @web.authenticated
        def get(self):
            self.set_header("Cache-Control", "no-store")
            every = float(os.environ.get("GPUBOX_NOTICE_POLL_SECONDS") or POLL_SECONDS)
            self.finish(json.dumps({"notice": current_notice(), "poll_seconds": every}))

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], "gpubox", "notice")
    web_app.add_handlers(".*$", [(route, NoticeHandler)])


def install(data_dir, config_dir, lib_dir):
    """The lab extension, the server extension's shim and its switch, into a Jupyter prefix."""
    ext = os.path.join(data_dir, "labextensions", NAME)
    os.makedirs(os.path.join(ext, "static"), exist_ok=True)
    with open(os.path.join(ext, "package.json"), "w") as handle:
        json.dump(PACKAGE_JSON, handle, indent=1)
    with open(os.path.join(ext, "static", "remoteEntry.gpubox.js"), "w") as handle:
        handle.write(LAB_JS)
    os.makedirs(lib_dir, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(lib_dir, MODULE + ".py"), "w") as handle:
        handle.write(f"# gpubox's idle warning in JupyterLab: {here}/jupyter_notice.py\n"
                     f"import sys\nsys.path.insert(0, {here!r})\nfrom jupyter_notice import *  # noqa\n"
                     "from jupyter_notice import _jupyter_server_extension_points, "
                     "_load_jupyter_server_extension  # noqa\n")  # fmt: skip
    switch = os.path.join(config_dir, "jupyter_server_config.d")
    os.makedirs(switch, exist_ok=True)
    with open(os.path.join(switch, MODULE + ".json"), "w") as handle:
        json.dump({"ServerApp": {"jpserver_extensions": {MODULE: True}}}, handle)
    return ext


def main(argv=None):
    parser = argparse.ArgumentParser(prog="jupyter_notice.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    inst = sub.add_parser("install", help="install into this Python's Jupyter prefix")
    inst.add_argument("--data-dir", default=os.path.join(sys.prefix, "share", "jupyter"))
    inst.add_argument("--config-dir", default=os.path.join(sys.prefix, "etc", "jupyter"))
    inst.add_argument("--lib-dir", default=sysconfig.get_paths()["purelib"])
    args = parser.parse_args(argv)
    if args.command != "install":
        parser.print_help()
        return 2
    print(install(args.data_dir, args.config_dir, args.lib_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
