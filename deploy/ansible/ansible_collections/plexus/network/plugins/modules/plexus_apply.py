#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plexus_apply
short_description: plexus apply of files
description:
  - Runs C(plexus apply) (C(plexus diff) in check mode) on files or a directory of YAML or JSON
    documents; the change is one all-or-nothing batch on the controller.
options:
  src: {description: A file or a directory of documents., type: path, required: true}
  prune: {description: Delete what an earlier apply made that the files no longer name., type: bool, default: false}
  plexus: {description: The plexus binary., type: path, default: plexus}
extends_documentation_fragment: [plexus.network.plexus]
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
author: Plexus developers
"""

EXAMPLES = r"""
- plexus.network.plexus_apply: {src: /etc/plexus/topology.yaml, prune: true}
"""

RETURN = r"""
plan: {description: What changed (or would change), one line per change., returned: always, type: list, elements: str}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plexus.network.plugins.module_utils.plexus import api_argument_spec


def main():
    spec = api_argument_spec()
    spec.pop("state")
    spec.update(src=dict(type="path", required=True), prune=dict(type="bool", default=False), plexus=dict(type="path", default="plexus"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    env = dict(os.environ, PLEXUS_API=p["api_url"], PLEXUS_TOKEN=p["token"])
    if p["ca"]:
        env["PLEXUS_CA"] = p["ca"]
    cmd = [p["plexus"], "diff" if module.check_mode else "apply", "-f", p["src"]] + (["--prune"] if p["prune"] else [])
    rc, out, err = module.run_command(cmd, environ_update=env)
    if rc != 0:
        module.fail_json(msg=(err or out).strip(), rc=rc)
    plan = [l for l in out.splitlines() if l and l[0] in "+~-"]
    module.exit_json(changed=bool(plan), plan=plan)


if __name__ == "__main__":
    main()
