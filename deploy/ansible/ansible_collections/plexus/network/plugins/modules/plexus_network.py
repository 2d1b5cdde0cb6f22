#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plexus_network
short_description: A Plexus network (overlay or underlay)
description:
  - Creates, changes or deletes a network through the Plexus controller's REST API.
  - Options left out keep their current values (or the controller's choice, such as the VNI).
options:
  name: {description: Network name (a DNS label)., type: str, required: true}
  subnet: {description: IPv4 subnet in CIDR form; required to create., type: str}
  kind: {description: overlay (tunnelled) or underlay (a physical network)., type: str, choices: [overlay, underlay], default: overlay}
  vni: {description: The overlay's VNI (chosen by the controller if left out)., type: int}
  physical_network: {description: The underlay's physical network (a host's bridge mapping)., type: str}
  vlan: {description: The underlay's VLAN (untagged if left out)., type: int}
  gateway: {description: Gateway address (the subnet's first address if left out)., type: str}
  mtu: {description: MTU of its endpoints., type: int}
  labels: {description: Labels (replace the current ones when given)., type: dict}
extends_documentation_fragment: [plexus.network.plexus, plexus.network.plexus.state]
author: Plexus developers
"""

EXAMPLES = r"""
- plexus.network.plexus_network: {name: red, subnet: 10.1.0.0/24, mtu: 1400}
- plexus.network.plexus_network: {name: v100, kind: underlay, physical_network: physnet1, vlan: 100, subnet: 10.100.0.0/24}
- plexus.network.plexus_network: {name: red, state: absent}
"""

RETURN = r"""
object: {description: The network as the controller stored it., returned: when present, type: dict}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plexus.network.plugins.module_utils.plexus import Api, api_argument_spec, ensure, given


def main():
    spec = api_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        subnet=dict(type="str"),
        kind=dict(type="str", default="overlay", choices=["overlay", "underlay"]),
        vni=dict(type="int"),
        physical_network=dict(type="str"),
        vlan=dict(type="int"),
        gateway=dict(type="str"),
        mtu=dict(type="int"),
        labels=dict(type="dict"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, required_if=[("kind", "underlay", ["physical_network"])])
    p = module.params
    want = given(module, ["name", "subnet", "gateway", "mtu", "labels"])
    kind = {"type": p["kind"]}
    kind.update(given(module, ["vni"] if p["kind"] == "overlay" else ["physical_network", "vlan"]))
    want["kind"] = kind
    api = Api(module)
    if p["state"] == "present" and "subnet" not in want and api.call("GET", "/v1/networks/" + p["name"], missing_ok=True) is None:
        module.fail_json(msg="network %s does not exist: give subnet to create it" % p["name"])
    module.exit_json(**ensure(module, api, "networks", p["name"], want))


if __name__ == "__main__":
    main()
