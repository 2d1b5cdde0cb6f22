#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plexus_policy
short_description: A Plexus policy
description:
  - Selects endpoints of a network by label and says which traffic may reach them (ingress)
    and leave them (egress), enforced statefully in every switch. Rules are as the API takes
    them (action, priority, peers, protocol, ports).
options:
  name: {description: Policy name., type: str, required: true}
  network: {description: The network it governs., type: str}
  select: {description: Label selector of the endpoints it governs (app=db)., type: str}
  ingress: {description: Ingress rules; an empty list denies all ingress., type: list, elements: dict}
  egress: {description: Egress rules; an empty list denies all egress., type: list, elements: dict}
  labels: {description: Labels (replace the current ones when given)., type: dict}
extends_documentation_fragment: [plexus.network.plexus, plexus.network.plexus.state]
author: Plexus developers
"""

EXAMPLES = r"""
- plexus.network.plexus_policy:
    name: db-only
    network: db
    select: app=db
    ingress:
      - {action: allow, peers: [{select: app=web}], protocol: tcp, ports: ["5432"]}
"""

RETURN = r"""
object: {description: The policy as the controller stored it., returned: when present, type: dict}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plexus.network.plugins.module_utils.plexus import Api, api_argument_spec, ensure, given


def main():
    spec = api_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        network=dict(type="str"),
        select=dict(type="str"),
        ingress=dict(type="list", elements="dict"),
        egress=dict(type="list", elements="dict"),
        labels=dict(type="dict"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    want = given(module, ["name", "network", "select", "labels"])
    for direction in ("ingress", "egress"):
        rules = module.params[direction]
        if rules is not None:
            want[direction] = [normalized(r) for r in rules]
    module.exit_json(**ensure(module, Api(module), "policies", module.params["name"], want))


def normalized(rule):
    """A rule as the controller stores it (its defaults written, empty lists left out), so
    that an unchanged rule compares equal."""
    r = {"action": "allow", "priority": 500, "protocol": "any"}
    r.update({k: v for k, v in rule.items() if v not in (None, [])})
    if "ports" in r:
        r["ports"] = [str(p) for p in r["ports"]]
    return r


if __name__ == "__main__":
    main()
