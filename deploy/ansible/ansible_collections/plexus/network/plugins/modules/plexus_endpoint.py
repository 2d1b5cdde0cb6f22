#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plexus_endpoint
short_description: A Plexus endpoint an operator pins
description:
  - Creates or deletes an endpoint with a chosen id on a host (its address allocated unless
    given), and keeps its labels and published ports as the task says. A different host or
    address remakes it.
options:
  network: {description: Its network., type: str, required: true}
  id: {description: Its id., type: str, required: true}
  host: {description: The host it lives on; required to create., type: str}
  ip: {description: Its address (allocated if left out)., type: str}
  labels: {description: Labels (what policies select by; replace the current ones when given)., type: dict}
  publish: {description: "Ports published on its host's addresses, HOST_PORT:PORT[/tcp|/udp] (replace the current ones when given).", type: list, elements: str}
extends_documentation_fragment: [plexus.network.plexus, plexus.network.plexus.state]
author: Plexus developers
"""

EXAMPLES = r"""
- plexus.network.plexus_endpoint: {network: red, id: web1, host: h1, labels: {app: web}, publish: ["8080:80/tcp"]}
"""

RETURN = r"""
object: {description: The endpoint as the controller stored it., returned: when present, type: dict}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plexus.network.plugins.module_utils.plexus import Api, api_argument_spec


def published(text):
    ports, _, proto = text.partition("/")
    host, _, port = ports.partition(":")
    return {"host_port": int(host), "port": int(port or host), "protocol": proto or "tcp"}


def main():
    spec = api_argument_spec()
    spec.update(
        network=dict(type="str", required=True),
        id=dict(type="str", required=True),
        host=dict(type="str"),
        ip=dict(type="str"),
        labels=dict(type="dict"),
        publish=dict(type="list", elements="str"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    api = Api(module)
    base = "/v1/networks/%s/endpoints" % p["network"]
    have = api.call("GET", "%s/%s" % (base, p["id"]), missing_ok=True)
    view = lambda e: {k: e.get(k) for k in ("host", "ip", "labels", "publish")} if e else {}
    before = view(have)
    if p["state"] == "absent":
        if have and not module.check_mode:
            api.call("DELETE", "%s/%s" % (base, p["id"]))
        module.exit_json(changed=bool(have), diff=dict(before=before, after={}))
    try:
        publish = None if p["publish"] is None else [published(x) for x in p["publish"]]
    except ValueError:
        module.fail_json(msg="publish: %s is not HOST_PORT:PORT[/tcp|/udp]" % p["publish"])
    after = dict(before) if have else {"host": p["host"], "ip": p["ip"], "labels": {}, "publish": []}
    for k, v in (("host", p["host"]), ("ip", p["ip"]), ("labels", p["labels"]), ("publish", publish)):
        if v is not None:
            after[k] = v
    after = {k: v for k, v in after.items() if v not in (None, {}, [])}
    before_cmp = {k: v for k, v in before.items() if v not in (None, {}, [])}
    changed = after != before_cmp
    obj = have
    if changed and not module.check_mode:
        remake = not have or after.get("host") != before.get("host") or (p["ip"] is not None and p["ip"] != before.get("ip"))
        if remake:
            if not after.get("host"):
                module.fail_json(msg="endpoint %s/%s does not exist: give host to create it" % (p["network"], p["id"]))
            if have:
                api.call("DELETE", "%s/%s" % (base, p["id"]))
            body = {"id": p["id"], "host": after["host"], "labels": after.get("labels", {}), "publish": after.get("publish", [])}
            if p["ip"]:
                body["ip"] = p["ip"]
            obj = api.call("POST", base, body)
        else:
            if after.get("labels", {}) != before_cmp.get("labels", {}):
                obj = api.call("PUT", "%s/%s/labels" % (base, p["id"]), {"labels": after.get("labels", {})})
            if after.get("publish", []) != before_cmp.get("publish", []):
                obj = api.call("PUT", "%s/%s/publish" % (base, p["id"]), {"publish": after.get("publish", [])})
    module.exit_json(changed=changed, diff=dict(before=before_cmp, after=after), object=obj or after)


if __name__ == "__main__":
    main()
