#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plexus_router
short_description: A Plexus router
description:
  - A router joins overlay networks into a routing domain, routed in every host's switch;
    with external, the domain's containers reach outside Plexus through their own host and
    may publish ports.
options:
  name: {description: Router name., type: str, required: true}
  networks: {description: The networks it joins (replace the current list)., type: list, elements: str}
  external: {description: Let the domain out of Plexus (source NAT by each host)., type: bool}
  labels: {description: Labels (replace the current ones when given)., type: dict}
extends_documentation_fragment: [plexus.network.plexus, plexus.network.plexus.state]
author: Plexus developers
"""

EXAMPLES = r"""
- plexus.network.plexus_router: {name: core, networks: [red, blue], external: true}
"""

RETURN = r"""
object: {description: The router as the controller stored it., returned: when present, type: dict}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plexus.network.plugins.module_utils.plexus import Api, api_argument_spec, ensure, given


def main():
    spec = api_argument_spec()
    spec.update(name=dict(type="str", required=True), networks=dict(type="list", elements="str"), external=dict(type="bool"), labels=dict(type="dict"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    want = given(module, ["name", "external", "labels"])
    if module.params["networks"] is not None:
        # The controller keeps them sorted: compare as it stores them.
        want["networks"] = sorted(set(module.params["networks"]))
    if want.get("external") is False:
        want.pop("external")  # the controller leaves a false one out
    module.exit_json(**ensure(module, Api(module), "routers", module.params["name"], want))


if __name__ == "__main__":
    main()
