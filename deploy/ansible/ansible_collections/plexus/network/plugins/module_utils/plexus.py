# -*- coding: utf-8 -*-
"""What every plexus.network module shares: the API's credentials, requests, and the
idempotent "make this object so" logic for objects with a name and a spec."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import open_url


def api_argument_spec():
    """The connection options every module takes (the CLI's environment variables too)."""
    return dict(
        api_url=dict(type="str", required=True, fallback=(env_fallback, ["PLEXUS_API"])),
        ca=dict(type="path", fallback=(env_fallback, ["PLEXUS_CA"])),
        token=dict(type="str", no_log=True, required=True, fallback=(env_fallback, ["PLEXUS_TOKEN"])),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )


class Api(object):
    """Calls to the controller; a refusal fails the task with the API's own message."""

    def __init__(self, module):
        self.module = module
        # Several controller URLs may be given, comma-separated, as for the CLI: the first is used.
        self.base = module.params["api_url"].split(",")[0].rstrip("/")

    def call(self, method, path, body=None, missing_ok=False, if_match=None):
        headers = {"Authorization": "Bearer " + self.module.params["token"], "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        try:
            r = open_url(self.base + path, method=method, data=data, headers=headers, ca_path=self.module.params["ca"], validate_certs=True, timeout=30)
            text = r.read()
            return json.loads(text) if text else None
        except HTTPError as e:
            if missing_ok and e.code == 404:
                return None
            try:
                p = json.loads(e.read())
                field = " (field %s)" % p["field"] if p.get("field") else ""
                msg = "%s %s: %s%s" % (method, path, p.get("detail", e.reason), field)
            except Exception:
                msg = "%s %s: HTTP %s %s" % (method, path, e.code, e.reason)
            self.module.fail_json(msg=msg, status=e.code)
        except Exception as e:  # unreachable, TLS
            self.module.fail_json(msg="%s %s: %s" % (method, path, e))


def strip(obj):
    """A stored object's spec: the object without what the controller adds."""
    return {k: v for k, v in (obj or {}).items() if k not in ("revision", "id")}


def merged(have, want):
    """`have` with what the task set: nested objects merged (a network's kind keeps its VNI),
    labels and lists replaced whole, what the task left out kept as it is."""
    out = dict(have)
    for k, v in want.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "labels":
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


def ensure(module, api, collection, name, want):
    """Makes `/v1/<collection>/<name>` what `want` (the fields the task set) says, or absent.
    Returns the module's result: changed, diff (before and after), and the object."""
    path = "/v1/%s/%s" % (collection, name)
    have = api.call("GET", path, missing_ok=True)
    before = strip(have) if have else {}
    if module.params["state"] == "absent":
        if have and not module.check_mode:
            api.call("DELETE", path)
        return dict(changed=bool(have), diff=dict(before=before, after={}))
    after = merged(before, want) if have else want
    changed = after != before
    obj = have
    if changed and not module.check_mode:
        if have:
            obj = api.call("PUT", path, after, if_match=have.get("revision"))
        else:
            obj = api.call("POST", "/v1/%s" % collection, after)
    return dict(changed=changed, diff=dict(before=before, after=after), object=obj or after)


def given(module, names):
    """The options of `names` the task set (None means left out)."""
    return {k: module.params[k] for k in names if module.params.get(k) is not None}
